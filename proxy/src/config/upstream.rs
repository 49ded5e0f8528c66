//! An upstream's section of the config (the monolith's `legacy:` and each of `services:`):
//! address, TLS and timeouts, validated with located errors.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strangler_rules::Reporter;

use super::Upstream;
use super::values::{opt_duration, positive_duration};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[schemars(with = "String")]
    address: Spanned<String>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    sni: Option<String>,
    #[serde(default)]
    verify_cert: Option<bool>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    total_timeout: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    idle_timeout: Option<Spanned<String>>,
}

pub(super) fn upstream(
    name: &str,
    raw: &Spanned<RawUpstream>,
    field: &str,
    r: &mut Reporter,
) -> Option<Upstream> {
    let u = &raw.value;
    let address = match u.address.value.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Some(a),
        _ => {
            r.report(
                (&u.address).into(),
                format!("{field}.address"),
                format!(
                    "`{}` is not a reachable host:port (it is resolved once, at start)",
                    u.address.value
                ),
            );
            None
        }
    };
    let host = u
        .address
        .value
        .rsplit_once(':')
        .map_or(u.address.value.as_str(), |(h, _)| h);
    // 3 s outlives one lost SYN (Linux retransmits it after 1 s, and again after 3 s).
    let connect_timeout = positive_duration(
        u.connect_timeout.as_ref(),
        &format!("{field}.connect_timeout"),
        Duration::from_secs(3),
        r,
    );
    let read_timeout = opt_duration(
        u.read_timeout.as_ref(),
        &format!("{field}.read_timeout"),
        Duration::from_secs(30),
        r,
    );
    let total_timeout = positive_duration(
        u.total_timeout.as_ref(),
        &format!("{field}.total_timeout"),
        Duration::from_secs(10),
        r,
    );
    let idle_timeout = opt_duration(
        u.idle_timeout.as_ref(),
        &format!("{field}.idle_timeout"),
        Duration::from_secs(60),
        r,
    );
    Some(Upstream {
        name: name.to_string(),
        address: address?,
        tls: u.tls,
        sni: u
            .sni
            .clone()
            .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string()),
        verify_cert: u.verify_cert.unwrap_or(true),
        connect_timeout,
        read_timeout,
        total_timeout,
        idle_timeout,
    })
}

/// The `services:` section: each new service's upstream, by name (`legacy` is the monolith's).
pub(super) fn services(
    raw: &BTreeMap<String, Spanned<RawUpstream>>,
    r: &mut Reporter,
) -> BTreeMap<String, Upstream> {
    let mut services = BTreeMap::new();
    for (name, up) in raw {
        let field = format!("services.{name}");
        if name == strangler_rules::LEGACY {
            r.report(
                up.into(),
                field,
                "`legacy` is reserved for the monolith; name the service differently",
            );
            continue;
        }
        if !strangler_rules::is_valid_name(name) {
            r.report(up.into(), field.clone(), "service names use only letters, digits, '-', '_' and '.' (they become metric labels)");
        }
        if let Some(u) = upstream(name, up, &field, r) {
            services.insert(name.clone(), u);
        }
    }
    services
}

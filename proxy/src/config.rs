//! The proxy's config file (`strangler.yaml`): strict raw structs, then a validated [`Config`]
//! with resolved addresses, durations and sizes. Every problem is reported at once with its
//! location, like rule files. Rules themselves are loaded by `reload`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strangler_rules::{Diagnostics, Loc, Reporter};

mod events;
mod listen;
mod server;
mod shadow;
mod upstream;
mod values;

pub use listen::TlsListen;
pub use shadow::Retention;

use upstream::{RawUpstream, upstream};

pub use values::{parse_duration, parse_size};
use values::{positive_duration, whole_seconds};

/// The JSON Schema of `strangler.yaml`, from the types it is read into
/// (`schema/strangler.schema.json`; a test keeps the committed copy current).
pub fn json_schema() -> serde_json::Value {
    let mut s = schemars::schema_for!(RawConfig);
    s.insert("title".into(), "strangler.yaml".into());
    serde_json::to_value(s).expect("a schema is JSON")
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[schemars(with = "Vec<listen::RawListen>")]
    listen: Spanned<Vec<Spanned<listen::RawListen>>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    admin: Option<Spanned<String>>,
    /// The environment variable holding the admin API's bearer token.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    admin_token_env: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<usize>")]
    workers: Option<Spanned<usize>>,
    #[schemars(with = "RawUpstream")]
    legacy: Spanned<RawUpstream>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawUpstream>")]
    services: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    store: Option<Spanned<String>>,
    #[schemars(with = "String")]
    rules: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    body_buffer_limit: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    client_header_timeout: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    client_body_timeout: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    keepalive_timeout: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    tunnel_idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    log: Option<server::RawLog>,
    #[serde(default)]
    server: Option<server::RawServer>,
    #[serde(default)]
    kinesis: Option<events::RawKinesis>,
    #[serde(default)]
    events: Option<events::RawEvents>,
    #[serde(default)]
    shadow: Option<shadow::RawShadow>,
    /// Consumers whose progress the console shows: a name → the URL of its Prometheus metrics
    /// (`strangler-consumer`'s, served by the application).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    consumers: BTreeMap<String, Spanned<String>>,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// Every address the proxy listens on, plain or TLS.
    pub listen: Vec<SocketAddr>,
    /// The listeners among them that end TLS.
    pub tls: Vec<TlsListen>,
    pub admin: SocketAddr,
    /// The environment variable holding the admin API's bearer token (mutating endpoints want
    /// it); without one the admin listener must be on loopback.
    pub admin_token_env: Option<String>,
    pub workers: usize,
    pub legacy: Upstream,
    pub services: BTreeMap<String, Upstream>,
    pub store_url: String,
    /// A rule file or a folder of them, resolved against the config file's folder.
    pub rules: PathBuf,
    pub body_buffer_limit: usize,
    /// A request header must arrive whole within this (from the connection's start for its
    /// first request, from the first byte for later ones); else the connection is closed.
    pub client_header_timeout: Duration,
    /// Longest wait for the next piece of a request body; then 408.
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive client connection is kept (whole seconds, at least 1).
    pub keepalive_timeout: Duration,
    /// An upgraded connection (a WebSocket, say) with no byte either way for this long is
    /// closed.
    pub tunnel_idle_timeout: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub kinesis_region: Option<String>,
    /// Overrides `AWS_ENDPOINT_URL_KINESIS` and the regional endpoint.
    pub kinesis_endpoint: Option<String>,
    pub relay: strangler_events::RelayConfig,
    /// Most bytes of `durability: async` events waiting for their outbox write; past it an
    /// event is counted as failed (`outbox_full`) instead of piling up.
    pub async_buffer: usize,
    /// Consumers whose progress the console shows: name → the URL of their metrics.
    pub consumers: BTreeMap<String, String>,
    /// Environment variable holding the salt for `mode: hash` redaction.
    pub redact_salt_env: String,
    /// How many stored mismatches are kept, and for how long.
    pub mismatch_retention: Retention,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One upstream: the monolith or a new service. Addresses are resolved once, at start.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub address: SocketAddr,
    pub tls: bool,
    pub sni: String,
    pub verify_cert: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Connection set-up including the TLS handshake.
    pub total_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut r = Reporter::new(path.display().to_string());
            r.report(Loc::default(), "", format!("cannot read: {e}"));
            r.finish()
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let mut r = Reporter::new(path.display().to_string());
        let raw = match serde_saphyr::from_str::<RawConfig>(text) {
            Ok(raw) => raw,
            Err(e) => {
                r.yaml_error(&e);
                return Err(r.finish());
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let cfg = validate(raw, path, base, &mut r);
        r.finish()
            .into_result(())
            .map(|()| cfg.expect("no errors means a config"))
    }

    /// Names of the new services, for the rules' cross-check.
    pub fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }
}

fn validate(raw: RawConfig, path: &Path, base: &Path, r: &mut Reporter) -> Option<Config> {
    let (listen, tls) = listen::validate(&raw.listen, base, r);
    let admin = match &raw.admin {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        Some(a) => a.value.parse::<SocketAddr>().ok().or_else(|| {
            r.report(
                a.into(),
                "admin",
                format!("`{}` is not an IP:port address", a.value),
            );
            None
        }),
    };
    let workers = match &raw.workers {
        Some(w) if w.value == 0 => {
            r.report(w.into(), "workers", "workers must be at least 1");
            1
        }
        Some(w) => w.value,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let legacy = upstream(strangler_rules::LEGACY, &raw.legacy, "legacy", r);
    let services = upstream::services(&raw.services, r);
    let store = raw
        .store
        .as_ref()
        .map_or_else(|| "sqlite://strangler.db".to_string(), |s| s.value.clone());
    // A relative SQLite path is relative to the config file, like `rules`.
    let store = match store.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => store,
    };
    if let Some(s) = &raw.store
        && !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| s.value.starts_with(p))
    {
        r.report(
            s.into(),
            "store",
            "store must be a `sqlite://…` or `postgres://…` URL",
        );
    }
    let rules = base.join(&raw.rules.value);
    if !rules.exists() {
        r.report(
            (&raw.rules).into(),
            "rules",
            format!("{} does not exist", rules.display()),
        );
    }
    let body_buffer_limit = match &raw.body_buffer_limit {
        None => 1 << 20,
        Some(s) => parse_size(&s.value).unwrap_or_else(|e| {
            r.report(s.into(), "body_buffer_limit", e.to_string());
            0
        }),
    };
    let client_header_timeout = positive_duration(
        raw.client_header_timeout.as_ref(),
        "client_header_timeout",
        Duration::from_secs(10),
        r,
    );
    let client_body_timeout = positive_duration(
        raw.client_body_timeout.as_ref(),
        "client_body_timeout",
        Duration::from_secs(60),
        r,
    );
    let tunnel_idle_timeout = positive_duration(
        raw.tunnel_idle_timeout.as_ref(),
        "tunnel_idle_timeout",
        Duration::from_secs(3600),
        r,
    );
    // pingora keeps the keep-alive timeout in whole seconds (0 would mean "for ever").
    let keepalive_timeout = whole_seconds(
        raw.keepalive_timeout.as_ref(),
        "keepalive_timeout",
        Duration::from_secs(75),
        r,
    );
    let (log_format, log_level) = server::log(raw.log.as_ref(), r);
    let server = server::validate(raw.server, path, r);
    let events = events::validate(raw.kinesis, raw.events, r);
    let mismatch_retention = shadow::retention(raw.shadow, r);
    let consumers = consumers(&raw.consumers, r);
    Some(Config {
        consumers,
        mismatch_retention,
        kinesis_region: events.region,
        kinesis_endpoint: events.endpoint,
        relay: events.relay,
        async_buffer: events.async_buffer,
        redact_salt_env: events.redact_salt_env,
        file: path.to_path_buf(),
        listen,
        tls,
        admin: admin?,
        admin_token_env: raw.admin_token_env.map(|e| e.value),
        workers,
        legacy: legacy?,
        services,
        store_url: store,
        rules,
        body_buffer_limit,
        client_header_timeout,
        client_body_timeout,
        keepalive_timeout,
        tunnel_idle_timeout,
        log_format,
        log_level,
        pid_file: server.pid_file,
        upgrade_sock: server.upgrade_sock,
        grace_period: server.grace_period,
        shutdown_timeout: server.shutdown_timeout,
    })
}

/// Each consumer's metrics URL: `http://` or `https://` with a host.
fn consumers(
    raw: &BTreeMap<String, Spanned<String>>,
    r: &mut Reporter,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, url) in raw {
        let ok = url
            .value
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if ok {
            out.insert(name.clone(), url.value.clone());
        } else {
            r.report(
                url.into(),
                "consumers",
                format!(
                    "`{}` is not an http:// or https:// URL (the consumer's /metrics, e.g. http://127.0.0.1:9101/metrics)",
                    url.value
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema/*.schema.json` are what the types say now; `UPDATE_SCHEMAS=1 cargo test -p
    /// strangler schemas` writes them again.
    #[test]
    fn schemas_in_the_repository_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema");
        for (file, schema) in [
            ("strangler.schema.json", json_schema()),
            ("rules.schema.json", strangler_rules::raw::json_schema()),
        ] {
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            let path = dir.join(file);
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "{} is stale: run `UPDATE_SCHEMAS=1 cargo test -p strangler schemas`",
                path.display()
            );
        }
    }

    #[test]
    fn config_errors_are_located() {
        let text = "listen: [\"nope\"]\nlegacy: { address: \"127.0.0.1:1\" }\nservices:\n  legacy: { address: \"127.0.0.1:2\" }\nrules: /definitely/missing\nlog: { format: xml }\n";
        let err = Config::parse(Path::new("s.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.yaml:1:10: listen[0]: `nope` is not an IP:port address"),
            "{err}"
        );
        assert!(
            err.contains("services.legacy: `legacy` is reserved"),
            "{err}"
        );
        assert!(
            err.contains("s.yaml:5:8: rules: /definitely/missing does not exist"),
            "{err}"
        );
        assert!(
            err.contains("log.format: unknown log format `xml`"),
            "{err}"
        );
    }

    #[test]
    fn consumers_are_metrics_urls() {
        let base = format!(
            "listen: [\"127.0.0.1:0\"]\nlegacy: {{ address: \"127.0.0.1:1\" }}\nrules: {}\n",
            std::env::temp_dir().display()
        );
        let ok = format!("{base}consumers: {{ projector: \"http://127.0.0.1:9101/metrics\" }}\n");
        let cfg = Config::parse(Path::new("s.yaml"), &ok).unwrap();
        assert_eq!(cfg.consumers["projector"], "http://127.0.0.1:9101/metrics");
        let bad = format!("{base}consumers:\n  projector: 127.0.0.1:9101\n");
        let err = Config::parse(Path::new("s.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "s.yaml:5:14: consumers: `127.0.0.1:9101` is not an http:// or https:// URL"
            ),
            "{err}"
        );
    }

    #[test]
    fn client_timeouts() {
        let base = format!(
            "listen: [\"127.0.0.1:0\"]\nlegacy: {{ address: \"127.0.0.1:1\" }}\nrules: {}\n",
            std::env::temp_dir().display()
        );
        let cfg = Config::parse(Path::new("s.yaml"), &base).unwrap();
        assert_eq!(
            (
                cfg.client_header_timeout,
                cfg.client_body_timeout,
                cfg.keepalive_timeout
            ),
            (
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(75)
            )
        );
        let bad = format!("{base}keepalive_timeout: 500ms\nclient_body_timeout: 0s\n");
        let err = Config::parse(Path::new("s.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keepalive_timeout: keepalive_timeout is whole seconds"),
            "{err}"
        );
        assert!(
            err.contains("client_body_timeout: client_body_timeout must be more than 0"),
            "{err}"
        );
    }

    #[test]
    fn aggregation_settings() {
        let base = format!(
            "listen: [\"127.0.0.1:0\"]\nlegacy: {{ address: \"127.0.0.1:1\" }}\nrules: {}\n",
            std::env::temp_dir().display()
        );
        let ok =
            format!("{base}events: {{ aggregate: [orders, \"*\"], aggregate_max_bytes: 64KiB }}\n");
        let cfg = Config::parse(Path::new("s.yaml"), &ok).unwrap();
        assert_eq!(cfg.relay.aggregate, ["orders", "*"]);
        assert_eq!(cfg.relay.aggregate_max_bytes, 64 << 10);
        assert!(cfg.relay.aggregates("anything"));
        let default = Config::parse(Path::new("s.yaml"), &base).unwrap();
        assert!(!default.relay.aggregates("orders"));
        let bad = format!("{base}events:\n  aggregate_max_bytes: 2MiB\n");
        let err = Config::parse(Path::new("s.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.yaml:5:24: events.aggregate_max_bytes: aggregate_max_bytes must be between 1KiB and 1000KiB"),
            "{err}"
        );
    }

    #[test]
    fn memory_and_backoff_settings() {
        let base = format!(
            "listen: [\"127.0.0.1:0\"]\nlegacy: {{ address: \"127.0.0.1:1\" }}\nrules: {}\n",
            std::env::temp_dir().display()
        );
        let default = Config::parse(Path::new("s.yaml"), &base).unwrap();
        assert_eq!(default.relay.memory, 64 << 20);
        assert_eq!(default.relay.max_backoff, Duration::from_secs(30));
        let ok = format!("{base}events: {{ memory: 256MiB, max_backoff: 5s }}\n");
        let cfg = Config::parse(Path::new("s.yaml"), &ok).unwrap();
        assert_eq!(cfg.relay.memory, 256 << 20);
        assert_eq!(cfg.relay.max_backoff, Duration::from_secs(5));
        let bad = format!("{base}events:\n  memory: 1MiB\n");
        let err = Config::parse(Path::new("s.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.yaml:5:11: events.memory: memory must be at least 8MiB"),
            "{err}"
        );
    }
}

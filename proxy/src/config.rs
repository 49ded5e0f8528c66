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

mod listen;
mod shadow;
mod upstream;
mod values;

pub use listen::TlsListen;
pub use shadow::Retention;

use upstream::{RawUpstream, upstream};

use values::{opt_duration, opt_size, positive_duration, whole_seconds};
pub use values::{parse_duration, parse_size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<Vec<Spanned<listen::RawListen>>>,
    #[serde(default)]
    admin: Option<Spanned<String>>,
    /// The environment variable holding the admin API's bearer token.
    #[serde(default)]
    admin_token_env: Option<Spanned<String>>,
    #[serde(default)]
    workers: Option<Spanned<usize>>,
    legacy: Spanned<RawUpstream>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    store: Option<Spanned<String>>,
    rules: Spanned<String>,
    #[serde(default)]
    body_buffer_limit: Option<Spanned<String>>,
    #[serde(default)]
    client_header_timeout: Option<Spanned<String>>,
    #[serde(default)]
    client_body_timeout: Option<Spanned<String>>,
    #[serde(default)]
    keepalive_timeout: Option<Spanned<String>>,
    #[serde(default)]
    tunnel_idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    log: Option<RawLog>,
    #[serde(default)]
    server: Option<RawServer>,
    #[serde(default)]
    kinesis: Option<RawKinesis>,
    #[serde(default)]
    events: Option<RawEvents>,
    #[serde(default)]
    shadow: Option<shadow::RawShadow>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKinesis {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    #[serde(default)]
    max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    max_age: Option<Spanned<String>>,
    #[serde(default)]
    keep_published: Option<Spanned<String>>,
    #[serde(default)]
    redact_salt_env: Option<String>,
    #[serde(default)]
    aggregate: Vec<String>,
    #[serde(default)]
    aggregate_max_bytes: Option<Spanned<String>>,
    #[serde(default)]
    memory: Option<Spanned<String>>,
    #[serde(default)]
    async_buffer: Option<Spanned<String>>,
    #[serde(default)]
    max_backoff: Option<Spanned<String>>,
    #[serde(default)]
    shard_records_per_second: Option<Spanned<u32>>,
    #[serde(default)]
    shard_bytes_per_second: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: Option<Spanned<String>>,
    #[serde(default)]
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    pid_file: Option<String>,
    #[serde(default)]
    upgrade_sock: Option<String>,
    #[serde(default)]
    grace_period: Option<Spanned<String>>,
    #[serde(default)]
    shutdown_timeout: Option<Spanned<String>>,
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
    let mut services = BTreeMap::new();
    for (name, up) in &raw.services {
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
            r.report(s.into(), "body_buffer_limit", e);
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
    let log_format = match raw.log.as_ref().and_then(|l| l.format.as_ref()) {
        None => LogFormat::Text,
        Some(f) if f.value == "text" => LogFormat::Text,
        Some(f) if f.value == "json" => LogFormat::Json,
        Some(f) => {
            r.report(
                f.into(),
                "log.format",
                format!("unknown log format `{}` (expected text or json)", f.value),
            );
            LogFormat::Text
        }
    };
    let log_level = raw
        .log
        .as_ref()
        .and_then(|l| l.level.clone())
        .unwrap_or_else(|| "info".into());
    let server = raw.server.unwrap_or_default();
    // pingora's defaults are fixed names in /tmp (two instances collide): key them to the config.
    let stem = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let tag = format!(
        "{:016x}",
        strangler_rules::sticky::hash64(stem.display().to_string().as_bytes())
    );
    let pid_file = server.pid_file.unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("strangler-{tag}.pid"))
            .display()
            .to_string()
    });
    let upgrade_sock = server.upgrade_sock.unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("strangler-{tag}.sock"))
            .display()
            .to_string()
    });
    let grace_period = opt_duration(
        server.grace_period.as_ref(),
        "server.grace_period",
        Duration::from_secs(5),
        r,
    );
    let shutdown_timeout = opt_duration(
        server.shutdown_timeout.as_ref(),
        "server.shutdown_timeout",
        Duration::from_secs(10),
        r,
    );
    let kinesis = raw.kinesis.unwrap_or_default();
    if let Some(e) = &kinesis.endpoint
        && !(e.value.starts_with("http://") || e.value.starts_with("https://"))
    {
        r.report(
            e.into(),
            "kinesis.endpoint",
            "the endpoint is a URL such as http://127.0.0.1:4567",
        );
    }
    let ev = raw.events.unwrap_or_default();
    let mut relay = strangler_events::RelayConfig::default();
    if let Some(m) = &ev.max_attempts {
        if m.value == 0 {
            r.report(
                m.into(),
                "events.max_attempts",
                "max_attempts must be at least 1",
            );
        }
        relay.max_attempts = m.value.max(1);
    }
    relay.max_age = opt_duration(ev.max_age.as_ref(), "events.max_age", relay.max_age, r);
    let keep = opt_duration(
        ev.keep_published.as_ref(),
        "events.keep_published",
        Duration::ZERO,
        r,
    );
    relay.keep_published = (!keep.is_zero()).then_some(keep);
    relay.aggregate = ev.aggregate;
    relay.aggregate_max_bytes = opt_size(
        ev.aggregate_max_bytes.as_ref(),
        "events.aggregate_max_bytes",
        relay.aggregate_max_bytes,
        1 << 10..=1000 << 10,
        "aggregate_max_bytes must be between 1KiB and 1000KiB (a Kinesis record holds at most 1 MiB)",
        r,
    );
    // Per-shard write limits: Kinesis's by default; 0 turns one off.
    if let Some(n) = &ev.shard_records_per_second {
        relay.shard_limits.records_per_second = n.value;
    }
    relay.shard_limits.bytes_per_second = opt_size(
        ev.shard_bytes_per_second.as_ref(),
        "events.shard_bytes_per_second",
        relay.shard_limits.bytes_per_second as usize,
        0..=usize::MAX,
        "shard_bytes_per_second is a size such as 1MiB (0: no bytes limit)",
        r,
    ) as u64;
    relay.memory = opt_size(
        ev.memory.as_ref(),
        "events.memory",
        relay.memory,
        8 << 20..=usize::MAX,
        "memory must be at least 8MiB (the relay's working set, the store's caches and the hand-off share it)",
        r,
    );
    let async_buffer = opt_size(
        ev.async_buffer.as_ref(),
        "events.async_buffer",
        relay.memory / 4,
        1 << 10..=usize::MAX,
        "async_buffer must be at least 1KiB",
        r,
    );
    relay.max_backoff = opt_duration(
        ev.max_backoff.as_ref(),
        "events.max_backoff",
        relay.max_backoff,
        r,
    );
    let mismatch_retention = shadow::retention(raw.shadow, r);
    Some(Config {
        mismatch_retention,
        kinesis_region: kinesis.region,
        kinesis_endpoint: kinesis.endpoint.map(|e| e.value),
        relay,
        async_buffer,
        redact_salt_env: ev
            .redact_salt_env
            .unwrap_or_else(|| "STRANGLER_REDACT_SALT".into()),
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
        pid_file,
        upgrade_sock,
        grace_period,
        shutdown_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

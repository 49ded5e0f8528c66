//! The `log:` and `server:` sections: log format and level, pid file, upgrade socket and the
//! graceful-shutdown timings.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strangler_rules::Reporter;

use super::LogFormat;
use super::values::opt_duration;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    format: Option<Spanned<String>>,
    #[serde(default)]
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default)]
    pid_file: Option<String>,
    #[serde(default)]
    upgrade_sock: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    grace_period: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    shutdown_timeout: Option<Spanned<String>>,
}

/// The log format and level (`info` by default).
pub(super) fn log(raw: Option<&RawLog>, r: &mut Reporter) -> (LogFormat, String) {
    let log_format = match raw.and_then(|l| l.format.as_ref()) {
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
        .and_then(|l| l.level.clone())
        .unwrap_or_else(|| "info".into());
    (log_format, log_level)
}

pub(super) struct Server {
    pub(super) pid_file: String,
    pub(super) upgrade_sock: String,
    pub(super) grace_period: Duration,
    pub(super) shutdown_timeout: Duration,
}

pub(super) fn validate(raw: Option<RawServer>, path: &Path, r: &mut Reporter) -> Server {
    let server = raw.unwrap_or_default();
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
    Server {
        pid_file,
        upgrade_sock,
        grace_period,
        shutdown_timeout,
    }
}

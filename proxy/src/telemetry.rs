//! Logging set-up: human-readable or JSON lines via tracing, with pingora's own `log` output
//! bridged in (pingora logs nothing without a `log` backend). Access lines use target `access`,
//! so `RUST_LOG=info,access=off` silences them alone.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the config's level.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `init` also installs the log → tracing bridge (tracing-log feature).
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

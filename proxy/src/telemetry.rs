//! Logging set-up: human-readable or JSON lines via tracing, with pingora's own `log` output
//! bridged in (pingora logs nothing without a `log` backend). Access lines use target `access`,
//! so `RUST_LOG=info,access=off` silences them alone. pingora logs a client's fault while it
//! reads the request header (a header that never came, a client closing while it sent one) as
//! `ERROR Fail to proxy: Downstream …`, and a TLS handshake a client failed (an old protocol
//! version, no common cipher, a scanner) as `ERROR Downstream handshake error …`, with no hook to
//! stop either (`suppress_error_log` covers only requests that reached the proxy's phases); the
//! bridge logs those at DEBUG (the header faults are counted in
//! `strangler_downstream_errors_total`; failed handshakes are not counted, pingora has no hook
//! for them): an operator's ERROR means the proxy or an upstream failed.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber and the log bridge. `RUST_LOG`, when set, wins over the
/// config's level.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `set_global_default`, not `init` (which installs tracing-log's own bridge): the bridge
    // is ours, below.
    let installed = match format {
        LogFormat::Text => {
            tracing::subscriber::set_global_default(builder.with_ansi(false).finish())
        }
        LogFormat::Json => {
            tracing::subscriber::set_global_default(builder.json().flatten_event(true).finish())
        }
    };
    if installed.is_ok()
        && log::set_boxed_logger(Box::new(Bridge(tracing_log::LogTracer::new()))).is_ok()
    {
        log::set_max_level(tracing_log::AsLog::as_log(
            &tracing::level_filters::LevelFilter::current(),
        ));
    }
}

/// The log → tracing bridge, with pingora's client faults at DEBUG.
struct Bridge(tracing_log::LogTracer);

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::Log::enabled(&self.0, metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error
            && (record.target().starts_with("pingora_proxy")
                || record
                    .target()
                    .starts_with("pingora_core::services::listening"))
        {
            let text = record.args().to_string();
            if is_client_fault(&text) {
                let mut lowered = log::Record::builder();
                lowered
                    .level(log::Level::Debug)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line());
                let args = format_args!("{text}");
                let lowered = lowered.args(args).build();
                if log::Log::enabled(&self.0, lowered.metadata()) {
                    log::Log::log(&self.0, &lowered);
                }
                return;
            }
        }
        log::Log::log(&self.0, record);
    }

    fn flush(&self) {
        log::Log::flush(&self.0);
    }
}

/// pingora's words for a request that failed on the client's side.
fn is_client_fault(text: &str) -> bool {
    text.starts_with("Fail to proxy: Downstream") || text.starts_with("Downstream handshake error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_are_told_from_the_rest() {
        assert!(is_client_fault(
            "Fail to proxy: Downstream ReadTimedout context: header, downstream session type: HTTP/1.1"
        ));
        assert!(is_client_fault(
            "Downstream handshake error from 127.0.0.1:48740:  TLSHandshakeFailure context: TLS accept() failed"
        ));
        assert!(!is_client_fault(
            "Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1"
        ));
    }
}

//! Logging: a tracing subscriber in JSON or text, which also receives Pingora's `log` records.
//!
//! Targets: `portcullis::access` (one line per request), `portcullis::audit` (security events),
//! everything else for operations. Nothing logged carries a secret: tokens, passwords and keys
//! are wrapped in `Secret` or never passed to a log macro.
//!
//! Pingora's records arrive under the target `pingora` with their module in `module`, ranked
//! for an operator: what happens in normal traffic (a client that hangs up or sends garbage, a
//! TLS handshake that a TCP health check abandons, an idle upstream connection that cannot be
//! reused, a health check's own report, which our `upstream peer is down/up` lines replace) is
//! not an ERROR; a failure of the server itself stays one. Source paths are never logged.

use crate::config::{LogFormat, Logging};
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(logging: &Logging) {
    let default = format!("warn,portcullis={}", logging.level);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_target(true);
    let result = match logging.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // A second init (tests, demo after serve) keeps the first subscriber and bridge.
    if result.is_ok() && log::set_boxed_logger(Box::new(PingoraLog)).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Pingora's `log` records, ranked and passed on to tracing.
struct PingoraLog;

/// How a Pingora record is ranked: the level it is logged at, or not at all.
fn rank(module: &str, level: log::Level) -> Option<tracing::Level> {
    use tracing::Level;
    let routine = [
        // Client connections: resets, bad requests, TLS handshakes abandoned by TCP probes.
        "pingora_core::protocols",
        "pingora_core::listeners",
        "pingora_core::apps",
        // Per-request proxy failures: the access line already names them.
        "pingora_proxy",
        // Upstream connection pool: a pooled connection that the upstream closed.
        "pingora_core::connectors",
    ];
    if module.starts_with("pingora_load_balancing") {
        // Our own lines report each peer going down and coming back.
        return (level <= log::Level::Error).then_some(Level::DEBUG);
    }
    Some(match level {
        log::Level::Error if routine.iter().any(|r| module.starts_with(r)) => Level::WARN,
        log::Level::Error => Level::ERROR,
        log::Level::Warn => Level::WARN,
        log::Level::Info => Level::INFO,
        log::Level::Debug => Level::DEBUG,
        log::Level::Trace => Level::TRACE,
    })
}

impl log::Log for PingoraLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        let module = record.target();
        let message = record.args();
        match rank(module, record.level()) {
            Some(tracing::Level::ERROR) => {
                tracing::error!(target: "pingora", module, "{message}")
            }
            Some(tracing::Level::WARN) => tracing::warn!(target: "pingora", module, "{message}"),
            Some(tracing::Level::INFO) => tracing::info!(target: "pingora", module, "{message}"),
            Some(_) => tracing::debug!(target: "pingora", module, "{message}"),
            None => {}
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn routine_pingora_errors_rank_below_error() {
        let e = log::Level::Error;
        assert_eq!(rank("pingora_proxy::proxy_h1", e), Some(Level::WARN));
        assert_eq!(
            rank("pingora_core::protocols::tls::server", e),
            Some(Level::WARN)
        );
        assert_eq!(rank("pingora_core::connectors::http", e), Some(Level::WARN));
        assert_eq!(
            rank("pingora_load_balancing::health_check", e),
            Some(Level::DEBUG)
        );
        assert_eq!(rank("pingora_core::server", e), Some(Level::ERROR));
        assert_eq!(
            rank("pingora_core::server", log::Level::Warn),
            Some(Level::WARN)
        );
    }
}

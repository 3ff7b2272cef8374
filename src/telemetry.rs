//! Logging: a tracing subscriber in JSON or text, which also receives Pingora's `log` records.
//!
//! Targets: `portcullis::access` (one line per request), `portcullis::audit` (security events),
//! everything else for operations. Nothing logged carries a secret: tokens, passwords and keys
//! are wrapped in `Secret` or never passed to a log macro.

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
    // A second init (tests, demo after serve) keeps the first subscriber.
    let _ = result;
}

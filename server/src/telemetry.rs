//! Logging: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG`.
//!
//! Nothing secret or private is logged at any level: the crates that would log what
//! clients send (request and frame bodies, CONNECT payloads with client keys) or the
//! Redis traffic are held at `info`, whatever `RUST_LOG` asks for, and socketioxide is
//! built without its tracing.

use tracing_log::AsLog;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Crates whose debug and trace lines carry what clients or Redis send.
const QUIET_BELOW_INFO: [&str; 9] = [
    "engineioxide",
    "socketioxide",
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "redis",
    "rustls",
];

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let asked = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let most = asked.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let caps = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(QUIET_BELOW_INFO.into_iter().map(|target| (target, LevelFilter::INFO)));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    // A second init (tests start several apps) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(lines.with_filter(asked).with_filter(caps)).try_init();
    // The init lets every `log` record through to `tracing`, which then drops it: each of
    // tungstenite's per-frame trace lines cost 2 % of a delivery's CPU that way. `log`'s
    // own level check is one atomic load.
    tracing_log::log::set_max_level(most.as_log());
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_log::log;

    #[test]
    fn log_records_below_the_asked_level_stop_before_the_bridge() {
        init(LogFormat::Text);
        let asked = EnvFilter::try_from_default_env().ok().and_then(|filter| filter.max_level_hint());
        let expected = asked.unwrap_or(LevelFilter::INFO).as_log();
        assert_eq!(log::max_level(), expected);
    }
}

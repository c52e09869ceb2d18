//! Logging: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG`.
//!
//! Nothing secret or private is logged at any level: the crates that would log what
//! clients send (request and frame bodies, CONNECT payloads with client keys) or the
//! Redis traffic are held at `info`, whatever `RUST_LOG` asks for, and socketioxide is
//! built without its tracing.

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
}

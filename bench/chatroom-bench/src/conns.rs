//! The `conns` scenario: hold many idle connections and report failures and the
//! servers' memory per connection.
//!
//! One loopback source address has about 28,000 ephemeral ports, so connections are
//! spread over 127.0.0.2, 127.0.0.3, …; one process has a limited number of file
//! descriptors, so past `--per-process` connections the tool runs copies of itself.

use crate::link::Link;
use crate::procstat;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;

/// Connections per loopback source address.
const PER_SOURCE: usize = 20_000;
/// What a copy of the tool prints once all its connections are open.
const READY: &str = "ready";
/// Handshakes in flight at once.
const CONNECTING_AT_ONCE: usize = 256;

/// `conns`' options.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnsArgs {
    /// A server's base URL (repeat it: connections are spread over the URLs in turn).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// How long to hold them once all are open.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// A server process whose memory to measure (repeat it for several nodes).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Connections one process of this tool holds; more run in copies of it.
    #[arg(long, default_value_t = 15_000)]
    pub per_process: usize,
    /// The first source address index to use (127.0.0.N); set by the tool for its copies.
    #[arg(long, default_value_t = 2, hide = true)]
    pub first_source: u8,
    /// Set by the tool for its copies: say when all connections are open.
    #[arg(long, hide = true)]
    pub copy: bool,
}

/// What one `conns` run measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConnsReport {
    pub scenario: String,
    pub asked: usize,
    pub connected: usize,
    pub failures: usize,
    pub dropped_while_held: usize,
    pub hold_secs: u64,
    pub server_rss_before_kib: u64,
    pub server_rss_after_kib: u64,
    pub kib_per_connection: f64,
    pub first_error: Option<String>,
}

impl ConnsReport {
    /// Every connection opened and held.
    pub fn clean(&self) -> bool {
        self.failures == 0 && self.dropped_while_held == 0 && self.connected == self.asked
    }

    /// A table for people.
    pub fn table(&self) -> String {
        format!(
            "conns: {} asked, {} connected, {} failed, {} dropped while held for {} s\n\
             server RSS {} KiB before, {} KiB after: {:.2} KiB per connection{}",
            self.asked,
            self.connected,
            self.failures,
            self.dropped_while_held,
            self.hold_secs,
            self.server_rss_before_kib,
            self.server_rss_after_kib,
            self.kib_per_connection,
            self.first_error.as_deref().map(|e| format!("\nfirst error: {e}")).unwrap_or_default(),
        )
    }
}

/// Runs the scenario in this process, or in copies of it past `--per-process`.
pub async fn run(args: &ConnsArgs) -> anyhow::Result<ConnsReport> {
    let before = procstat::total_rss_kib(&args.server_pids);
    let mut report = if args.connections > args.per_process { in_copies(args).await? } else { hold(args).await? };
    report.server_rss_before_kib = before;
    report.kib_per_connection =
        report.server_rss_after_kib.saturating_sub(before) as f64 / report.connected.max(1) as f64;
    Ok(report)
}

/// Opens and holds `args.connections` here; measures the servers while all are held.
async fn hold(args: &ConnsArgs) -> anyhow::Result<ConnsReport> {
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let hold = Duration::from_secs(args.hold_secs);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(args.connections.max(1));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let url = args.urls[index % args.urls.len()].clone();
        let source = Ipv4Addr::new(
            127,
            0,
            0,
            args.first_source.saturating_add(u8::try_from(index / PER_SOURCE).unwrap_or(u8::MAX)),
        );
        let (gate, opened, release) = (gate.clone(), opened_tx.clone(), release.clone());
        tasks.push(tokio::spawn(async move {
            let link = {
                let _permit = gate.acquire().await;
                Link::from_source(&url, source).await
            };
            let mut link = match link {
                Ok(link) => {
                    let _ = opened.send(Ok(())).await;
                    drop(opened);
                    link
                }
                Err(err) => {
                    let _ = opened.send(Err(format!("{err:#}"))).await;
                    return None;
                }
            };
            // Idle, answering heartbeats, until released; whether it stayed up.
            let released = release.notified();
            tokio::pin!(released);
            loop {
                tokio::select! {
                    () = &mut released => return Some(true),
                    incoming = link.next() => match incoming {
                        Ok(crate::link::Incoming::Closed(_)) | Err(_) => return Some(false),
                        Ok(_) => {}
                    },
                }
            }
        }));
    }
    drop(opened_tx);
    let mut report = ConnsReport {
        scenario: "conns".into(),
        asked: args.connections,
        hold_secs: args.hold_secs,
        ..Default::default()
    };
    // One answer per connection (the tasks keep their senders while they hold).
    for _ in 0..args.connections {
        match opened_rx.recv().await {
            Some(Ok(())) => report.connected += 1,
            Some(Err(err)) => {
                report.failures += 1;
                report.first_error.get_or_insert(err);
            }
            None => break,
        }
    }
    if args.copy {
        // A copy tells its parent that all its connections are open.
        println!("{READY}");
    }
    tokio::time::sleep(hold).await;
    report.server_rss_after_kib = procstat::total_rss_kib(&args.server_pids);
    release.notify_waiters();
    for task in tasks {
        if let Ok(Some(false)) = task.await {
            report.dropped_while_held += 1;
        }
    }
    Ok(report)
}

/// Runs copies of this tool, each with its share and its own source addresses, and adds
/// up what they report; measures the servers while all copies hold their connections.
async fn in_copies(args: &ConnsArgs) -> anyhow::Result<ConnsReport> {
    let copies = args.connections.div_ceil(args.per_process);
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for copy in 0..copies {
        let share = args.per_process.min(args.connections - copy * args.per_process);
        let sources_per_copy = args.per_process.div_ceil(PER_SOURCE);
        let mut command = tokio::process::Command::new(&exe);
        command.args(["conns", "--copy", "--connections", &share.to_string()]);
        for url in &args.urls {
            command.args(["--url", url]);
        }
        // The copies hold long enough for the parent to measure while all are held.
        command.args(["--hold-secs", &args.hold_secs.max(5).to_string()]);
        command.args(["--per-process", &share.to_string()]);
        command.args(["--first-source", &(2 + copy * sources_per_copy).to_string()]);
        command.stdout(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().context("start a copy of the load tool")?;
        let lines = BufReader::new(child.stdout.take().context("piped")?).lines();
        children.push((child, lines));
    }
    let mut finals = Vec::new();
    for (_, lines) in &mut children {
        // Each copy says "ready" when its connections are open (or reports at once if it fails).
        while let Some(line) = lines.next_line().await? {
            if line == READY {
                break;
            }
            finals.push(line);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procstat::total_rss_kib(&args.server_pids);
    let mut total = ConnsReport {
        scenario: "conns".into(),
        asked: args.connections,
        hold_secs: args.hold_secs,
        ..Default::default()
    };
    for (mut child, mut lines) in children {
        while let Some(line) = lines.next_line().await? {
            finals.push(line);
        }
        child.wait().await?;
    }
    for line in finals.iter().filter(|line| line.starts_with('{')) {
        let Ok(part) = serde_json::from_str::<ConnsReport>(line) else { continue };
        total.connected += part.connected;
        total.failures += part.failures;
        total.dropped_while_held += part.dropped_while_held;
        total.first_error = total.first_error.or(part.first_error);
    }
    total.server_rss_after_kib = after;
    Ok(total)
}

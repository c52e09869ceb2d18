//! The soak scenario: chatroom clients (a client key each, as the page has) chat for a
//! long while through a load balancer while faults happen around them (`scripts/soak.sh`
//! makes them). Every client resumes after any disconnect, as the page does: a jittered
//! backoff, then its last position and name in the CONNECT auth. Every client checks
//! every line; at the end the lines anyone saw are compared with what each one saw.
//!
//! Senders send one line at a time and wait for its answer (their own line back, or a
//! refusal), so each line's fate is known to its sender: a refused line must reach no one.

use crate::resuming::{self, LineSet, Phase, Plan, Seen};
use anyhow::{Context, bail};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The soak scenario's settings.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Base URL of the load balancer (or a node).
    #[arg(long)]
    pub url: String,
    /// Clients in all.
    #[arg(long, default_value_t = 40)]
    pub clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Seconds between two lines of one sender.
    #[arg(long, default_value_t = 1.0)]
    pub every_secs: f64,
    /// How long the clients chat; the senders start 5 s in and stop 10 s before the end
    /// (a quarter of a shorter run).
    #[arg(long, default_value_t = 600)]
    pub duration_secs: u64,
}

/// The report of a soak run.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    clients: usize,
    senders: usize,
    lines_sent: u64,
    lines_seen: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    refused: usize,
    refused_but_delivered: usize,
    in_doubt: u64,
    resets: u64,
    false_leaves: u64,
    reconnects: u64,
}

impl SoakReport {
    /// Whether every client saw every line exactly once and in order, and nobody a false leave.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.refused_but_delivered == 0
            && self.false_leaves == 0
            && self.resets == 0
    }

    /// A table for people.
    pub fn table(&self) -> String {
        format!(
            "soak: {} clients ({} senders), {} lines sent, {} seen\n\
             lost {}  duplicated {}  out of order {}  refused {} (delivered anyway: {})  in doubt {}\n\
             resets {}  false leaves {}  reconnects {}",
            self.clients,
            self.senders,
            self.lines_sent,
            self.lines_seen,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.refused,
            self.refused_but_delivered,
            self.in_doubt,
            self.resets,
            self.false_leaves,
            self.reconnects
        )
    }
}

/// Runs the clients for the duration and compares what they saw.
pub async fn run(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    if args.senders > args.clients || args.clients == 0 {
        bail!("--senders must be at most --clients, and --clients at least 1");
    }
    let duration = Duration::from_secs(args.duration_secs);
    // Everyone joins first; the senders start a few seconds in and stop a while before
    // the end, so that their last lines reach everyone.
    let quarter = duration / 4;
    let joining = quarter.min(Duration::from_secs(5));
    let quiet = quarter.min(Duration::from_secs(10));
    let every = Duration::from_secs_f64(args.every_secs.max(0.05));
    let (phase_tx, phase) = watch::channel(Phase::Joining);
    // Soak clients are judged on their lines only: nobody listens to their notes.
    let (notes, _) = mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..args.clients)
        .map(|index| {
            let plan = Plan {
                index,
                prefix: "soak",
                sending: (index < args.senders).then_some((index, every)),
                source: None,
                legacy: false,
                room: None,
            };
            tokio::spawn(resuming::client(args.url.clone(), plan, phase.clone(), notes.clone(), None))
        })
        .collect();
    for (next, after) in [(Phase::Chatting, joining), (Phase::Quiet, duration - joining - quiet), (Phase::Over, quiet)]
    {
        tokio::time::sleep(after).await;
        phase_tx.send_replace(next);
    }
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        seen.push(task.await.context("a client task failed")?);
    }
    Ok(compare(args, &seen))
}

fn compare(args: &SoakArgs, seen: &[Seen]) -> SoakReport {
    let everything = LineSet::union(seen.iter().map(|s| &s.lines));
    let refused: Vec<_> = seen.iter().flat_map(|s| s.refused.iter().copied()).collect();
    for s in seen {
        if let Some(err) = &s.first_error {
            eprintln!("soak: a connection failed: {err}");
        }
    }
    SoakReport {
        clients: args.clients,
        senders: args.senders,
        lines_sent: seen.iter().map(|s| s.sent).sum(),
        lines_seen: everything.len(),
        lost: seen.iter().map(|s| everything.len() - s.lines.len()).sum(),
        duplicated: seen.iter().map(|s| s.duplicates).sum(),
        out_of_order: seen.iter().map(|s| s.out_of_order).sum(),
        refused: refused.len(),
        refused_but_delivered: refused.iter().filter(|line| everything.contains(**line)).count(),
        in_doubt: seen.iter().map(|s| s.in_doubt).sum(),
        resets: seen.iter().map(|s| s.resets).sum(),
        false_leaves: seen.iter().map(|s| s.false_leaves).sum(),
        reconnects: seen.iter().map(|s| s.reconnects).sum(),
    }
}

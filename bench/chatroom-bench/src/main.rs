//! chatroom-bench: a load tool that speaks Socket.IO over WebSocket (Engine.IO v4,
//! Socket.IO v5) with the legacy chat events, so it drives chatroom and any other
//! Socket.IO chat with the same `set_username`/`message` contract alike.
//!
//!   chatroom-bench fanout --url http://127.0.0.1:3000 [--url …] --clients 100 \
//!       --senders 10 --rate 100 --duration-secs 10
//!
//!   chatroom-bench rampup --url … --clients 1000 --senders 10 --start-rate 10 --factor 1.5
//!   chatroom-bench conns --url … --connections 10000 --server-pid PID
//!   chatroom-bench soak --url … --clients 40 --senders 8 --duration-secs 600
//!   chatroom-bench rooms --url … --rooms 1000 --members 10 --rate-per-room 1 [--busy-members 1000]
//!   chatroom-bench storm --url … --clients 10000 --kill-pid PID --server-pid PID [--legacy]
//!
//! Every client checks every line it receives: deliveries expected and received,
//! duplicates and order violations per sender, latency (HDR histogram) and disconnects.
//! It prints a table and one JSON line. Targets must be on loopback; every run is bounded.

mod conns;
mod fanout;
mod link;
mod procstat;
mod rampup;
mod resuming;
mod rooms;
mod soak;
mod storm;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::IpAddr;

/// The load tool's command line.
#[derive(Debug, Parser)]
#[command(name = "chatroom-bench", about = "Load tool for Socket.IO chat servers (loopback only)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N clients over the URLs, S of them sending at a total rate for a duration.
    Fanout(fanout::FanoutArgs),
    /// The fanout clients with a rising rate: the highest rate held within a p99 limit.
    Rampup(rampup::RampupArgs),
    /// Hold N idle connections; report failures and the servers' memory per connection.
    Conns(conns::ConnsArgs),
    /// Chatroom clients that resume after every disconnect chat for a long while (while
    /// scripts/soak.sh makes faults): every line seen by all, once, in order.
    Soak(soak::SoakArgs),
    /// Many rooms of a few members (version 2 clients), one sender each, beside an
    /// optional busy room: every line once, in order, in its room only.
    Rooms(rooms::RoomsArgs),
    /// Clients over several nodes behind a load balancer; one node is killed and its
    /// clients come back at once: how long until they are back, and nothing lost.
    Storm(storm::StormArgs),
}

/// Refuses any target that is not on the loopback network: this tool must not load
/// anyone else's server.
fn loopback_only(urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', '?']).next())
            .context("a URL must look like http://127.0.0.1:PORT")?;
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name).trim_matches(['[', ']']);
        let loopback = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("{url}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed");
        }
    }
    Ok(())
}

/// Prints a run's table and JSON line. A reader that went away (`| head`) is no error:
/// the run is over either way.
fn print_report(table: &str, json: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{table}\n{json}").and_then(|()| out.flush());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Fanout(args) => {
            loopback_only(&args.urls)?;
            if args.duration_secs > 600 {
                bail!("--duration-secs is at most 600: every run is bounded");
            }
            let report = fanout::run(&args).await?;
            print_report(&report.table(), &serde_json::to_string(&report)?);
            // A run that lost or reordered anything says so in its exit status too.
            if !report.clean() {
                std::process::exit(1);
            }
        }
        Scenario::Rampup(args) => {
            loopback_only(&args.urls)?;
            if args.bound() > std::time::Duration::from_secs(1200) {
                bail!("--max-steps × (--step-secs + 4 s) is at most 20 minutes: every run is bounded");
            }
            let report = rampup::run(&args).await?;
            print_report(&report.table(), &serde_json::to_string(&report)?);
        }
        Scenario::Conns(args) => {
            loopback_only(&args.urls)?;
            if args.hold_secs > 600 {
                bail!("--hold-secs is at most 600: every run is bounded");
            }
            // Every connection is a file descriptor: take all the hard limit allows.
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            let report = conns::run(&args).await?;
            print_report(&report.table(), &serde_json::to_string(&report)?);
            if !report.clean() {
                std::process::exit(1);
            }
        }
        Scenario::Rooms(args) => {
            loopback_only(&args.urls)?;
            if args.duration_secs > 600 {
                bail!("--duration-secs is at most 600: every run is bounded");
            }
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            let report = rooms::run(&args).await?;
            print_report(&report.table(), &serde_json::to_string(&report)?);
            if !report.clean() {
                std::process::exit(1);
            }
        }
        Scenario::Storm(args) => {
            loopback_only(std::slice::from_ref(&args.url))?;
            if args.bound() > std::time::Duration::from_secs(900) {
                bail!("--join-secs + --before-secs + --within-secs is at most 15 minutes: every run is bounded");
            }
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            let report = storm::run(&args).await?;
            print_report(&report.table(), &serde_json::to_string(&report)?);
            if !report.clean() {
                std::process::exit(1);
            }
        }
        Scenario::Soak(args) => {
            loopback_only(std::slice::from_ref(&args.url))?;
            if args.duration_secs > 900 {
                bail!("--duration-secs is at most 900: every run is bounded");
            }
            let report = soak::run(&args).await?;
            print_report(&report.table(), &serde_json::to_string(&report)?);
            if !report.clean() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(loopback_only(&["http://127.0.0.1:3000".into(), "http://localhost:1/x".into()]).is_ok());
        assert!(loopback_only(&["http://[::1]:3000".into(), "http://127.0.0.2:80".into()]).is_ok());
        assert!(loopback_only(&["http://10.0.0.1:3000".into()]).is_err());
        assert!(loopback_only(&["http://example.com".into()]).is_err());
        assert!(loopback_only(&["nonsense".into()]).is_err());
    }
}

//! The `rampup` scenario: the `fanout` clients stay connected while the send rate rises
//! step by step, until the p99 latency passes a limit or anything is lost; it reports the
//! highest rate held.

use crate::fanout::{Report, Swarm};
use serde::Serialize;
use std::time::Duration;

/// `rampup`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct RampupArgs {
    /// A server's base URL (repeat it: clients are spread over the URLs in turn).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Clients in all.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// The first step's rate (chat lines a second, all senders together).
    #[arg(long, default_value_t = 10.0)]
    pub start_rate: f64,
    /// Each step's rate is the last one's times this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// How long each step sends.
    #[arg(long, default_value_t = 5)]
    pub step_secs: u64,
    /// A step holds when nothing is lost and its p99 is at most this.
    #[arg(long, default_value_t = 250.0)]
    pub p99_limit_ms: f64,
    /// Steps at most.
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
}

impl RampupArgs {
    /// The longest a run can take, before connecting: every run is bounded.
    pub fn bound(&self) -> Duration {
        Duration::from_secs((self.step_secs + 4) * u64::from(self.max_steps))
    }
}

/// What one `rampup` run measured.
#[derive(Debug, Serialize)]
pub struct RampupReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub senders: usize,
    pub p99_limit_ms: f64,
    /// The highest rate whose step held, if any did.
    pub held_rate: Option<f64>,
    /// Deliveries a second in that step.
    pub held_deliveries_per_sec: Option<f64>,
    /// Why the ramp stopped.
    pub stopped: String,
    pub steps: Vec<Report>,
}

impl RampupReport {
    /// A table for people: one row per step.
    pub fn table(&self) -> String {
        let mut table = format!(
            "rampup: {} clients, {} senders, p99 limit {} ms\n\
             {:>10} {:>10} {:>12} {:>8} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}\n",
            self.clients,
            self.senders,
            self.p99_limit_ms,
            "msg/s",
            "sent",
            "deliveries/s",
            "missing",
            "dups",
            "order",
            "disc",
            "p50 ms",
            "p99 ms",
            "max ms",
        );
        for step in &self.steps {
            table += &format!(
                "{:>10.1} {:>10} {:>12.0} {:>8} {:>6} {:>6} {:>6} {:>9.2} {:>9.2} {:>9.2}\n",
                step.target_rate,
                step.sent,
                step.deliveries_per_sec,
                step.missing,
                step.duplicates,
                step.order_violations,
                step.disconnects,
                step.latency_ms_p50,
                step.latency_ms_p99,
                step.latency_ms_max,
            );
        }
        match (self.held_rate, self.held_deliveries_per_sec) {
            (Some(rate), Some(deliveries)) => {
                table +=
                    &format!("highest rate held: {rate:.1} msg/s ({deliveries:.0} deliveries/s); {}", self.stopped);
            }
            _ => table += &format!("no rate held; {}", self.stopped),
        }
        table
    }
}

/// Whether a step held: nothing lost, duplicated or dropped, p99 in bound. Lines seen out
/// of order are reported but do not end the ramp: the replaced service reorders even at
/// low rates, and the measure is how much load a system carries.
fn held(step: &Report, p99_limit_ms: f64) -> Result<(), String> {
    if step.sent == 0 {
        return Err(format!("{} msg/s sent nothing: a step too short for its rate", step.target_rate));
    }
    if step.missing + step.duplicates > 0 || step.disconnects + step.connect_failures > 0 {
        return Err(format!(
            "{} msg/s lost something (missing {}, duplicates {}, disconnects {}, connect failures {})",
            step.target_rate, step.missing, step.duplicates, step.disconnects, step.connect_failures
        ));
    }
    if step.latency_ms_p99 > p99_limit_ms {
        return Err(format!("{} msg/s: p99 {:.1} ms over the limit", step.target_rate, step.latency_ms_p99));
    }
    Ok(())
}

/// Connects the clients once and raises the rate until a step does not hold.
pub async fn run(args: &RampupArgs) -> anyhow::Result<RampupReport> {
    let mut swarm = Swarm::connect(&args.urls, args.clients, args.senders).await?;
    let mut report = RampupReport {
        scenario: "rampup",
        clients: args.clients.max(1),
        senders: args.senders.clamp(1, args.clients.max(1)),
        p99_limit_ms: args.p99_limit_ms,
        held_rate: None,
        held_deliveries_per_sec: None,
        stopped: format!("{} steps held", args.max_steps),
        steps: Vec::new(),
    };
    let mut rate = args.start_rate;
    for _ in 0..args.max_steps {
        let step = swarm.step(rate, Duration::from_secs(args.step_secs)).await?;
        let verdict = held(&step, args.p99_limit_ms);
        eprintln!(
            "rampup: {rate:.1} msg/s: p99 {:.2} ms, {:.0} deliveries/s: {}",
            step.latency_ms_p99,
            step.deliveries_per_sec,
            verdict.as_ref().map_or_else(|why| format!("not held ({why})"), |()| "held".into())
        );
        let deliveries = step.deliveries_per_sec;
        report.steps.push(step);
        if let Err(why) = verdict {
            report.stopped = why;
            break;
        }
        report.held_rate = Some(rate);
        report.held_deliveries_per_sec = Some(deliveries);
        rate *= args.factor.max(1.01);
    }
    swarm.close().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p99: f64, missing: u64) -> Report {
        Report {
            scenario: "fanout",
            clients: 10,
            senders: 1,
            target_rate: 10.0,
            duration_secs: 1,
            connect_failures: 0,
            sent: 10,
            expected: 100,
            received: 100 - missing,
            missing,
            duplicates: 0,
            order_violations: 0,
            disconnects: 0,
            deliveries_per_sec: 100.0,
            latency_ms_p50: 1.0,
            latency_ms_p90: 1.0,
            latency_ms_p99: p99,
            latency_ms_max: p99,
            server_cpu_secs: None,
            redis_cpu_secs: None,
            server_cpu_us_per_delivery: None,
            redis_cpu_us_per_delivery: None,
        }
    }

    #[test]
    fn a_step_holds_only_without_loss_and_within_the_latency_limit() {
        assert!(held(&step(10.0, 0), 250.0).is_ok());
        assert!(held(&step(251.0, 0), 250.0).unwrap_err().contains("p99"));
        assert!(held(&step(10.0, 1), 250.0).unwrap_err().contains("missing 1"));
        let reordered = Report { order_violations: 3, ..step(10.0, 0) };
        assert!(held(&reordered, 250.0).is_ok(), "reported, not a failure");
        let silent = Report { sent: 0, received: 0, expected: 0, ..step(10.0, 0) };
        assert!(held(&silent, 250.0).unwrap_err().contains("sent nothing"), "nothing measured, nothing held");
    }
}

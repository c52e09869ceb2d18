//! The `fanout` scenario: many clients, some of them senders; every client checks every
//! line it receives.

use crate::link::{Incoming, Link};
use app::protocol::ClientEvent;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Handshakes in flight at once while the clients connect.
const CONNECTING_AT_ONCE: usize = 200;
/// Latency histograms, so that clients seldom wait for one another.
const SHARDS: usize = 16;
/// How long clients keep listening after the last line was sent.
const DRAIN: Duration = Duration::from_secs(3);

/// `fanout`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// A server's base URL (repeat it: clients are spread over the URLs in turn).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Clients in all.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Chat lines a second, all senders together.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long the senders send.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub clients: usize,
    pub senders: usize,
    pub target_rate: f64,
    pub duration_secs: u64,
    pub connect_failures: usize,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub disconnects: usize,
    pub deliveries_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

impl Report {
    /// Nothing lost, duplicated, reordered or dropped.
    pub fn clean(&self) -> bool {
        self.connect_failures == 0
            && self.missing == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.disconnects == 0
    }

    /// A table for people.
    pub fn table(&self) -> String {
        format!(
            "fanout: {} clients, {} senders, {} msg/s for {} s\n\
             sent {:>10}   expected {:>12}   received {:>12}\n\
             missing {:>7}   duplicates {:>10}   order violations {:>6}   disconnects {}   connect failures {}\n\
             deliveries/s {:>10.0}   latency ms p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.clients,
            self.senders,
            self.target_rate,
            self.duration_secs,
            self.sent,
            self.expected,
            self.received,
            self.missing,
            self.duplicates,
            self.order_violations,
            self.disconnects,
            self.connect_failures,
            self.deliveries_per_sec,
            self.latency_ms_p50,
            self.latency_ms_p90,
            self.latency_ms_p99,
            self.latency_ms_max,
        )
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    sent: u64,
    received: u64,
    duplicates: u64,
    order_violations: u64,
    disconnected: bool,
}

/// Which lines of each sender a client got, and the newest.
#[derive(Default)]
struct PerSender {
    got: Vec<u64>,
    newest: Option<u64>,
}

impl PerSender {
    /// Records line `seq`; returns (duplicate, out of order).
    fn record(&mut self, seq: u64) -> (bool, bool) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.got.len() <= word {
            self.got.resize(word + 1, 0);
        }
        let duplicate = self.got[word] & (1 << bit) != 0;
        self.got[word] |= 1 << bit;
        let out_of_order = self.newest.is_some_and(|newest| seq < newest);
        self.newest = Some(self.newest.map_or(seq, |newest| newest.max(seq)));
        (duplicate, out_of_order)
    }
}

/// A benchmark line: `b <sender> <seq> <micros since the run's start>`.
fn line_text(sender: usize, seq: u64, micros: u64) -> String {
    format!("b {sender} {seq} {micros}")
}

/// Reads a benchmark line out of a legacy `name: text` message.
fn parse_line(message: &str) -> Option<(usize, u64, u64)> {
    let (_, text) = message.split_once(": ")?;
    let mut parts = text.strip_prefix("b ")?.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

struct Shared {
    start: Instant,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn record_latency(&self, shard: usize, micros: u64) {
        let mut histogram = self.histograms[shard % SHARDS].lock().unwrap_or_else(PoisonError::into_inner);
        histogram.saturating_record(micros.max(1));
    }
}

/// Connects every client, lets the senders send, and tallies what everyone received.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<Report> {
    let clients = args.clients.max(1);
    let senders = args.senders.clamp(1, clients);
    let per_sender = ((args.rate * args.duration_secs as f64) / senders as f64).round() as u64;
    let interval = Duration::from_secs_f64(senders as f64 / args.rate.max(0.001));
    let histograms =
        (0..SHARDS).map(|_| Histogram::new_with_bounds(1, 120_000_000, 3).map(Mutex::new)).collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared { start: Instant::now(), histograms });
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(clients);

    let mut tasks = Vec::with_capacity(clients);
    for index in 0..clients {
        let url = args.urls[index % args.urls.len()].clone();
        let sending = (index < senders).then_some(per_sender);
        let (shared, mut go, gate, ready) = (shared.clone(), go_rx.clone(), gate.clone(), ready_tx.clone());
        let duration = Duration::from_secs(args.duration_secs);
        tasks.push(tokio::spawn(async move {
            let link = {
                let _permit = gate.acquire().await;
                connect(&url, index, sending.is_some()).await
            };
            let _ = ready.send(link.is_ok()).await;
            let mut link = link.ok()?;
            // Everyone starts together, once all are connected.
            let start = loop {
                if let Some(start) = *go.borrow() {
                    break start;
                }
                if go.changed().await.is_err() {
                    return None;
                }
            };
            Some(serve(&mut link, index, sending, interval, start, start + duration + DRAIN, &shared).await)
        }));
    }
    drop(ready_tx);
    let mut connect_failures = 0;
    for _ in 0..clients {
        if !ready_rx.recv().await.unwrap_or(false) {
            connect_failures += 1;
        }
    }
    let started = Instant::now();
    let _ = go_tx.send(Some(started));

    let mut seen = Vec::with_capacity(clients);
    for task in tasks {
        if let Ok(Some(outcome)) = task.await {
            seen.push(outcome);
        }
    }
    let elapsed = args.duration_secs.max(1) as f64;
    let sent: u64 = seen.iter().map(|s| s.sent).sum();
    let received: u64 = seen.iter().map(|s| s.received).sum();
    let duplicates: u64 = seen.iter().map(|s| s.duplicates).sum();
    let expected = sent * clients as u64;
    let mut merged = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    for histogram in &shared.histograms {
        merged.add(&*histogram.lock().unwrap_or_else(PoisonError::into_inner))?;
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(Report {
        scenario: "fanout",
        clients,
        senders,
        target_rate: args.rate,
        duration_secs: args.duration_secs,
        connect_failures,
        sent,
        expected,
        received,
        missing: expected.saturating_sub(received - duplicates),
        duplicates,
        order_violations: seen.iter().map(|s| s.order_violations).sum(),
        disconnects: seen.iter().filter(|s| s.disconnected).count(),
        deliveries_per_sec: received as f64 / elapsed,
        latency_ms_p50: ms(merged.value_at_quantile(0.50)),
        latency_ms_p90: ms(merged.value_at_quantile(0.90)),
        latency_ms_p99: ms(merged.value_at_quantile(0.99)),
        latency_ms_max: ms(merged.max()),
    })
}

/// Connects one client; a sender takes a name so that its lines are accepted.
async fn connect(url: &str, index: usize, sender: bool) -> anyhow::Result<Link> {
    let mut link = Link::connect(url).await?;
    if sender {
        let name = format!("s{index}");
        link.emit(&ClientEvent::SetUsername(name.clone())).await?;
        let confirmation = format!("Your username is set to {name}");
        loop {
            match link.next().await? {
                Incoming::Message(text) if text == confirmation => break,
                Incoming::Closed(reason) => anyhow::bail!("closed while naming: {reason}"),
                _ => {}
            }
        }
    }
    Ok(link)
}

/// Sends (for a sender) and receives until `until`.
async fn serve(
    link: &mut Link,
    index: usize,
    sending: Option<u64>,
    interval: Duration,
    start: Instant,
    until: Instant,
    shared: &Shared,
) -> Seen {
    let mut seen = Seen::default();
    let mut senders: HashMap<usize, PerSender> = HashMap::new();
    let to_send = sending.unwrap_or(0);
    // Senders start spread over one interval, not all in the same instant.
    let offset = interval.mul_f64((index as f64 * 0.618_034) % 1.0);
    let mut ticks = tokio::time::interval_at(start + offset, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = ticks.tick(), if seen.sent < to_send => {
                let micros = shared.start.elapsed().as_micros() as u64;
                let text = line_text(index, seen.sent, micros);
                if link.emit(&ClientEvent::Message(text)).await.is_err() {
                    seen.disconnected = true;
                    break;
                }
                seen.sent += 1;
            }
            incoming = link.next() => match incoming {
                Ok(Incoming::Message(message)) => {
                    let Some((sender, seq, micros)) = parse_line(&message) else { continue };
                    seen.received += 1;
                    let now = shared.start.elapsed().as_micros() as u64;
                    shared.record_latency(index, now.saturating_sub(micros));
                    let (duplicate, out_of_order) = senders.entry(sender).or_default().record(seq);
                    seen.duplicates += u64::from(duplicate);
                    seen.order_violations += u64::from(out_of_order);
                }
                Ok(Incoming::Other) => {}
                Ok(Incoming::Closed(_)) | Err(_) => {
                    seen.disconnected = true;
                    break;
                }
            },
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_the_legacy_format() {
        let message = format!("s3: {}", line_text(3, 41, 123_456));
        assert_eq!(parse_line(&message), Some((3, 41, 123_456)));
        assert_eq!(parse_line("Welcome to the chatroom!"), None);
        assert_eq!(parse_line("ann: hello there"), None);
    }

    #[test]
    fn duplicates_and_reordering_are_told_apart() {
        let mut sender = PerSender::default();
        assert_eq!(sender.record(0), (false, false));
        assert_eq!(sender.record(2), (false, false));
        assert_eq!(sender.record(1), (false, true), "late: out of order");
        assert_eq!(sender.record(2), (true, false), "again: a duplicate");
        assert_eq!(sender.record(0), (true, true), "an old one again: both");
        assert_eq!(sender.record(200), (false, false));
    }
}

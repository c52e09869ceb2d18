//! The `fanout` scenario: many clients, some of them senders; every client checks every
//! line it receives.

use crate::link::{Incoming, Link};
use crate::procstat;
use app::protocol::ClientEvent;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Handshakes in flight at once while the clients connect.
const CONNECTING_AT_ONCE: usize = 200;
/// How long one client may take to connect (and, for a sender, to take its name).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Latency histograms, so that clients seldom wait for one another.
const SHARDS: usize = 16;
/// How long clients keep listening after the last line was sent.
const DRAIN: Duration = Duration::from_secs(3);
/// How long the servers get, once every client is connected, to finish what connecting
/// set off (sessions and presence written to Redis, a presence sweep) before a step is
/// measured: work left over from connecting is not a delivery's.
const SETTLE: Duration = Duration::from_secs(3);

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
    /// The servers' CPU over the step, divided by deliveries (repeat for several processes).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Redis's CPU over the step, reported apart from the servers'.
    #[arg(long = "redis-pid")]
    pub redis_pids: Vec<u32>,
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
    /// CPU seconds of the `--server-pid` processes over the step (with its 3 s drain).
    pub server_cpu_secs: Option<f64>,
    /// CPU seconds of the `--redis-pid` processes over the step.
    pub redis_cpu_secs: Option<f64>,
    /// The servers' CPU µs per line delivered (received by a client).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Redis's CPU µs per line delivered.
    pub redis_cpu_us_per_delivery: Option<f64>,
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
        ) + &self.cpu_table()
    }

    /// The CPU part of the table, when processes were named.
    fn cpu_table(&self) -> String {
        let mut table = String::new();
        let per = |us: Option<f64>| us.map_or_else(|| "-".to_owned(), |us| format!("{us:.2}"));
        if let Some(secs) = self.server_cpu_secs {
            table += &format!("\nservers' CPU {secs:.2} s ({} µs a delivery)", per(self.server_cpu_us_per_delivery));
        }
        if let Some(secs) = self.redis_cpu_secs {
            table += &format!("   Redis's CPU {secs:.2} s ({} µs a delivery)", per(self.redis_cpu_us_per_delivery));
        }
        table
    }
}

/// CPU seconds two readings of some processes apart, or none when none was named.
fn cpu_between(pids: &[u32], before: f64) -> Option<f64> {
    (!pids.is_empty()).then(|| (procstat::total_cpu_secs(pids) - before).max(0.0))
}

/// CPU µs per delivery, when both are known.
fn per_delivery(cpu_secs: Option<f64>, received: u64) -> Option<f64> {
    cpu_secs.filter(|_| received > 0).map(|secs| secs * 1e6 / received as f64)
}

/// What one client saw in one step.
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
pub(crate) struct PerSender {
    got: Vec<u64>,
    newest: Option<u64>,
}

impl PerSender {
    /// Records line `seq`; returns (duplicate, out of order).
    pub(crate) fn record(&mut self, seq: u64) -> (bool, bool) {
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

/// A benchmark line: `b <step> <sender> <seq> <micros since the run's start>`.
fn line_text(step: u32, sender: usize, seq: u64, micros: u64) -> String {
    format!("b {step} {sender} {seq} {micros}")
}

/// One benchmark line as read back.
#[derive(Debug, PartialEq)]
struct Line {
    step: u32,
    sender: usize,
    seq: u64,
    micros: u64,
}

/// Reads a benchmark line out of a legacy `name: text` message.
fn parse_line(message: &str) -> Option<Line> {
    let (_, text) = message.split_once(": ")?;
    let mut parts = text.strip_prefix("b ")?.split(' ');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Line {
        step: u32::try_from(next()?).ok()?,
        sender: usize::try_from(next()?).ok()?,
        seq: next()?,
        micros: next()?,
    })
}

struct Shared {
    start: Instant,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn record_latency(&self, shard: usize, micros: u64) {
        let mut histogram = self.histograms[shard % SHARDS].lock();
        histogram.saturating_record(micros.max(1));
    }

    /// All shards in one histogram, and empties them for the next step.
    fn take_latencies(&self) -> anyhow::Result<Histogram<u64>> {
        let mut merged = new_histogram()?;
        for histogram in &self.histograms {
            let mut histogram = histogram.lock();
            merged.add(&*histogram)?;
            histogram.reset();
        }
        Ok(merged)
    }
}

/// A latency histogram in microseconds, up to two minutes.
pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 120_000_000, 3)?)
}

/// One measured period: the senders send `lines` lines between them, each spreading
/// its share evenly over `duration`.
#[derive(Debug, Clone, Copy)]
struct Step {
    id: u32,
    lines: u64,
    senders: usize,
    duration: Duration,
    start: Instant,
    until: Instant,
}

impl Step {
    /// How many of the step's lines sender `index` sends: an even share, the remainder
    /// going one each to the first senders.
    fn share(&self, index: usize) -> u64 {
        let senders = self.senders.max(1) as u64;
        self.lines / senders + u64::from((index as u64) < self.lines % senders)
    }
}

/// What the clients are told to do next.
#[derive(Debug, Clone, Copy)]
enum Order {
    Wait,
    Run(Step),
    Stop,
}

/// Connected clients that run measured steps one after another.
pub struct Swarm {
    clients: usize,
    senders: usize,
    connect_failures: usize,
    shared: Arc<Shared>,
    steps: watch::Sender<Order>,
    seen: mpsc::Receiver<Seen>,
    tasks: Vec<JoinHandle<()>>,
    next_step: u32,
    server_pids: Vec<u32>,
    redis_pids: Vec<u32>,
}

impl Swarm {
    /// Connects `clients` clients spread over `urls`; the first `senders` take a name.
    pub async fn connect(urls: &[String], clients: usize, senders: usize) -> anyhow::Result<Self> {
        let clients = clients.max(1);
        let senders = senders.clamp(1, clients);
        let histograms = (0..SHARDS).map(|_| new_histogram().map(Mutex::new)).collect::<Result<_, _>>()?;
        let shared = Arc::new(Shared { start: Instant::now(), histograms });
        let (steps, steps_rx) = watch::channel(Order::Wait);
        let (seen_tx, seen) = mpsc::channel::<Seen>(clients);
        let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
        let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(clients);

        let mut tasks = Vec::with_capacity(clients);
        for index in 0..clients {
            let url = urls[index % urls.len()].clone();
            let sender = index < senders;
            let (shared, steps, gate, ready, seen) =
                (shared.clone(), steps_rx.clone(), gate.clone(), ready_tx.clone(), seen_tx.clone());
            tasks.push(tokio::spawn(async move {
                let link = {
                    let _permit = gate.acquire().await;
                    tokio::time::timeout(CONNECT_TIMEOUT, connect(&url, index, sender))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no handshake within {CONNECT_TIMEOUT:?}")))
                };
                let _ = ready.send(link.is_ok()).await;
                if let Ok(link) = link {
                    run_client(link, index, sender, steps, seen, &shared).await;
                }
            }));
        }
        drop(ready_tx);
        let mut connect_failures = 0;
        for _ in 0..clients {
            if !ready_rx.recv().await.unwrap_or(false) {
                connect_failures += 1;
            }
        }
        tokio::time::sleep(SETTLE).await;
        Ok(Self {
            clients,
            senders,
            connect_failures,
            shared,
            steps,
            seen,
            tasks,
            next_step: 0,
            server_pids: Vec::new(),
            redis_pids: Vec::new(),
        })
    }

    /// Measures the CPU of these server and Redis processes over each step.
    #[must_use]
    pub fn measuring_cpu(mut self, server_pids: &[u32], redis_pids: &[u32]) -> Self {
        self.server_pids = server_pids.to_vec();
        self.redis_pids = redis_pids.to_vec();
        self
    }

    /// Runs one step at `rate` lines a second for `duration` and reports it.
    pub async fn step(&mut self, rate: f64, duration: Duration) -> anyhow::Result<Report> {
        let connected = self.clients - self.connect_failures;
        // The total is rounded, not each sender's share: at 1 msg/s over 4 s, 10 senders
        // send 4 lines between them (rounding each share sent none at all).
        #[expect(clippy::cast_possible_truncation, reason = "a count of lines, rounded; f64 to u64 saturates")]
        let lines = (rate * duration.as_secs_f64()).round() as u64;
        let (servers_before, redis_before) =
            (procstat::total_cpu_secs(&self.server_pids), procstat::total_cpu_secs(&self.redis_pids));
        let start = Instant::now();
        let id = self.next_step;
        self.next_step += 1;
        self.steps.send_replace(Order::Run(Step {
            id,
            lines,
            senders: self.senders,
            duration,
            start,
            until: start + duration + DRAIN,
        }));

        let mut seen = Vec::with_capacity(connected);
        for _ in 0..connected {
            match self.seen.recv().await {
                Some(outcome) => seen.push(outcome),
                None => break,
            }
        }
        let server_cpu_secs = cpu_between(&self.server_pids, servers_before);
        let redis_cpu_secs = cpu_between(&self.redis_pids, redis_before);
        let latencies = self.shared.take_latencies()?;
        let sent: u64 = seen.iter().map(|s| s.sent).sum();
        let received: u64 = seen.iter().map(|s| s.received).sum();
        let duplicates: u64 = seen.iter().map(|s| s.duplicates).sum();
        let expected = sent * self.clients as u64;
        let ms = |micros: u64| micros as f64 / 1000.0;
        Ok(Report {
            scenario: "fanout",
            clients: self.clients,
            senders: self.senders,
            target_rate: rate,
            duration_secs: duration.as_secs(),
            connect_failures: self.connect_failures,
            sent,
            expected,
            received,
            missing: expected.saturating_sub(received - duplicates),
            duplicates,
            order_violations: seen.iter().map(|s| s.order_violations).sum(),
            disconnects: seen.iter().filter(|s| s.disconnected).count(),
            deliveries_per_sec: received as f64 / duration.as_secs_f64().max(0.001),
            latency_ms_p50: ms(latencies.value_at_quantile(0.50)),
            latency_ms_p90: ms(latencies.value_at_quantile(0.90)),
            latency_ms_p99: ms(latencies.value_at_quantile(0.99)),
            latency_ms_max: ms(latencies.max()),
            server_cpu_secs,
            redis_cpu_secs,
            server_cpu_us_per_delivery: per_delivery(server_cpu_secs, received),
            redis_cpu_us_per_delivery: per_delivery(redis_cpu_secs, received),
        })
    }

    /// Tells every client to hang up and waits for them.
    pub async fn close(self) {
        self.steps.send_replace(Order::Stop);
        drop(self.seen);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Connects every client, runs one step, and tallies what everyone received.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<Report> {
    let mut swarm = Swarm::connect(&args.urls, args.clients, args.senders)
        .await?
        .measuring_cpu(&args.server_pids, &args.redis_pids);
    let report = swarm.step(args.rate, Duration::from_secs(args.duration_secs)).await;
    swarm.close().await;
    report
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

/// One client over its life: a step whenever one is announced, until told to stop.
async fn run_client(
    mut link: Link,
    index: usize,
    sender: bool,
    mut steps: watch::Receiver<Order>,
    seen: mpsc::Sender<Seen>,
    shared: &Shared,
) {
    let mut done = None::<u32>;
    let mut disconnected = false;
    // Lines read while waiting: those of the step that began meanwhile count in it.
    let mut early = Vec::new();
    loop {
        let step = loop {
            match *steps.borrow_and_update() {
                Order::Stop => return,
                Order::Run(step) if done.is_none_or(|done| step.id > done) => break step,
                Order::Run(_) | Order::Wait => {}
            }
            // Waiting, it still answers heartbeats: engineioxide pings as a socket opens
            // and closes it if no answer comes within its timeout (20 s), which the
            // first of 5,000 clients used to miss while the rest connected.
            tokio::select! {
                biased;
                changed = steps.changed() => if changed.is_err() {
                    return;
                },
                incoming = link.next(), if !disconnected => match incoming {
                    Ok(Incoming::Message(message)) => early.push(message),
                    Ok(Incoming::Closed(_)) | Err(_) => disconnected = true,
                    Ok(_) => {}
                }
            }
        };
        done = Some(step.id);
        let outcome = if disconnected {
            Seen { disconnected: true, ..Seen::default() }
        } else {
            let early = std::mem::take(&mut early);
            serve(&mut link, index, sender.then(|| step.share(index)), step, early, shared).await
        };
        disconnected = outcome.disconnected;
        if seen.send(outcome).await.is_err() {
            return;
        }
    }
}

/// Sends (for a sender) and receives until the step's end.
async fn serve(
    link: &mut Link,
    index: usize,
    sending: Option<u64>,
    step: Step,
    early: Vec<String>,
    shared: &Shared,
) -> Seen {
    let mut seen = Seen::default();
    let mut senders: HashMap<usize, PerSender> = HashMap::new();
    for message in &early {
        take_line(message, step.id, index, &mut seen, &mut senders, shared);
    }
    let to_send = sending.unwrap_or(0);
    // Senders start spread over one interval, not all in the same instant; the last
    // line still goes within the step.
    let interval = step.duration / u32::try_from(to_send.max(1)).unwrap_or(u32::MAX);
    let offset = interval.mul_f64((index as f64 * 0.618_034) % 1.0);
    let mut ticks = tokio::time::interval_at(step.start + offset, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let deadline = tokio::time::sleep_until(step.until);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = ticks.tick(), if seen.sent < to_send => {
                let micros = elapsed_micros(shared.start);
                let text = line_text(step.id, index, seen.sent, micros);
                if link.emit(&ClientEvent::Message(text)).await.is_err() {
                    seen.disconnected = true;
                    break;
                }
                seen.sent += 1;
            }
            incoming = link.next() => match incoming {
                Ok(Incoming::Message(message)) => take_line(&message, step.id, index, &mut seen, &mut senders, shared),
                Ok(Incoming::Other | Incoming::Event(_)) => {}
                Ok(Incoming::Closed(_)) | Err(_) => {
                    seen.disconnected = true;
                    break;
                }
            },
        }
    }
    seen
}

/// Counts a received line of step `step` (lines of an earlier step that come this late
/// were already missed, and are ignored).
fn take_line(
    message: &str,
    step: u32,
    index: usize,
    seen: &mut Seen,
    senders: &mut HashMap<usize, PerSender>,
    shared: &Shared,
) {
    let Some(line) = parse_line(message).filter(|line| line.step == step) else { return };
    seen.received += 1;
    let now = elapsed_micros(shared.start);
    shared.record_latency(index, now.saturating_sub(line.micros));
    let (duplicate, out_of_order) = senders.entry(line.sender).or_default().record(line.seq);
    seen.duplicates += u64::from(duplicate);
    seen.order_violations += u64::from(out_of_order);
}

/// Microseconds since `start` (a run lasts far less than the 584,000 years a u64 holds).
pub(crate) fn elapsed_micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_the_legacy_format() {
        let message = format!("s3: {}", line_text(2, 3, 41, 123_456));
        assert_eq!(parse_line(&message), Some(Line { step: 2, sender: 3, seq: 41, micros: 123_456 }));
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

    #[test]
    fn a_step_shares_its_lines_so_low_rates_still_send() {
        let at = |lines| Step {
            id: 1,
            lines,
            senders: 10,
            duration: Duration::from_secs(4),
            start: Instant::now(),
            until: Instant::now(),
        };
        let shares = |step: Step| (0..10).map(|i| step.share(i)).collect::<Vec<_>>();
        assert_eq!(shares(at(4)), [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(shares(at(23)), [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(shares(at(23)).iter().sum::<u64>(), 23);
    }
}

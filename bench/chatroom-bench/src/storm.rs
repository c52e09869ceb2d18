//! The `storm` scenario: thousands of clients chat through a load balancer in front of
//! several nodes; once all have joined, the tool kills one node (SIGKILL) and its
//! clients all come back at once through the balancer, with the page's jittered backoff,
//! and resume. It reports how long it took until 50 %, 99 % and 100 % of them were back,
//! whether every client still saw every line once and in order, and what the storm cost
//! the surviving nodes and Redis (sampled from `/proc` every 250 ms).
//!
//! Clients connect from 127.1.0.1, 127.1.0.2, … (`--per-address` each): behind a proxy
//! the nodes' per-address limits see each address as one person, as they would see users.
//! Structured clients are in rooms of `--room-size` (version 2): in one room of 10,000,
//! every first join is announced to everyone, and the joins alone would take longer than
//! the run (one room of 10,000 is measured by `fanout`). Legacy clients are all in the
//! one room their contract has.

use crate::procstat;
use crate::resuming::{self, LineSet, Note, Phase, Plan, Seen};
use anyhow::{Context, bail};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

/// Handshakes in flight at once while the clients first join (the storm itself is not paced).
const JOINING_AT_ONCE: usize = 256;
/// How often the servers are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Chat after everyone is back, then quiet before the end, so the last lines reach all.
const AFTER_STORM: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_secs(3);

/// The storm scenario's settings.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Base URL of the load balancer in front of the nodes.
    #[arg(long)]
    pub url: String,
    /// Clients in all.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// How many of them send: the first client of as many rooms, spread over the rooms
    /// (legacy: spread over the clients).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Clients in one room (structured clients).
    #[arg(long, default_value_t = 100)]
    pub room_size: usize,
    /// Seconds between two lines of one sender.
    #[arg(long, default_value_t = 5.0)]
    pub every_secs: f64,
    /// Clients that share one source address.
    #[arg(long, default_value_t = 10)]
    pub per_address: usize,
    /// The node to kill (SIGKILL) once every client has joined.
    #[arg(long)]
    pub kill_pid: u32,
    /// Seconds of chat between everyone joined and the kill.
    #[arg(long, default_value_t = 10)]
    pub before_secs: u64,
    /// Seconds after the kill by which every client must be back.
    #[arg(long, default_value_t = 60)]
    pub within_secs: u64,
    /// Seconds the clients have to join at first.
    #[arg(long, default_value_t = 180)]
    pub join_secs: u64,
    /// A surviving server process to sample (repeat it for several).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// The Redis server process to sample.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Clients of the legacy contract (servers without resume): they only reconnect, and
    /// only their reconnect times are reported.
    #[arg(long)]
    pub legacy: bool,
}

impl StormArgs {
    /// The longest a run may take.
    pub fn bound(&self) -> Duration {
        Duration::from_secs(self.join_secs + self.before_secs + self.within_secs) + AFTER_STORM + QUIET
    }
}

/// The report of a storm run.
#[derive(Debug, Default, Serialize)]
pub struct StormReport {
    pub scenario: String,
    pub legacy: bool,
    pub clients: usize,
    pub senders: usize,
    /// Rooms the clients are in (1 for legacy clients).
    pub rooms: usize,
    /// Seconds until every client had joined.
    pub joined_secs: f64,
    /// Clients that lost their connection when the node died.
    pub dropped: usize,
    /// Of those, the ones back within the bound.
    pub back: usize,
    /// Milliseconds from the kill until 50 %, 99 % and 100 % of the dropped were back.
    pub back_ms_p50: Option<f64>,
    pub back_ms_p99: Option<f64>,
    pub back_ms_p100: Option<f64>,
    pub lines_sent: u64,
    pub lines_seen: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub refused: usize,
    pub in_doubt: u64,
    pub resets: u64,
    pub false_leaves: u64,
    /// Connection attempts that failed (each then backs off and tries again).
    pub failed_attempts: u64,
    pub first_error: Option<String>,
    /// The surviving nodes' resident memory just before the kill and at its peak after.
    pub survivor_rss_before_kib: u64,
    pub survivor_rss_peak_kib: u64,
    /// The surviving nodes' and Redis's busiest second after the kill (% of one core) and
    /// their CPU seconds from the kill until everyone was back.
    pub survivor_cpu_peak_pct: f64,
    pub survivor_cpu_storm_secs: f64,
    pub redis_cpu_peak_pct: f64,
    pub redis_cpu_storm_secs: f64,
}

impl StormReport {
    /// Everyone came back; structured clients also saw every line once, in order, with
    /// no reset and no false leave.
    pub fn clean(&self) -> bool {
        self.back == self.dropped
            && (self.legacy
                || (self.lost == 0
                    && self.duplicated == 0
                    && self.out_of_order == 0
                    && self.resets == 0
                    && self.false_leaves == 0))
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} ms"));
        format!(
            "storm: {} clients in {} rooms ({} senders{}), joined in {:.1} s; {} dropped by the kill, {} back\n\
             back after the kill: 50 % {}  99 % {}  100 % {}   failed attempts {}\n\
             lines sent {}  seen {}  lost {}  duplicated {}  out of order {}  resets {}  false leaves {}\n\
             survivors: RSS {} -> {} KiB peak, CPU peak {:.0} %, {:.1} s in the storm; \
             Redis CPU peak {:.0} %, {:.1} s{}",
            self.clients,
            self.rooms,
            self.senders,
            if self.legacy { ", legacy" } else { "" },
            self.joined_secs,
            self.dropped,
            self.back,
            ms(self.back_ms_p50),
            ms(self.back_ms_p99),
            ms(self.back_ms_p100),
            self.failed_attempts,
            self.lines_sent,
            self.lines_seen,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.resets,
            self.false_leaves,
            self.survivor_rss_before_kib,
            self.survivor_rss_peak_kib,
            self.survivor_cpu_peak_pct,
            self.survivor_cpu_storm_secs,
            self.redis_cpu_peak_pct,
            self.redis_cpu_storm_secs,
            self.first_error.as_deref().map(|e| format!("\nfirst error: {e}")).unwrap_or_default(),
        )
    }
}

/// The loopback address client `index` connects from.
fn source_of(index: usize, per_address: usize) -> Ipv4Addr {
    let address = index / per_address.max(1);
    // 250 per third octet, never .0 or .255.
    let third = u8::try_from(address / 250).unwrap_or(u8::MAX);
    let fourth = u8::try_from(address % 250 + 1).unwrap_or(1);
    Ipv4Addr::new(127, 1, third, fourth)
}

/// Which room each client is in and who sends: structured clients in rooms of
/// `room_size`, the senders the first client of rooms spread evenly; legacy clients all
/// in one room, the senders spread over them.
#[derive(Debug, Clone, Copy)]
struct Layout {
    clients: usize,
    senders: usize,
    room_size: usize,
    legacy: bool,
}

impl Layout {
    fn rooms(&self) -> usize {
        if self.legacy { 1 } else { self.clients.div_ceil(self.room_size.max(1)) }
    }

    /// The room of a client (its number).
    fn room_of(&self, index: usize) -> usize {
        if self.legacy { 0 } else { index / self.room_size.max(1) }
    }

    /// If the client sends: its number among the senders' lines (its room's, for rooms).
    fn sender(&self, index: usize) -> Option<usize> {
        if self.senders == 0 {
            return None;
        }
        if self.legacy {
            let stride = (self.clients / self.senders).max(1);
            return (index.is_multiple_of(stride) && index / stride < self.senders).then_some(index / stride);
        }
        let room = self.room_of(index);
        let spacing = (self.rooms() / self.senders).max(1);
        (index.is_multiple_of(self.room_size.max(1)) && room.is_multiple_of(spacing) && room / spacing < self.senders)
            .then_some(room)
    }
}

/// One sample of the servers.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    survivors_cpu: f64,
    redis_cpu: f64,
    survivors_rss: u64,
}

fn sample(args: &StormArgs) -> Sample {
    Sample {
        at: Instant::now(),
        survivors_cpu: procstat::total_cpu_secs(&args.server_pids),
        redis_cpu: args.redis_pid.map_or(0.0, procstat::cpu_secs),
        survivors_rss: procstat::total_rss_kib(&args.server_pids),
    }
}

/// The busiest second in the samples: CPU % of one core over a sliding 1 s window.
fn peak_pct(samples: &[Sample], cpu: impl Fn(&Sample) -> f64) -> f64 {
    let window = usize::try_from(Duration::from_secs(1).as_millis() / SAMPLE_EVERY.as_millis()).unwrap_or(4);
    samples
        .windows(window + 1)
        .filter_map(|w| {
            let (first, last) = (w.first()?, w.last()?);
            let secs = last.at.duration_since(first.at).as_secs_f64();
            (secs > 0.0).then(|| (cpu(last) - cpu(first)) / secs * 100.0)
        })
        .fold(0.0, f64::max)
}

/// The value by which `percent` % of sorted durations had passed.
fn at_share(sorted_ms: &[f64], percent: usize) -> Option<f64> {
    let rank = (sorted_ms.len() * percent).div_ceil(100).clamp(1, sorted_ms.len().max(1));
    sorted_ms.get(rank - 1).copied()
}

/// Kills the node: SIGKILL, as a crash or an OOM kill would.
async fn kill(pid: u32) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().await?;
    if !status.success() {
        bail!("kill -KILL {pid} failed ({status})");
    }
    Ok(())
}

/// Runs the storm and reports it.
pub async fn run(args: &StormArgs) -> anyhow::Result<StormReport> {
    let layout =
        Layout { clients: args.clients, senders: args.senders, room_size: args.room_size, legacy: args.legacy };
    if args.clients == 0
        || args.room_size == 0
        || args.senders > args.clients
        || (!args.legacy && args.senders > layout.rooms())
    {
        bail!("--clients and --room-size must be at least 1, and --senders at most the clients and the rooms");
    }
    if args.clients / args.per_address.max(1) >= 250 * 255 {
        bail!("--clients / --per-address must stay under 63,750 source addresses");
    }
    let started = Instant::now();
    let every = Duration::from_secs_f64(args.every_secs.max(0.05));
    let (phase_tx, phase) = watch::channel(Phase::Joining);
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(JOINING_AT_ONCE));
    let tasks: Vec<_> = (0..args.clients)
        .map(|index| {
            let plan = Plan {
                index,
                prefix: "storm",
                sending: layout.sender(index).map(|sender| (sender, every)),
                source: Some(source_of(index, args.per_address)),
                legacy: args.legacy,
                room: (!args.legacy).then(|| format!("storm-{}", layout.room_of(index))),
            };
            tokio::spawn(resuming::client(args.url.clone(), plan, phase.clone(), notes_tx.clone(), Some(gate.clone())))
        })
        .collect();
    drop(notes_tx);
    let mut report = StormReport {
        scenario: "storm".into(),
        legacy: args.legacy,
        clients: args.clients,
        senders: args.senders,
        rooms: layout.rooms(),
        ..StormReport::default()
    };

    // Everyone joins (within a bound).
    let mut joined = 0;
    let join_by = started + Duration::from_secs(args.join_secs);
    while joined < args.clients {
        match tokio::time::timeout_at(join_by, notes.recv()).await {
            Ok(Some(Note::Joined)) => joined += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    report.joined_secs = started.elapsed().as_secs_f64();
    if joined < args.clients {
        phase_tx.send_replace(Phase::Over);
        let seen = collect(tasks).await?;
        tally(&mut report, &seen, layout);
        bail!("only {joined} of {} clients joined within {} s:\n{}", args.clients, args.join_secs, report.table());
    }

    // Chat, then the kill; the servers are sampled from a little before it.
    phase_tx.send_replace(Phase::Chatting);
    tokio::time::sleep(Duration::from_secs(args.before_secs)).await;
    let before = sample(args);
    kill(args.kill_pid).await?;
    let killed_at = Instant::now();
    let mut samples = vec![before];
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    let mut away = std::collections::HashMap::new();
    let mut back_ms = Vec::new();
    let bound = killed_at + Duration::from_secs(args.within_secs);
    // The sample at which everyone was back (or the bound passed), and when to stop
    // sampling: a while after it, chatting on.
    let mut storm_end: Option<usize> = None;
    let mut stop_at = None;
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(Note::Dropped(index, at)) => { away.insert(index, at); }
                Some(Note::Back(index, at)) => {
                    if away.remove(&index).is_some() {
                        back_ms.push(at.duration_since(killed_at).as_secs_f64() * 1000.0);
                    }
                }
                Some(Note::Joined) => {}
                None => break,
            },
            _ = ticker.tick() => {
                samples.push(sample(args));
                let now = Instant::now();
                // Drops show within a second of the kill (the kernel closes its sockets).
                let all_back = now > killed_at + Duration::from_secs(1) && away.is_empty() && !back_ms.is_empty();
                if storm_end.is_none() && (all_back || now >= bound) {
                    storm_end = Some(samples.len());
                    stop_at = Some(now + AFTER_STORM);
                }
                if stop_at.is_some_and(|at| now >= at) {
                    break;
                }
            }
        }
    }
    let storm_samples = &samples[..storm_end.unwrap_or(samples.len())];
    // A quiet spell at the end, so that the last lines reach everyone.
    phase_tx.send_replace(Phase::Quiet);
    tokio::time::sleep(QUIET).await;
    phase_tx.send_replace(Phase::Over);
    let seen = collect(tasks).await?;

    back_ms.sort_by(f64::total_cmp);
    report.back = back_ms.len();
    report.dropped = back_ms.len() + away.len();
    report.back_ms_p50 = at_share(&back_ms, 50);
    report.back_ms_p99 = at_share(&back_ms, 99);
    report.back_ms_p100 = if away.is_empty() { back_ms.last().copied() } else { None };
    report.survivor_rss_before_kib = before.survivors_rss;
    report.survivor_rss_peak_kib = samples.iter().map(|s| s.survivors_rss).max().unwrap_or(0);
    report.survivor_cpu_peak_pct = peak_pct(&samples, |s| s.survivors_cpu);
    report.redis_cpu_peak_pct = peak_pct(&samples, |s| s.redis_cpu);
    if let Some(last) = storm_samples.last() {
        (report.survivor_cpu_storm_secs, report.redis_cpu_storm_secs) =
            (last.survivors_cpu - before.survivors_cpu, last.redis_cpu - before.redis_cpu);
    }
    tally(&mut report, &seen, layout);
    Ok(report)
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Seen>>) -> anyhow::Result<Vec<Seen>> {
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        seen.push(task.await.context("a client task failed")?);
    }
    Ok(seen)
}

/// What the clients saw, against the lines anyone in their room saw (`seen` in the
/// clients' order).
fn tally(report: &mut StormReport, seen: &[Seen], layout: Layout) {
    let everything = LineSet::union(seen.iter().map(|s| &s.lines));
    report.lines_sent = seen.iter().map(|s| s.sent).sum();
    report.lines_seen = everything.len();
    if !report.legacy {
        // Each room's lines come from its one sender, whose number is the room's.
        report.lost = seen
            .iter()
            .enumerate()
            .map(|(index, s)| everything.len_of(layout.room_of(index)).saturating_sub(s.lines.len()))
            .sum();
        report.duplicated = seen.iter().map(|s| s.duplicates).sum();
        report.out_of_order = seen.iter().map(|s| s.out_of_order).sum();
        report.resets = seen.iter().map(|s| s.resets).sum();
        report.false_leaves = seen.iter().map(|s| s.false_leaves).sum();
    }
    report.refused = seen.iter().map(|s| s.refused.len()).sum();
    report.in_doubt = seen.iter().map(|s| s.in_doubt).sum();
    report.failed_attempts = seen.iter().map(|s| s.failed_attempts).sum();
    report.first_error = seen.iter().find_map(|s| s.first_error.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_over_source_addresses() {
        assert_eq!(source_of(0, 10), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_of(9, 10), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_of(10, 10), Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(source_of(2_500, 10), Ipv4Addr::new(127, 1, 1, 1));
    }

    #[test]
    fn senders_are_the_first_clients_of_rooms_spread_evenly() {
        let rooms = Layout { clients: 10_000, senders: 10, room_size: 100, legacy: false };
        assert_eq!(rooms.rooms(), 100);
        let senders: Vec<_> = (0..10_000).filter_map(|i| rooms.sender(i).map(|s| (i, s))).collect();
        assert_eq!(senders.len(), 10);
        assert_eq!((senders[0], senders[1], senders[9]), ((0, 0), (1_000, 10), (9_000, 90)));
        assert_eq!((rooms.room_of(99), rooms.room_of(100)), (0, 1));
        let legacy = Layout { legacy: true, ..rooms };
        assert_eq!((legacy.rooms(), legacy.room_of(9_999)), (1, 0));
        let senders: Vec<_> = (0..10_000).filter_map(|i| legacy.sender(i)).collect();
        assert_eq!(senders, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn shares_of_the_back_times_are_read_off_the_sorted_list() {
        let ms: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(at_share(&ms, 50), Some(50.0));
        assert_eq!(at_share(&ms, 99), Some(99.0));
        assert_eq!(at_share(&ms, 100), Some(100.0));
        assert_eq!(at_share(&[3.0], 50), Some(3.0));
        assert_eq!(at_share(&[], 50), None);
    }

    #[test]
    fn the_busiest_second_is_found_in_the_samples() {
        let start = Instant::now();
        let samples: Vec<Sample> = (0..9u32)
            .map(|i| Sample {
                at: start + SAMPLE_EVERY * i,
                // Half a core for the first second, then a whole one.
                survivors_cpu: if i <= 4 { f64::from(i) * 0.125 } else { 0.5 + f64::from(i - 4) * 0.25 },
                redis_cpu: 0.0,
                survivors_rss: 0,
            })
            .collect();
        let peak = peak_pct(&samples, |s| s.survivors_cpu);
        assert!((peak - 100.0).abs() < 1e-6, "{peak}");
    }
}

//! The `rooms` scenario: many rooms of a few members each, one sender per room, with an
//! optional busy room beside them; every member checks every line of its room (once, in
//! order, none of another room) and the latency of each.
//!
//! Members are version 2 chatroom clients, each in one room; members of a room are
//! spread over the URLs in turn, so a room spans the nodes.

use crate::fanout::{PerSender, elapsed_micros, new_histogram};
use crate::link::{Incoming, Link};
use app::protocol::{ClientEvent, Notice, RoomLine, Say, ServerEvent};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Handshakes in flight at once while the members connect.
const CONNECTING_AT_ONCE: usize = 200;
/// How long one member may take to connect and be in its room.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long members keep listening after the last line was sent.
const DRAIN: Duration = Duration::from_secs(3);
/// The busy room's name.
const BUSY: &str = "busy";

/// `rooms`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct RoomsArgs {
    /// A server's base URL (repeat it: each room's members are spread over the URLs).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Quiet rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Members of each quiet room (one of them sends).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Lines a second in each quiet room.
    #[arg(long, default_value_t = 1.0)]
    pub rate_per_room: f64,
    /// Members of the busy room (0: no busy room).
    #[arg(long, default_value_t = 0)]
    pub busy_members: usize,
    /// Lines a second in the busy room.
    #[arg(long, default_value_t = 10.0)]
    pub busy_rate: f64,
    /// How long the senders send.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub rooms: usize,
    pub members: usize,
    pub busy_members: usize,
    pub clients: usize,
    pub duration_secs: u64,
    pub connect_failures: usize,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub wrong_room: u64,
    pub disconnects: usize,
    pub deliveries_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub busy_latency_ms_p50: f64,
    pub busy_latency_ms_p99: f64,
}

impl Report {
    /// Nothing lost, duplicated, reordered, misdelivered or dropped.
    pub fn clean(&self) -> bool {
        self.connect_failures == 0
            && self.missing == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.wrong_room == 0
            && self.disconnects == 0
    }

    /// A table for people.
    pub fn table(&self) -> String {
        format!(
            "rooms: {} quiet rooms of {} members, busy room of {} members; {} clients for {} s\n\
             sent {:>9}   expected {:>10}   received {:>10}\n\
             missing {:>6}   duplicates {:>6}   order violations {:>4}   wrong room {:>4}   disconnects {}   connect failures {}\n\
             deliveries/s {:>8.0}   latency ms p50 {:.2}  p99 {:.2}  max {:.2}   busy room p50 {:.2}  p99 {:.2}",
            self.rooms,
            self.members,
            self.busy_members,
            self.clients,
            self.duration_secs,
            self.sent,
            self.expected,
            self.received,
            self.missing,
            self.duplicates,
            self.order_violations,
            self.wrong_room,
            self.disconnects,
            self.connect_failures,
            self.deliveries_per_sec,
            self.latency_ms_p50,
            self.latency_ms_p99,
            self.latency_ms_max,
            self.busy_latency_ms_p50,
            self.busy_latency_ms_p99,
        )
    }
}

/// One member: its room, whether it sends, and at what interval.
#[derive(Debug, Clone)]
struct Member {
    room: String,
    index: usize,
    sends_every: Option<Duration>,
    busy: bool,
}

/// What one member saw.
#[derive(Debug, Default)]
struct Seen {
    room: String,
    sent: u64,
    received: u64,
    duplicates: u64,
    order_violations: u64,
    wrong_room: u64,
    disconnected: bool,
}

/// A benchmark line: `r <seq> <micros since the run's start>`.
fn line_text(seq: u64, micros: u64) -> String {
    format!("r {seq} {micros}")
}

/// Reads a benchmark line's sequence number and time.
fn parse_line(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.strip_prefix("r ")?.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Latencies of the whole run and of the busy room alone.
struct Latencies {
    all: Mutex<Histogram<u64>>,
    busy: Mutex<Histogram<u64>>,
}

/// The members of every room: quiet rooms `q0`, `q1`, … and the busy room.
fn members(args: &RoomsArgs) -> Vec<Member> {
    let quiet_every = Duration::from_secs_f64(1.0 / args.rate_per_room.max(0.000_1));
    let busy_every = Duration::from_secs_f64(1.0 / args.busy_rate.max(0.000_1));
    let mut all = Vec::new();
    for room in 0..args.rooms {
        for member in 0..args.members.max(1) {
            let sends_every = (member == 0).then_some(quiet_every);
            all.push(Member { room: format!("q{room}"), index: all.len(), sends_every, busy: false });
        }
    }
    for member in 0..args.busy_members {
        let sends_every = (member == 0).then_some(busy_every);
        all.push(Member { room: BUSY.to_owned(), index: all.len(), sends_every, busy: true });
    }
    all
}

/// Connects every member, runs, and tallies what every member received.
pub async fn run(args: &RoomsArgs) -> anyhow::Result<Report> {
    let members = members(args);
    let clients = members.len();
    let start = Instant::now();
    let latencies = Arc::new(Latencies { all: Mutex::new(new_histogram()?), busy: Mutex::new(new_histogram()?) });
    let (go, go_rx) = watch::channel(None::<(Instant, Instant)>);
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(clients);
    let (seen_tx, mut seen_rx) = mpsc::channel::<Seen>(clients);
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut tasks = Vec::with_capacity(clients);
    for member in members {
        let url = args.urls[member.index % args.urls.len()].clone();
        let (gate, ready, seen, go, latencies) =
            (gate.clone(), ready_tx.clone(), seen_tx.clone(), go_rx.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let link = {
                let _permit = gate.acquire().await;
                tokio::time::timeout(CONNECT_TIMEOUT, connect(&url, &member))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("not in its room within {CONNECT_TIMEOUT:?}")))
            };
            let _ = ready.send(link.is_ok()).await;
            if let Ok(link) = link {
                let outcome = serve(link, &member, go, start, &latencies).await;
                let _ = seen.send(outcome).await;
            }
        }));
    }
    drop((ready_tx, seen_tx));
    let mut connect_failures = 0;
    for _ in 0..clients {
        if !ready_rx.recv().await.unwrap_or(false) {
            connect_failures += 1;
        }
    }
    let duration = Duration::from_secs(args.duration_secs);
    let begin = Instant::now() + Duration::from_millis(500);
    go.send_replace(Some((begin, begin + duration)));
    let mut seen = Vec::with_capacity(clients);
    while let Some(outcome) = seen_rx.recv().await {
        seen.push(outcome);
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut sent_in: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for outcome in &seen {
        *sent_in.entry(outcome.room.as_str()).or_default() += outcome.sent;
    }
    let expected: u64 = seen.iter().map(|s| sent_in.get(s.room.as_str()).copied().unwrap_or(0)).sum();
    let received: u64 = seen.iter().map(|s| s.received).sum();
    let duplicates: u64 = seen.iter().map(|s| s.duplicates).sum();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let (all, busy) = (latencies.all.lock(), latencies.busy.lock());
    Ok(Report {
        scenario: "rooms",
        rooms: args.rooms,
        members: args.members,
        busy_members: args.busy_members,
        clients,
        duration_secs: args.duration_secs,
        connect_failures,
        sent: sent_in.values().sum(),
        expected,
        received,
        missing: expected.saturating_sub(received - duplicates),
        duplicates,
        order_violations: seen.iter().map(|s| s.order_violations).sum(),
        wrong_room: seen.iter().map(|s| s.wrong_room).sum(),
        disconnects: seen.iter().filter(|s| s.disconnected).count(),
        deliveries_per_sec: received as f64 / duration.as_secs_f64().max(0.001),
        latency_ms_p50: ms(all.value_at_quantile(0.50)),
        latency_ms_p99: ms(all.value_at_quantile(0.99)),
        latency_ms_max: ms(all.max()),
        busy_latency_ms_p50: ms(busy.value_at_quantile(0.50)),
        busy_latency_ms_p99: ms(busy.value_at_quantile(0.99)),
    })
}

/// Connects one member into its room (a sender with a name) and waits until it is there.
async fn connect(url: &str, member: &Member) -> anyhow::Result<Link> {
    let mut auth =
        json!({"v": 2, "key": format!("bench-member-{:08}", member.index), "after": {member.room.clone(): null}});
    if member.sends_every.is_some() {
        auth["name"] = json!(format!("m{}", member.index));
    }
    let mut link = Link::connect_with_auth(url, auth).await?;
    let (mut named, mut in_room) = (member.sends_every.is_none(), false);
    while !(named && in_room) {
        match link.next().await? {
            Incoming::Event(ServerEvent::Notice(Notice::NameSet { .. })) => named = true,
            Incoming::Event(ServerEvent::Presence(_)) => in_room = true,
            Incoming::Event(ServerEvent::Notice(Notice::Refused { text, .. })) => anyhow::bail!("refused: {text}"),
            Incoming::Closed(reason) => anyhow::bail!("closed while joining: {reason}"),
            _ => {}
        }
    }
    Ok(link)
}

/// Sends (for its room's sender) and receives from the start signal to its end.
async fn serve(
    mut link: Link,
    member: &Member,
    mut go: watch::Receiver<Option<(Instant, Instant)>>,
    start: Instant,
    latencies: &Latencies,
) -> Seen {
    let mut seen = Seen { room: member.room.clone(), ..Seen::default() };
    // Waiting for the others, it still answers heartbeats (engineioxide pings as a
    // socket opens and closes it if no answer comes within 20 s).
    let (begin, end) = loop {
        if let Some(window) = *go.borrow_and_update() {
            break window;
        }
        tokio::select! {
            // The start, once given, before any line: a line read here would be lost.
            biased;
            changed = go.changed() => if changed.is_err() {
                return seen;
            },
            incoming = link.next() => if matches!(incoming, Ok(Incoming::Closed(_)) | Err(_)) {
                seen.disconnected = true;
                return seen;
            }
        }
    };
    let every = member.sends_every.unwrap_or(Duration::from_secs(3_600));
    // Senders start spread over one interval, not all in the same instant.
    let offset = every.mul_f64((member.index as f64 * 0.618_034) % 1.0);
    let mut ticks = tokio::time::interval_at(begin + offset, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let deadline = tokio::time::sleep_until(end + DRAIN);
    tokio::pin!(deadline);
    let mut order = PerSender::default();
    let mut sending = member.sends_every.is_some();
    loop {
        tokio::select! {
            () = &mut deadline => break,
            now = ticks.tick(), if sending => {
                if now >= end {
                    sending = false;
                    continue;
                }
                let text = line_text(seen.sent, elapsed_micros(start));
                if link.emit(&ClientEvent::Say(Say { room: member.room.clone(), text })).await.is_err() {
                    seen.disconnected = true;
                    break;
                }
                seen.sent += 1;
            }
            incoming = link.next() => match incoming {
                Ok(Incoming::Event(ServerEvent::Line(RoomLine { room, event: app::protocol::RoomEvent::Chat { text, .. }, .. }))) => {
                    if room.as_ref().map(app::protocol::RoomName::as_str) != Some(member.room.as_str()) {
                        seen.wrong_room += 1;
                        continue;
                    }
                    let Some((seq, micros)) = parse_line(&text) else { continue };
                    seen.received += 1;
                    let latency = elapsed_micros(start).saturating_sub(micros).max(1);
                    latencies.all.lock().saturating_record(latency);
                    if member.busy {
                        latencies.busy.lock().saturating_record(latency);
                    }
                    let (duplicate, out_of_order) = order.record(seq);
                    seen.duplicates += u64::from(duplicate);
                    seen.order_violations += u64::from(out_of_order);
                }
                Ok(Incoming::Closed(_)) | Err(_) => {
                    seen.disconnected = true;
                    break;
                }
                Ok(_) => {}
            },
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_rooms_are_laid_out() {
        assert_eq!(parse_line(&line_text(41, 123_456)), Some((41, 123_456)));
        assert_eq!(parse_line("hello"), None);
        let args = RoomsArgs {
            urls: vec!["http://127.0.0.1:1".into()],
            rooms: 3,
            members: 4,
            rate_per_room: 1.0,
            busy_members: 5,
            busy_rate: 10.0,
            duration_secs: 1,
        };
        let all = members(&args);
        assert_eq!(all.len(), 17);
        assert_eq!(all.iter().filter(|m| m.sends_every.is_some()).count(), 4, "one sender a room");
        assert_eq!(all.iter().filter(|m| m.busy).count(), 5);
        assert_eq!(all[4].room, "q1");
    }
}

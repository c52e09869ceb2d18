//! The soak scenario: chatroom clients (a client key each, as the page has) chat for a
//! long while through a load balancer while faults happen around them (`scripts/soak.sh`
//! makes them). Every client resumes after any disconnect, as the page does: a jittered
//! backoff, then its last position and name in the CONNECT auth. Every client checks
//! every line; at the end the lines anyone saw are compared with what each one saw.
//!
//! Senders send one line at a time and wait for its answer (their own line back, or a
//! refusal), so each line's fate is known to its sender: a refused line must reach no one.

use anyhow::{Context, bail};
use app::protocol::session::{Backoff, ClientSession, Step};
use app::protocol::{
    After, BacklogKind, ClientAuth, ClientEvent, Notice, Position, Presented, RoomEvent, RoomLine, ServerEvent,
};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

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

/// One line: its sender's index and its number.
type LineId = (usize, u64);

/// What one client saw and did.
#[derive(Debug, Default)]
struct Seen {
    lines: BTreeSet<LineId>,
    duplicates: u64,
    out_of_order: u64,
    resets: u64,
    false_leaves: u64,
    reconnects: u64,
    /// Lines of this client that were refused (it was told so).
    refused: BTreeSet<LineId>,
    /// Lines of this client whose answer never came (its connection dropped meanwhile).
    in_doubt: u64,
    sent: u64,
}

/// The report of a soak run.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    clients: usize,
    senders: usize,
    lines_sent: u64,
    lines_seen: usize,
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
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration_secs);
    // Everyone joins first; the senders start a few seconds in and stop a while before
    // the end, so that their last lines reach everyone.
    let quarter = Duration::from_secs(args.duration_secs) / 4;
    let send_from = started + quarter.min(Duration::from_secs(5));
    let send_until = end - quarter.min(Duration::from_secs(10));
    let every = Duration::from_secs_f64(args.every_secs.max(0.05));
    let tasks: Vec<_> = (0..args.clients)
        .map(|index| {
            let url = args.url.clone();
            let sending = (index < args.senders).then_some((send_from, send_until, every));
            tokio::spawn(async move { client(&url, index, sending, end).await })
        })
        .collect();
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        seen.push(task.await.context("a client task failed")?);
    }
    Ok(compare(args, &seen))
}

fn compare(args: &SoakArgs, seen: &[Seen]) -> SoakReport {
    let everything: BTreeSet<LineId> = seen.iter().flat_map(|s| s.lines.iter().copied()).collect();
    let refused: BTreeSet<LineId> = seen.iter().flat_map(|s| s.refused.iter().copied()).collect();
    SoakReport {
        clients: args.clients,
        senders: args.senders,
        lines_sent: seen.iter().map(|s| s.sent).sum(),
        lines_seen: everything.len(),
        lost: seen.iter().map(|s| (everything.len() - s.lines.len()) as u64).sum(),
        duplicated: seen.iter().map(|s| s.duplicates).sum(),
        out_of_order: seen.iter().map(|s| s.out_of_order).sum(),
        refused: refused.len(),
        refused_but_delivered: refused.intersection(&everything).count(),
        in_doubt: seen.iter().map(|s| s.in_doubt).sum(),
        resets: seen.iter().map(|s| s.resets).sum(),
        false_leaves: seen.iter().map(|s| s.false_leaves).sum(),
        reconnects: seen.iter().map(|s| s.reconnects).sum(),
    }
}

/// The name of client `index`.
fn name_of(index: usize) -> String {
    format!("soak{index}")
}

/// One client for the whole run: connects, resumes after every disconnect, and keeps
/// what it saw.
async fn client(url: &str, index: usize, sending: Option<(Instant, Instant, Duration)>, end: Instant) -> Seen {
    let key = format!("soak-{index:04}-0123456789abcdef");
    let mut state = State { index, seen: Seen::default(), last: HashMap::new(), after: None, next_seq: 0 };
    let mut backoff = Backoff::default();
    let mut first = true;
    while Instant::now() < end {
        if !first {
            state.seen.reconnects += 1;
            let delay = backoff.next_delay_ms(f64::from(u32::try_from(index % 97).unwrap_or(0)) / 97.0);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        first = false;
        let auth = ClientAuth {
            after: state.after.map(|pos| After::One(Presented::Valid(pos))),
            name: Some(name_of(index)),
            key: key.parse().ok().map(Presented::Valid),
            ..ClientAuth::v1()
        };
        match session(url, &auth, &mut state, sending, end).await {
            // It was online: the next disconnect starts the backoff over.
            Ok(true) => backoff.reset(),
            Ok(false) => {}
            Err(err) => eprintln!("soak client {index}: {err:#}"),
        }
    }
    state.seen
}

/// What a client carries from one connection to the next.
struct State {
    index: usize,
    seen: Seen,
    /// The newest line number seen of each sender.
    last: HashMap<usize, u64>,
    /// The position of the newest room event seen.
    after: Option<Position>,
    next_seq: u64,
}

impl State {
    fn line(&mut self, line: RoomLine) {
        self.after = Some(line.pos);
        match line.event {
            RoomEvent::Chat { author, text } => {
                let (Some(sender), Ok(seq)) = (author.strip_prefix("soak").and_then(|n| n.parse().ok()), text.parse())
                else {
                    return;
                };
                if !self.seen.lines.insert((sender, seq)) {
                    self.seen.duplicates += 1;
                } else if self.last.get(&sender).is_some_and(|last| *last > seq) {
                    self.seen.out_of_order += 1;
                }
                let last = self.last.entry(sender).or_insert(seq);
                *last = (*last).max(seq);
            }
            // Every soak client comes back within the grace period: a leave is false.
            RoomEvent::Left { author } if author.starts_with("soak") => self.seen.false_leaves += 1,
            RoomEvent::Left { .. }
            | RoomEvent::Joined { .. }
            | RoomEvent::Renamed { .. }
            | RoomEvent::Deleted { .. } => {}
        }
    }
}

/// One connection: until it drops or the run ends. Whether it got online.
async fn session(
    url: &str,
    auth: &ClientAuth,
    state: &mut State,
    sending: Option<(Instant, Instant, Duration)>,
    end: Instant,
) -> anyhow::Result<bool> {
    let ws_url = crate::link::socket_url(url);
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(ws_url))
        .await
        .context("connect")??;
    let mut session = ClientSession::with_auth(serde_json::to_value(auth)?);
    let mut online = false;
    // The line of ours that waits for its answer, and when the next may go.
    let mut outstanding: Option<u64> = None;
    let mut next_send = Instant::now();
    let mut joined = false;
    loop {
        let can_send = joined
            && outstanding.is_none()
            && sending.is_some_and(|(from, until, _)| {
                let now = Instant::now();
                now >= from && now < until
            });
        let wake =
            if can_send { next_send.max(Instant::now()) } else { end.min(Instant::now() + Duration::from_secs(1)) };
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(err).context("receive").map(|()| online),
                };
                match session.on_frame(text.as_str()).context("a frame")? {
                    Step::Reply(reply) => ws.send(Message::text(reply)).await.context("reply")?,
                    Step::Online => online = true,
                    Step::Event(ServerEvent::Backlog(backlog)) => {
                        if backlog.kind == BacklogKind::Reset {
                            state.seen.resets += 1;
                        }
                        for line in backlog.lines {
                            state.line(line);
                        }
                        joined = true;
                    }
                    Step::Event(ServerEvent::Line(line)) => {
                        let own = matches!(&line.event, RoomEvent::Chat { author, text }
                            if *author == name_of(state.index) && Some(text.as_str()) == outstanding.map(|s| s.to_string()).as_deref());
                        state.line(line);
                        if own {
                            outstanding = None;
                        }
                    }
                    Step::Event(ServerEvent::Notice(Notice::Refused { .. })) => {
                        if let Some(seq) = outstanding.take() {
                            state.seen.refused.insert((state.index, seq));
                        }
                    }
                    Step::Closed(_) => break,
                    Step::Event(_) | Step::Idle => {}
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= end {
                    break;
                }
                if can_send && let Some((_, _, every)) = sending {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    ws.send(Message::text(app::protocol::codec::encode_event(&ClientEvent::Message(seq.to_string()))?))
                        .await
                        .context("send")?;
                    state.seen.sent += 1;
                    outstanding = Some(seq);
                    next_send = Instant::now() + every;
                }
            }
        }
    }
    if outstanding.is_some() {
        state.seen.in_doubt += 1;
    }
    Ok(online)
}

//! A chat client that comes back after every disconnect, as the page does: a jittered
//! backoff, then (structured protocol) its last position, name and client key in the
//! CONNECT auth, so that its `resume` backlog fills the gap. It is in the lobby
//! (version 1) or in one room of its own choosing (version 2). It checks every line it gets
//! and tells the scenario when it lost its connection and when it was back. The `soak`
//! and `storm` scenarios are made of these.
//!
//! Invariant: a client's record of lines only grows, one bit per (sender, line number),
//! so that what 10,000 clients saw fits in a few MB and the union of all of them is what
//! every one of them should have seen.

use crate::link;
use anyhow::Context;
use app::protocol::session::{Backoff, ClientSession, Step};
use app::protocol::{
    After, BacklogKind, ClientAuth, ClientEvent, Notice, Position, Presented, RoomEvent, RoomLine, Say, ServerEvent,
};
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What every client is to do now; the scenario moves it forward, never back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Connect and join; nobody sends yet.
    Joining,
    /// Senders send.
    Chatting,
    /// Senders stop; the last lines reach everyone.
    Quiet,
    /// Close and report.
    Over,
}

/// How one client is set up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The client's number; its name is `prefix` and this number.
    pub index: usize,
    /// The start of every client's name.
    pub prefix: &'static str,
    /// If it sends: its number among the senders and the time between two of its lines.
    pub sending: Option<(usize, Duration)>,
    /// The loopback address it connects from (the system's choice when `None`).
    pub source: Option<Ipv4Addr>,
    /// A client of the legacy contract: no resume, no line checks, only reconnects.
    pub legacy: bool,
    /// The room it is in, as a version 2 client; `None`: the lobby, as version 1.
    pub room: Option<String>,
}

impl Plan {
    fn name(&self) -> String {
        format!("{}{}", self.prefix, self.index)
    }
}

/// What a client tells the scenario as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Note {
    /// A client joined for the first time.
    Joined,
    /// Its connection ended (not at the end of the run).
    Dropped(usize, Instant),
    /// It is back after a drop: its backlog (or, legacy, its CONNECT) came.
    Back(usize, Instant),
}

/// The lines of every sender, a bit per line number.
#[derive(Debug, Default, Clone)]
pub struct LineSet(Vec<Vec<u64>>);

impl LineSet {
    /// Adds a line; whether it was new.
    fn insert(&mut self, sender: usize, seq: u64) -> bool {
        if self.0.len() <= sender {
            self.0.resize(sender + 1, Vec::new());
        }
        let words = &mut self.0[sender];
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if words.len() <= word {
            words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = words[word] & bit == 0;
        words[word] |= bit;
        new
    }

    /// Whether a line is in the set.
    pub fn contains(&self, (sender, seq): LineId) -> bool {
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        self.0.get(sender).and_then(|words| words.get(word)).is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// How many lines of one sender the set holds.
    pub fn len_of(&self, sender: usize) -> u64 {
        self.0.get(sender).map_or(0, |words| words.iter().map(|w| u64::from(w.count_ones())).sum())
    }

    /// How many lines the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().flatten().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Every line in either set.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut all = Self::default();
        for set in sets {
            if all.0.len() < set.0.len() {
                all.0.resize(set.0.len(), Vec::new());
            }
            for (mine, theirs) in all.0.iter_mut().zip(&set.0) {
                if mine.len() < theirs.len() {
                    mine.resize(theirs.len(), 0);
                }
                for (m, t) in mine.iter_mut().zip(theirs) {
                    *m |= t;
                }
            }
        }
        all
    }
}

/// One line: its sender's number among the senders and its number.
pub type LineId = (usize, u64);

/// What one client saw and did.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every line it saw.
    pub lines: LineSet,
    /// Lines it saw again.
    pub duplicates: u64,
    /// Lines that came after a later line of the same sender.
    pub out_of_order: u64,
    /// Backlogs that were a reset (the gap was not filled).
    pub resets: u64,
    /// Leaves announced of clients of this run (they all come back within the grace).
    pub false_leaves: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// Connection attempts that failed, and the first such error.
    pub failed_attempts: u64,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Lines of this client that were refused (it was told so).
    pub refused: Vec<LineId>,
    /// Lines of this client whose answer never came (its connection dropped meanwhile).
    pub in_doubt: u64,
    /// Lines it sent.
    pub sent: u64,
    /// The newest line number seen of each sender.
    last: Vec<Option<u64>>,
}

impl Seen {
    fn record(&mut self, sender: usize, seq: u64) {
        if !self.lines.insert(sender, seq) {
            self.duplicates += 1;
            return;
        }
        if self.last.len() <= sender {
            self.last.resize(sender + 1, None);
        }
        let last = &mut self.last[sender];
        if last.is_some_and(|last| last > seq) {
            self.out_of_order += 1;
        }
        *last = Some(last.map_or(seq, |last| last.max(seq)));
    }
}

/// The text of a sender's line: its number among the senders, then the line's.
fn line_text(sender: usize, seq: u64) -> String {
    format!("{sender}.{seq}")
}

fn parse_line_text(text: &str) -> Option<LineId> {
    let (sender, seq) = text.split_once('.')?;
    Some((sender.parse().ok()?, seq.parse().ok()?))
}

/// A cheap, repeatable source of jitter per client (splitmix64): the clients must not
/// all come back in step, and the run must not depend on a random crate.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a client carries from one connection to the next.
struct State {
    plan: Plan,
    seen: Seen,
    /// The position of the newest room event seen.
    after: Option<Position>,
    next_seq: u64,
    /// It has joined once.
    joined: bool,
    /// Its connection dropped and it is not back yet.
    away: bool,
}

impl State {
    fn line(&mut self, line: RoomLine) {
        self.after = Some(line.pos);
        match line.event {
            RoomEvent::Chat { text, .. } => {
                if let Some((sender, seq)) = parse_line_text(&text) {
                    self.seen.record(sender, seq);
                }
            }
            RoomEvent::Left { author } if author.starts_with(self.plan.prefix) => self.seen.false_leaves += 1,
            RoomEvent::Left { .. }
            | RoomEvent::Joined { .. }
            | RoomEvent::Renamed { .. }
            | RoomEvent::Deleted { .. } => {}
        }
    }

    fn auth(&self) -> anyhow::Result<serde_json::Value> {
        let key = format!("{}-{:05}-0123456789abcdef", self.plan.prefix, self.plan.index);
        let seen = self.after.map(Presented::Valid);
        let (after, base) = match &self.plan.room {
            // Version 2: in its room at once, after what it saw there (the history at first).
            Some(room) => (Some(After::PerRoom(BTreeMap::from([(room.clone(), seen)]))), ClientAuth::new()),
            None => (seen.map(After::One), ClientAuth::v1()),
        };
        let auth =
            ClientAuth { after, name: Some(self.plan.name()), key: key.parse().ok().map(Presented::Valid), ..base };
        Ok(serde_json::to_value(auth)?)
    }
}

/// Waits until the phase is at least `at` (or the scenario is gone).
async fn reach(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|now| *now >= at).await;
}

/// One client for the whole run: connects (its first connection through `gate`, so a
/// scenario can pace the first wave), comes back after every disconnect, and keeps what
/// it saw.
pub async fn client(
    url: String,
    plan: Plan,
    mut phase: watch::Receiver<Phase>,
    notes: mpsc::UnboundedSender<Note>,
    gate: Option<Arc<Semaphore>>,
) -> Seen {
    let mut jitter = Jitter(u64::try_from(plan.index).unwrap_or(u64::MAX));
    let mut state = State { plan, seen: Seen::default(), after: None, next_seq: 0, joined: false, away: false };
    let mut backoff = Backoff::default();
    let mut first = true;
    while *phase.borrow() < Phase::Over {
        if !first {
            state.seen.reconnects += 1;
            let delay = Duration::from_millis(backoff.next_delay_ms(jitter.next()));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = reach(&mut phase, Phase::Over) => break,
            }
        }
        let permit = match (&gate, first) {
            (Some(gate), true) => gate.clone().acquire_owned().await.ok(),
            _ => None,
        };
        first = false;
        match session(&url, &mut state, &mut phase, &notes, permit).await {
            // It was online: the next disconnect starts the backoff over.
            Ok(true) => backoff.reset(),
            Ok(false) => {}
            Err(err) => {
                state.seen.failed_attempts += 1;
                state.seen.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
        if *phase.borrow() < Phase::Over && state.joined && !state.away {
            state.away = true;
            let _ = notes.send(Note::Dropped(state.plan.index, Instant::now()));
        }
    }
    state.seen
}

/// One connection: until it drops or the run ends. Whether it got online.
async fn session(
    url: &str,
    state: &mut State,
    phase: &mut watch::Receiver<Phase>,
    notes: &mpsc::UnboundedSender<Note>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> anyhow::Result<bool> {
    let mut ws = tokio::time::timeout(Duration::from_secs(10), link::websocket(url, state.plan.source))
        .await
        .context("connect: no answer in 10 s")??;
    let mut session = if state.plan.legacy { ClientSession::new() } else { ClientSession::with_auth(state.auth()?) };
    let name = state.plan.name();
    let mut online = false;
    // Joined on this connection: its backlog came (legacy: online, and a sender named).
    let mut ready = false;
    let mut permit = permit;
    // The line of ours that waits for its answer, and when the next may go.
    let mut outstanding: Option<String> = None;
    let mut jitter = Jitter(u64::try_from(state.plan.index).unwrap_or(0) ^ state.next_seq);
    let mut next_send =
        state.plan.sending.map_or_else(Instant::now, |(_, every)| Instant::now() + every.mul_f64(jitter.next()));
    loop {
        let can_send =
            ready && outstanding.is_none() && state.plan.sending.is_some() && *phase.borrow() == Phase::Chatting;
        let wake = if can_send { next_send } else { Instant::now() + Duration::from_secs(3600) };
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    // A connection that was online and broke (its node died) is a drop, not
                    // a failed attempt.
                    Some(Err(_)) if online => break,
                    Some(Err(err)) => return Err(err).context("receive"),
                };
                let was_ready = ready;
                match session.on_frame(text.as_str()).context("a frame")? {
                    Step::Reply(reply) => ws.send(Message::text(reply)).await.context("reply")?,
                    Step::Online => {
                        online = true;
                        if state.plan.legacy {
                            if state.plan.sending.is_some() {
                                ws.send(Message::text(app::protocol::codec::encode_event(
                                    &ClientEvent::SetUsername(name.clone()),
                                )?))
                                .await
                                .context("set_username")?;
                            } else {
                                ready = true;
                            }
                        }
                    }
                    Step::Event(ServerEvent::Message(text)) => {
                        if state.plan.legacy && text == format!("Your username is set to {name}") {
                            ready = true;
                        }
                    }
                    Step::Event(ServerEvent::Backlog(backlog)) => {
                        if backlog.kind == BacklogKind::Reset {
                            state.seen.resets += 1;
                        }
                        for line in backlog.lines {
                            state.line(line);
                        }
                        if !ready && state.away {
                            let _ = notes.send(Note::Back(state.plan.index, Instant::now()));
                        }
                        ready = true;
                    }
                    Step::Event(ServerEvent::Line(line)) => {
                        let own = matches!(&line.event, RoomEvent::Chat { author, text }
                            if *author == name && outstanding.as_deref() == Some(text.as_str()));
                        state.line(line);
                        if own {
                            outstanding = None;
                        }
                    }
                    Step::Event(ServerEvent::Notice(Notice::Refused { .. })) => {
                        if let (Some(text), Some((sender, _))) = (outstanding.take(), state.plan.sending)
                            && let Some((_, seq)) = parse_line_text(&text)
                        {
                            state.seen.refused.push((sender, seq));
                        }
                    }
                    Step::Closed(_) => break,
                    Step::Event(_) | Step::Idle => {}
                }
                if ready && !was_ready {
                    // The first wave's next client may start its handshake.
                    permit = None;
                    if state.plan.legacy && state.away {
                        let _ = notes.send(Note::Back(state.plan.index, Instant::now()));
                    }
                    if !state.joined {
                        state.joined = true;
                        let _ = notes.send(Note::Joined);
                    }
                    state.away = false;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some((sender, every)) = state.plan.sending {
                    let text = line_text(sender, state.next_seq);
                    state.next_seq += 1;
                    let event = match &state.plan.room {
                        Some(room) => ClientEvent::Say(Say { room: room.clone(), text: text.clone() }),
                        None => ClientEvent::Message(text.clone()),
                    };
                    ws.send(Message::text(app::protocol::codec::encode_event(&event)?)).await.context("send")?;
                    state.seen.sent += 1;
                    // The legacy contract has no answer to wait for.
                    outstanding = (!state.plan.legacy).then_some(text);
                    next_send = Instant::now() + every;
                }
            }
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == Phase::Over {
                    break;
                }
            }
        }
    }
    drop(permit);
    if outstanding.is_some() {
        state.seen.in_doubt += 1;
    }
    Ok(online)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sets_count_each_line_once_and_unite() {
        let mut a = LineSet::default();
        assert!(a.insert(0, 3));
        assert!(!a.insert(0, 3));
        assert!(a.insert(2, 130));
        let mut b = LineSet::default();
        b.insert(0, 4);
        b.insert(0, 3);
        let all = LineSet::union([&a, &b]);
        assert_eq!((a.len(), b.len(), all.len()), (2, 2, 3));
        assert_eq!((all.len_of(0), all.len_of(1), all.len_of(2), all.len_of(9)), (2, 0, 1, 0));
        assert!(all.contains((2, 130)) && all.contains((0, 4)) && !all.contains((1, 0)));
    }

    #[test]
    fn a_client_counts_duplicates_and_lines_out_of_order() {
        let mut seen = Seen::default();
        for (sender, seq) in [(0, 0), (0, 2), (0, 1), (0, 2), (1, 0)] {
            seen.record(sender, seq);
        }
        assert_eq!((seen.lines.len(), seen.duplicates, seen.out_of_order), (4, 1, 1));
    }

    #[test]
    fn line_texts_say_their_sender_and_number() {
        assert_eq!(parse_line_text(&line_text(7, 42)), Some((7, 42)));
        assert_eq!(parse_line_text("hello"), None);
    }

    #[test]
    fn jitter_stays_in_its_range_and_differs_between_clients() {
        let (mut a, mut b) = (Jitter(1), Jitter(2));
        let (x, y) = (a.next(), b.next());
        assert!((0.0..1.0).contains(&x) && (0.0..1.0).contains(&y) && x != y);
    }
}

//! One connection of this node as delivery sees it: who it belongs to, the name it posts
//! under, the rooms it is in, and where a chatroom client stands in each room's order.
//!
//! Invariant (the backlog/live seam), in each room: a chatroom client is sent every room
//! event after its backlog exactly once and in order. While its backlog is read, live events for it
//! are held; once the backlog is sent, the held ones it did not contain follow. Positions
//! are totally ordered, so "did not contain" is "newer than the last one sent". Held
//! events are bounded: past the bound they are dropped and the client is started over
//! with a `reset` instead.

use super::inbox::{EventQueue, Inbound, NotQueued};
use super::outbox::Outbox;
use crate::addresses::ClientAddr;
use crate::backend::{Delivered, SessionId, UserId};
use crate::backlog::MAX_BACKLOG_BYTES;
use crate::metrics::ClientLabels;
use app::protocol::{
    BACKLOG, Backlog, BacklogKind, LINE, MESSAGE, Notice, PRESENCE, Position, PresenceList, RoomEvent, RoomLine,
    RoomName, Username,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// Where a chatroom client stands in the room's order.
#[derive(Debug)]
pub(super) struct Cursor {
    /// The newest event it was sent.
    last_sent: Position,
    /// Live events held back while its backlog is read; `None` once it is live.
    held: Option<Held>,
}

/// Live events held for a joining client.
#[derive(Debug, Default)]
struct Held {
    events: Vec<Delivered>,
    /// About how many bytes they take.
    bytes: usize,
    /// More came than the bound: some were dropped, the client must start over.
    overflowed: bool,
}

/// About how many bytes an event takes while held (its text, and room for the rest).
fn held_bytes(event: &RoomEvent) -> usize {
    let text = match event {
        RoomEvent::Chat { author, text } | RoomEvent::Renamed { author, from: text } => author.len() + text.len(),
        RoomEvent::Joined { author } | RoomEvent::Left { author } => author.len(),
        RoomEvent::Deleted { .. } => 0,
    };
    text + 64
}

impl Cursor {
    /// A client whose backlog is still to be read: live events are held until then.
    pub(super) fn joining() -> Self {
        Self { last_sent: Position::default(), held: Some(Held::default()) }
    }

    /// A client that is live from the start (a legacy client: it has no backlog).
    pub(super) fn live() -> Self {
        Self { last_sent: Position::default(), held: None }
    }

    /// A live event for this client: held while its backlog is read, else whether to
    /// send it now (not when it was sent already).
    fn admit(&mut self, delivered: &Delivered) -> bool {
        if let Some(held) = self.held.as_mut() {
            held.bytes += held_bytes(&delivered.event);
            if held.bytes > MAX_BACKLOG_BYTES {
                held.overflowed = true;
                held.events = Vec::new();
            }
            if !held.overflowed {
                held.events.push(delivered.clone());
            }
            return false;
        }
        self.advance(delivered.position)
    }

    /// Whether live events were dropped while the backlog was read.
    fn overflowed(&self) -> bool {
        self.held.as_ref().is_some_and(|held| held.overflowed)
    }

    /// Records that the event at `position` goes out, unless an event at or after it did.
    fn advance(&mut self, position: Position) -> bool {
        if position > self.last_sent {
            self.last_sent = position;
            true
        } else {
            false
        }
    }

    /// The backlog, ending at `last`, was sent: the client is live from here, and these
    /// held events follow it.
    fn went_live(&mut self, last: Position) -> Vec<Delivered> {
        self.last_sent = last;
        let held = self.held.take().unwrap_or_default();
        held.events.into_iter().filter(|delivered| self.advance(delivered.position)).collect()
    }
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Speaks {
    /// `message` strings, in the lobby.
    Legacy,
    /// `backlog` then `line` events, in the lobby, without a `room` field.
    V1,
    /// Rooms: every room event says which room it is for.
    V2,
}

/// A connection of this node that receives room events.
pub(super) struct Member {
    /// Its way out.
    pub(super) outbox: Outbox,
    /// Its session id.
    pub(super) sid: SessionId,
    /// Its protocol.
    pub(super) speaks: Speaks,
    /// The rooms it is in, and where it stands in each.
    rooms: Mutex<HashMap<RoomName, Cursor>>,
    /// Who this connection belongs to.
    pub(super) user: UserId,
    /// The name it posts under. Delivery changes it too, when another connection of the
    /// same user takes a name.
    name: Mutex<Option<Username>>,
    /// Tells its connection task that the connection is over.
    pub(super) gone: Arc<Notify>,
    /// Its connection's inbound events, where delivery asks for a resync.
    queue: Arc<EventQueue>,
    /// How it is counted among the connected clients.
    pub(super) labels: ClientLabels,
    /// Where it comes from.
    pub(super) addr: ClientAddr,
}

impl Member {
    /// A connection of `user` that speaks `speaks`, in no room yet.
    pub(super) fn new(
        outbox: Outbox,
        sid: SessionId,
        speaks: Speaks,
        user: UserId,
        labels: ClientLabels,
        queue: Arc<EventQueue>,
        addr: ClientAddr,
    ) -> Self {
        Self {
            outbox,
            sid,
            speaks,
            rooms: Mutex::new(HashMap::new()),
            user,
            name: Mutex::new(None),
            gone: Arc::new(Notify::new()),
            queue,
            labels,
            addr,
        }
    }

    /// The room as this client's payloads name it: version 2 only.
    pub(super) fn label<'a>(&self, room: &'a RoomName) -> Option<&'a RoomName> {
        (self.speaks == Speaks::V2).then_some(room)
    }

    /// Another user took this connection's name while it was cut off from the room: it
    /// has none now, and its client is told.
    pub(super) fn lose_name(&self) {
        if let Some(name) = self.set_name(None) {
            self.outbox.reply(&Notice::name_lost(&name));
        }
    }

    /// Starts receiving `room`'s events: held until its backlog is sent for a chatroom
    /// client, at once for a legacy one. A room it was in already starts over.
    pub(super) fn enter(&self, room: &RoomName) {
        let cursor = if self.speaks == Speaks::Legacy { Cursor::live() } else { Cursor::joining() };
        self.rooms.lock().insert(room.clone(), cursor);
    }

    /// Stops receiving `room`'s events; whether it was in it.
    pub(super) fn exit(&self, room: &RoomName) -> bool {
        self.rooms.lock().remove(room).is_some()
    }

    /// Whether it is in `room`.
    pub(super) fn is_in(&self, room: &RoomName) -> bool {
        self.rooms.lock().contains_key(room)
    }

    /// The rooms it is in.
    pub(super) fn rooms(&self) -> Vec<RoomName> {
        self.rooms.lock().keys().cloned().collect()
    }

    /// How many rooms it is in.
    pub(super) fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }

    /// Starts a chatroom client over in `room`: live events are held again and its task
    /// sends it a `reset` with the recent history. A legacy client has no position to lose.
    pub(super) fn resync(&self, room: &RoomName) {
        if self.speaks == Speaks::Legacy {
            return;
        }
        match self.rooms.lock().get_mut(room) {
            Some(cursor) => *cursor = Cursor::joining(),
            None => return,
        }
        self.ask_for_resync(room);
    }

    /// Has its task check again that it may be in `room` (an operator took its user off
    /// the room's members), and take it out if not.
    pub(super) fn recheck(&self, room: &RoomName) {
        if !self.is_in(room) {
            return;
        }
        if let Err(NotQueued::Full) = self.queue.push(Inbound::Recheck(room.clone())) {
            // It may not stay: let it go.
            tracing::warn!(sid = %self.outbox.id(), "client must leave a room but its queue is full: disconnecting it");
            self.outbox.disconnect();
        }
    }

    fn ask_for_resync(&self, room: &RoomName) {
        match self.queue.push(Inbound::Resync(room.clone())) {
            Ok(()) | Err(NotQueued::Closed) => {}
            Err(NotQueued::Full) => {
                // It cannot be told here: let it go, it resumes (and is reset) on reconnecting.
                tracing::warn!(sid = %self.outbox.id(), "client must be reset but its queue is full: disconnecting it");
                self.outbox.disconnect();
            }
        }
    }

    /// The name it posts under.
    pub(super) fn name(&self) -> Option<Username> {
        self.name.lock().clone()
    }

    /// Sets the name; returns the one it had.
    pub(super) fn set_name(&self, name: Option<Username>) -> Option<Username> {
        std::mem::replace(&mut *self.name.lock(), name)
    }

    /// Writes one event of `room` to this connection (`legacy` is its legacy string, if
    /// any; `line` is the event as version 1 clients get it, `labelled` as version 2).
    pub(super) fn deliver(
        &self,
        room: &RoomName,
        delivered: &Delivered,
        legacy: Option<&str>,
        line: &RoomLine,
        labelled: &RoomLine,
    ) {
        if self.speaks == Speaks::Legacy {
            if let Some(text) = legacy {
                self.outbox.room_event(MESSAGE, text);
            }
            return;
        }
        {
            // Decided and sent under the lock, so a catch-up cannot interleave.
            let mut rooms = self.rooms.lock();
            let Some(cursor) = rooms.get_mut(room) else { return };
            if cursor.admit(delivered) {
                self.outbox.room_event(LINE, if self.speaks == Speaks::V2 { labelled } else { line });
            }
        }
        if delivered.user.as_ref() == Some(&self.user) {
            self.follow_name_change(&delivered.event);
        }
    }

    /// Another connection of this user took a name: this one takes it too, and its client is told.
    fn follow_name_change(&self, event: &RoomEvent) {
        let (RoomEvent::Joined { author } | RoomEvent::Renamed { author, .. }) = event else { return };
        let Ok(name) = Username::parse(author) else { return };
        if self.name().as_ref() != Some(&name) {
            self.set_name(Some(name.clone()));
            self.outbox.reply(&Notice::name_set(&name));
        }
    }

    /// Sends `room`'s backlog and who is in it, then the live events held meanwhile that
    /// the backlog did not contain.
    pub(super) fn catch_up(
        &self,
        room: &RoomName,
        kind: BacklogKind,
        backlog: &[Delivered],
        resumed_after: Option<Position>,
        online: Option<&PresenceList>,
    ) {
        if self.speaks == Speaks::Legacy {
            return;
        }
        let label = self.label(room);
        let mut rooms = self.rooms.lock();
        let Some(cursor) = rooms.get_mut(room) else { return };
        if cursor.overflowed() {
            // Live events were dropped meanwhile: this backlog cannot be continued.
            *cursor = Cursor::joining();
            drop(rooms);
            self.ask_for_resync(room);
            return;
        }
        let last = backlog.last().map(|d| d.position).or(resumed_after).unwrap_or_default();
        let lines = backlog.iter().map(|d| room_line(label, d)).collect();
        self.outbox.room_event(BACKLOG, &Backlog { room: label.cloned(), kind, lines });
        if let Some(online) = online {
            let online = PresenceList { room: label.cloned(), ..online.clone() };
            self.outbox.room_event(PRESENCE, &online);
        }
        for delivered in cursor.went_live(last) {
            self.outbox.room_event(LINE, &room_line(label, &delivered));
        }
    }
}

/// A room event as a chatroom client receives it (naming the room for version 2).
pub(super) fn room_line(room: Option<&RoomName>, delivered: &Delivered) -> RoomLine {
    RoomLine { room: room.cloned(), pos: delivered.position, ts: delivered.position.ms, event: delivered.event.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Delivered {
        Delivered { position: Position { ms, seq: 0 }, event: RoomEvent::Left { author: ms.to_string() }, user: None }
    }

    fn positions(events: &[Delivered]) -> Vec<u64> {
        events.iter().map(|d| d.position.ms).collect()
    }

    #[test]
    fn live_events_wait_for_the_backlog_and_none_is_sent_twice_at_the_seam() {
        let mut cursor = Cursor::joining();
        // Delivered while the backlog (up to 3) is read: 2 and 3 are in it, 4 and 5 are not.
        for ms in [2, 3, 4, 5] {
            assert!(!cursor.admit(&at(ms)), "held while joining");
        }
        assert_eq!(positions(&cursor.went_live(Position { ms: 3, seq: 0 })), [4, 5]);
        assert!(!cursor.admit(&at(5)), "already sent");
        assert!(cursor.admit(&at(6)));
        assert!(!cursor.admit(&at(6)));
    }

    #[test]
    fn too_many_held_events_make_the_client_start_over() {
        let mut cursor = Cursor::joining();
        let heavy = Delivered {
            position: Position { ms: 1, seq: 0 },
            event: RoomEvent::Chat { author: "ann".into(), text: "x".repeat(12_000) },
            user: None,
        };
        for _ in 0..10 {
            cursor.admit(&heavy);
        }
        assert!(!cursor.overflowed(), "10 lines of 12 KB are held");
        for _ in 0..20 {
            cursor.admit(&heavy);
        }
        assert!(cursor.overflowed(), "past 255 KiB they are not");
        assert!(cursor.held.as_ref().is_some_and(|held| held.events.is_empty()), "and what was held is let go");
    }

    #[test]
    fn a_backlog_newer_than_what_was_held_swallows_it() {
        let mut cursor = Cursor::joining();
        cursor.admit(&at(1));
        assert!(cursor.went_live(Position { ms: 9, seq: 0 }).is_empty());
        assert!(cursor.admit(&at(10)));
    }
}

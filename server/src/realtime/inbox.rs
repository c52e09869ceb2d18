//! A connection's inbound events, queued in the order they arrived for its one task.
//!
//! socketioxide runs every event handler in a task of its own, so two messages from one
//! client could be handled out of order. Here each handler only queues the event, after
//! the rate limits, and the connection's task handles the queue in that order.
//!
//! Invariant: an event the queue accepted is handled, even if the connection closes right
//! after — closing and accepting decide under one lock, and closing hands over the rest.

use super::outbox::Outbox;
use crate::limits::{ConnectionLimits, Verdict};
use app::protocol::{Position, Presented, Refusal, RoomName};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

/// Events from one client waiting to be handled.
const INBOX_CAPACITY: usize = 1_024;
/// Bytes of payload from one client waiting to be handled (while Redis is slow, say).
const INBOX_BYTES: usize = 1024 * 1024;

/// An event from a client, queued for its connection's task.
#[derive(Debug, PartialEq)]
pub(super) enum Inbound {
    /// A chatroom client is in a room: send its backlog there (for version 1, the lobby
    /// on connecting).
    Join {
        /// The room.
        room: RoomName,
        /// The position it saw last there.
        after: Option<Presented<Position>>,
    },
    /// A version 2 client leaves a room.
    Leave(RoomName),
    /// A version 2 client asks for the room list.
    ListRooms,
    /// A chatroom client asks for lines of a room before a position.
    Older {
        /// The room.
        room: RoomName,
        /// The position of the oldest line it has.
        before: Position,
        /// How many lines at most.
        limit: usize,
    },
    /// The name a chatroom client presented on connecting.
    TakeName(Option<String>),
    /// `set_username` with its raw argument.
    SetUsername(Option<Value>),
    /// A fresh connection token.
    Refresh(String),
    /// The user may no longer be in a private room: leave it unless its token lists it.
    Recheck(RoomName),
    /// A chat line for a room, with the raw text.
    Message {
        /// The room.
        room: RoomName,
        /// The text as sent.
        raw: Option<Value>,
    },
    /// The client cannot be continued from where it is in a room (the room's bus started
    /// a new epoch, or too many live events came while its backlog was read): start it
    /// over there with a `reset`.
    Resync(RoomName),
}

impl Inbound {
    /// About how many bytes of the client's payload it holds.
    fn bytes(&self) -> usize {
        let raw = match self {
            Inbound::SetUsername(raw) | Inbound::Message { raw, .. } => raw,
            Inbound::TakeName(name) => return name.as_ref().map_or(0, String::len),
            Inbound::Refresh(token) => return token.len(),
            Inbound::ListRooms | Inbound::Older { .. } => return 0,
            Inbound::Join { room, .. } | Inbound::Leave(room) | Inbound::Resync(room) | Inbound::Recheck(room) => {
                return room.as_str().len();
            }
        };
        match raw {
            Some(Value::String(text)) => text.len(),
            Some(other) => other.to_string().len(),
            None => 0,
        }
    }
}

/// One connection's events waiting for its task. Nothing is allocated until the client
/// sends one: a tokio channel allocates a block of 32 slots at once, about 2 KiB for
/// every idle connection.
#[derive(Default)]
pub(super) struct EventQueue {
    pending: Mutex<Pending>,
    ready: Notify,
}

/// The events themselves, and whether the queue still takes any: under one lock, so no
/// event slips in after the task's last look.
#[derive(Default)]
struct Pending {
    events: VecDeque<Inbound>,
    /// The payload bytes of `events`.
    bytes: usize,
    closed: bool,
}

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NotQueued {
    /// The client has too many events waiting.
    Full,
    /// The connection's task is done.
    Closed,
}

impl EventQueue {
    /// Queues an event for the task.
    pub(super) fn push(&self, event: Inbound) -> Result<(), NotQueued> {
        {
            let mut pending = self.pending.lock();
            if pending.closed {
                return Err(NotQueued::Closed);
            }
            let bytes = event.bytes();
            if pending.events.len() >= INBOX_CAPACITY || pending.bytes + bytes > INBOX_BYTES {
                return Err(NotQueued::Full);
            }
            pending.bytes += bytes;
            pending.events.push_back(event);
        }
        // Stores a permit when the task is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    fn try_next(&self) -> Option<Inbound> {
        let mut pending = self.pending.lock();
        let event = pending.events.pop_front()?;
        pending.bytes -= event.bytes();
        Some(event)
    }

    /// The next event, waiting for one.
    pub(super) async fn next(&self) -> Inbound {
        loop {
            if let Some(event) = self.try_next() {
                return event;
            }
            self.ready.notified().await;
        }
    }

    /// Refuses further events and hands over those still waiting: the connection's task
    /// is done.
    pub(super) fn close(&self) -> VecDeque<Inbound> {
        let mut pending = self.pending.lock();
        pending.closed = true;
        pending.bytes = 0;
        std::mem::take(&mut pending.events)
    }
}

/// Where a connection's handlers put its events, after its rate limits.
#[derive(Clone)]
pub(super) struct Inbox {
    queue: Arc<EventQueue>,
    limits: Arc<ConnectionLimits>,
}

impl Inbox {
    /// The inbox in front of `queue`, with the connection's limits.
    pub(super) fn new(queue: Arc<EventQueue>, limits: Arc<ConnectionLimits>) -> Self {
        Self { queue, limits }
    }

    /// The connection's rate limits.
    pub(super) fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Queues an event its limits allow; refuses one over them, and disconnects a flood.
    /// `outbox` is the sender's, for the answer; `room` what the event is about.
    pub(super) fn admit(&self, outbox: &Outbox, room: Option<&RoomName>, verdict: Verdict, event: Inbound) {
        match verdict {
            Verdict::Allowed => {}
            Verdict::Refused(refusal) => return outbox.refuse_in(room, &refusal),
            Verdict::Flooding => {
                if self.limits.cut_off() {
                    tracing::warn!(sid = %outbox.id(), "client keeps sending while refused: disconnecting it");
                    outbox.count_flood_disconnect();
                    // What it sends meanwhile is dropped unanswered.
                    outbox.disconnect_soon();
                }
                return;
            }
        }
        match self.queue.push(event) {
            Ok(()) => {}
            Err(NotQueued::Full) => {
                tracing::warn!(sid = %outbox.id(), "client sends faster than it is served; event refused");
                outbox.refuse_in(room, &Refusal::Busy);
            }
            // The connection task has finished: the socket is closing.
            Err(NotQueued::Closed) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(n: usize) -> Inbound {
        Inbound::Message { room: RoomName::lobby(), raw: Some(json!(n)) }
    }

    #[tokio::test]
    async fn events_come_out_in_order_and_a_closed_queue_takes_no_more() {
        let queue = EventQueue::default();
        for n in 0..3 {
            queue.push(message(n)).unwrap();
        }
        assert_eq!(queue.next().await, message(0));
        let rest: Vec<Inbound> = queue.close().into();
        assert_eq!(rest, [message(1), message(2)], "closing hands over what still waits");
        assert_eq!(queue.push(message(3)), Err(NotQueued::Closed));
        assert!(queue.close().is_empty());
    }

    #[test]
    fn a_full_queue_refuses_the_next_event() {
        let queue = EventQueue::default();
        for n in 0..INBOX_CAPACITY {
            queue.push(message(n)).unwrap();
        }
        assert_eq!(queue.push(message(INBOX_CAPACITY)), Err(NotQueued::Full));
    }

    #[tokio::test]
    async fn a_queue_holds_a_bounded_number_of_bytes() {
        let queue = EventQueue::default();
        let big = || Inbound::Message { room: RoomName::lobby(), raw: Some(json!("x".repeat(100_000))) };
        for _ in 0..10 {
            queue.push(big()).unwrap();
        }
        assert_eq!(queue.push(big()), Err(NotQueued::Full), "about 1 MiB waits at most");
        queue.next().await;
        assert_eq!(queue.push(big()), Ok(()), "room again once one is handled");
    }

    /// Events pushed from other threads while the task takes them and then closes:
    /// each accepted one is handled exactly once, by `next` or from `close`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_accepted_event_is_lost_when_the_queue_closes_meanwhile() {
        for _ in 0..50 {
            let queue = Arc::new(EventQueue::default());
            let pusher = std::thread::spawn({
                let queue = queue.clone();
                move || (0..200).filter(|n| queue.push(message(*n)).is_ok()).count()
            });
            let mut handled = 0;
            while handled < 20 {
                queue.next().await;
                handled += 1;
            }
            handled += queue.close().len();
            let accepted = pusher.join().unwrap();
            assert_eq!(handled, accepted);
        }
    }
}

//! The one way anything reaches a client: a room event, a reply to it alone, or a
//! refusal. Each is counted; what a full queue means depends on what was lost.

use super::polling::{Pacers, Pacing};
use crate::metrics::Metrics;
use app::protocol::{HELLO, Hello, MESSAGE, NOTICE, Notice, Refusal, RoomName};
use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, TransportType};
use std::sync::Arc;
use std::time::Duration;

/// How long a client that is being let go still gets what was sent to it.
const LAST_WORDS_DELAY: Duration = Duration::from_millis(500);

/// What a failed write means for the client.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// A room event: skipping it would leave a silent hole in the client's chat, so a
    /// client too slow to take it is disconnected (it then knows, and can come back).
    Hole,
    /// A reply to this client alone: if it cannot be written, the client is gone or
    /// about to be.
    Reply,
}

/// A connection's way out.
#[derive(Clone)]
pub(super) struct Outbox {
    socket: SocketRef,
    /// Whether the client speaks the structured protocol (else: legacy strings only).
    structured: bool,
    metrics: Arc<Metrics>,
    /// The pacers, for a connection that polls.
    pacers: Option<Arc<Pacers>>,
}

impl Outbox {
    /// The way out of `socket`; paced by `pacers` while it polls.
    pub(super) fn new(socket: SocketRef, structured: bool, metrics: Arc<Metrics>, pacers: &Arc<Pacers>) -> Self {
        let pacers = (socket.transport_type() == TransportType::Polling).then(|| pacers.clone());
        Self { socket, structured, metrics, pacers }
    }

    /// The connection's Socket.IO id.
    pub(super) fn id(&self) -> Sid {
        self.socket.id
    }

    /// Whether the client speaks the structured protocol.
    pub(super) fn is_structured(&self) -> bool {
        self.structured
    }

    /// Writes a room event (a legacy string, a line, a backlog, a presence list).
    pub(super) fn room_event<T: Serialize + ?Sized>(&self, event: &'static str, data: &T) {
        self.emit(event, data, Loss::Hole);
    }

    /// Answers this client alone: its text for a legacy client (if the notice has one),
    /// the notice for a chatroom client.
    pub(super) fn reply(&self, notice: &Notice) {
        if self.structured {
            self.emit(NOTICE, notice, Loss::Reply);
        } else if !notice.text().is_empty() {
            self.emit(MESSAGE, notice.text(), Loss::Reply);
        }
    }

    /// Answers a chatroom client alone with a structured event (the room list).
    pub(super) fn reply_event<T: Serialize + ?Sized>(&self, event: &'static str, data: &T) {
        self.emit(event, data, Loss::Reply);
    }

    /// Tells a chatroom client which node serves it.
    pub(super) fn hello(&self, hello: &Hello) {
        self.emit(HELLO, hello, Loss::Reply);
    }

    /// Answers a refused input to its sender alone, and counts it.
    pub(super) fn refuse(&self, refusal: &Refusal) {
        self.refuse_in(None, refusal);
    }

    /// Answers a refused input about `room` (named to version 2 clients) to its sender
    /// alone, and counts it.
    pub(super) fn refuse_in(&self, room: Option<&RoomName>, refusal: &Refusal) {
        self.metrics.refused(refusal.code());
        self.reply(&Notice::refused(room, refusal));
    }

    /// Counts a client cut off for flooding.
    pub(super) fn count_flood_disconnect(&self) {
        self.metrics.refused("flood_disconnect");
    }

    /// Closes the connection.
    pub(super) fn disconnect(&self) {
        // Already closing when it fails: nothing left to do.
        let _ = self.socket.clone().disconnect();
    }

    /// Closes the connection a moment from now, so that what was just sent (why it is
    /// closed) reaches the client first: a polling client fetches it with its next GET,
    /// and closing at once would drop it.
    pub(super) fn disconnect_soon(&self) {
        let outbox = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LAST_WORDS_DELAY).await;
            outbox.disconnect();
        });
    }

    fn emit<T: Serialize + ?Sized>(&self, event: &'static str, data: &T, loss: Loss) {
        let sid = self.socket.id;
        let sent = match &self.pacers {
            None => self.socket.emit(event, data).map(|()| Pacing::Now),
            Some(pacers) => {
                pacers.offer(sid, self.socket.transport_type(), event, data, || self.socket.emit(event, data))
            }
        };
        match (sent, loss) {
            (Ok(Pacing::Now | Pacing::Kept), _) => self.metrics.event_out(event),
            (Ok(Pacing::Full), Loss::Hole) => {
                tracing::warn!(%sid, "polling client too slow, its queue is full: disconnecting it");
                self.disconnect();
            }
            (Ok(Pacing::Full), Loss::Reply) => tracing::debug!(%sid, event, "reply not sent: the client is too slow"),
            (Err(SendError::Socket(SocketError::InternalChannelFull)), Loss::Hole) => {
                tracing::warn!(%sid, "client too slow, its queue is full: disconnecting it");
                self.disconnect();
            }
            (Err(SendError::Socket(SocketError::Closed)), Loss::Hole) => {}
            (Err(err), Loss::Hole) => tracing::warn!(%sid, %err, event, "a room event was not written to a client"),
            (Err(err), Loss::Reply) => tracing::debug!(%sid, %err, event, "reply not sent: the client is gone"),
        }
    }
}

//! The node's side of the room: its members, and the one task that reads the bus and
//! writes every room event, in the bus's order, to every member.
//!
//! Invariant: room events reach clients only through this task, so every client of every
//! node sees the bus's one order.

use super::member::{Member, room_line};
use crate::backend::{BackendError, SessionId};
use crate::chat::ChatService;
use crate::metrics::Metrics;
use app::protocol::Position;
use parking_lot::RwLock;
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Room events delivered per read of the bus.
const DELIVERY_BATCH: usize = 256;
/// How long to wait before reading a failing bus again.
const RETRY: Duration = Duration::from_millis(200);

/// The connections of this node that receive room events, and how far delivery got.
pub(super) struct Hub {
    members: RwLock<HashMap<Sid, Arc<Member>>>,
    /// The position of the newest room event delivered to the members.
    delivered: watch::Sender<Position>,
}

impl Hub {
    /// A hub with no members.
    pub(super) fn new() -> Self {
        Self { members: RwLock::new(HashMap::new()), delivered: watch::Sender::new(Position::default()) }
    }

    /// Adds a connection.
    pub(super) fn insert(&self, member: Arc<Member>) {
        self.members.write().insert(member.outbox.id(), member);
    }

    /// Removes a connection; it gets no more room events.
    pub(super) fn remove(&self, sid: Sid) {
        self.members.write().remove(&sid);
    }

    /// Every member, taken once (a batch is delivered to the members of its start).
    pub(super) fn snapshot(&self) -> Vec<Arc<Member>> {
        self.members.read().values().cloned().collect()
    }

    /// The member with this session id, if it is one of this node's.
    pub(super) fn member(&self, sid: &SessionId) -> Option<Arc<Member>> {
        self.members.read().values().find(|member| &member.sid == sid).cloned()
    }

    /// Waits until every event up to `tail` has been delivered, or `within` passed.
    pub(super) async fn wait_delivered(&self, tail: Position, within: Duration) -> bool {
        let mut delivered = self.delivered.subscribe();
        tokio::time::timeout(within, delivered.wait_for(|at| *at >= tail)).await.is_ok_and(|r| r.is_ok())
    }

    /// Reads the room's bus from its current end and writes every event, in order, to
    /// every member. Runs for the life of the node.
    pub(super) async fn deliver(&self, chat: &ChatService, metrics: &Metrics) {
        let bus = chat.bus();
        let mut after = read_tail(chat).await;
        let mut failing = false;
        loop {
            match bus.read_after(after, DELIVERY_BATCH).await {
                Ok(batch) => {
                    if std::mem::take(&mut failing) {
                        metrics.bus_reconnects.inc();
                    }
                    let now_ms = crate::clock::now_ms();
                    // Once a batch: whoever joins meanwhile gets these from its backlog.
                    let members = self.snapshot();
                    for delivered in batch {
                        let lag = Duration::from_millis(now_ms.saturating_sub(delivered.position.ms));
                        Metrics::observe(&metrics.delivery_seconds, lag);
                        let legacy = delivered.event.legacy_text();
                        let line = room_line(&delivered);
                        for member in &members {
                            member.deliver(&delivered, legacy.as_deref(), &line);
                        }
                        after = delivered.position;
                    }
                    self.delivered.send_replace(after);
                }
                Err(BackendError::EpochChanged) => {
                    // Redis lost the room's stream: what this node's clients saw is no
                    // longer in it. Each chatroom client is told with a reset; delivery
                    // goes on from the new stream's start.
                    tracing::error!("the room's stream was lost and started anew: resetting this node's clients");
                    metrics.backend_error("epoch_changed");
                    for member in self.snapshot() {
                        member.resync();
                    }
                    after = Position::default();
                }
                Err(BackendError::Trimmed { after: missed_from, oldest }) => {
                    tracing::error!(%missed_from, %oldest, "delivery fell behind the bus; events in between were lost to this node's clients");
                    after = read_tail(chat).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot read the bus; retrying");
                    metrics.backend_error("bus_read");
                    failing = true;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// The position of the bus's newest event, asked until the bus answers.
async fn read_tail(chat: &ChatService) -> Position {
    loop {
        match chat.bus().tail().await {
            Ok(position) => return position,
            Err(err) => {
                tracing::warn!(%err, "cannot find the end of the bus; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

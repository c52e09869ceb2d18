//! The node's side of the rooms: its members, which rooms each is in, and for every room
//! with a member here one task that reads the room's bus and writes each of its events,
//! in the bus's order, to the room's members.
//!
//! Invariant: a room's events reach clients only through its task, so every client of
//! every node sees each room's one order. A room's task runs while the room has a member
//! on this node (the lobby's for the life of the node), and a member is sent a room's
//! events from the moment its task knows where it starts reading.

use super::member::{Member, room_line};
use crate::backend::{BackendError, SessionId};
use crate::chat::ChatService;
use crate::metrics::Metrics;
use app::protocol::{Position, RoomName};
use parking_lot::{Mutex, RwLock};
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Room events delivered per read of the bus.
const DELIVERY_BATCH: usize = 256;
/// How long to wait before reading a failing bus again.
const RETRY: Duration = Duration::from_millis(200);

/// The connections of this node, and the rooms they are in.
pub(super) struct Hub {
    members: RwLock<HashMap<Sid, Arc<Member>>>,
    rooms: RwLock<HashMap<RoomName, RoomDelivery>>,
    /// Rooms whose last member here left since the last report.
    emptied: Mutex<Vec<RoomName>>,
    chat: Arc<ChatService>,
    metrics: Arc<Metrics>,
}

/// One room's delivery on this node: its members and its reading task.
struct RoomDelivery {
    state: Arc<RoomState>,
    task: AbortHandle,
}

/// What a room's task and the hub share.
struct RoomState {
    room: RoomName,
    members: RwLock<HashMap<Sid, Arc<Member>>>,
    /// The position of the newest event delivered to the members; `None` until the task
    /// knows where it starts.
    delivered: watch::Sender<Option<Position>>,
}

impl Hub {
    /// A hub with no members, delivering the rooms of `chat`.
    pub(super) fn new(chat: Arc<ChatService>, metrics: Arc<Metrics>) -> Self {
        Self {
            members: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            emptied: Mutex::new(Vec::new()),
            chat,
            metrics,
        }
    }

    /// Adds a connection, in no room yet.
    pub(super) fn insert(&self, member: Arc<Member>) {
        self.members.write().insert(member.outbox.id(), member);
    }

    /// Removes a connection from the node and from the delivery of every room it is in
    /// (the member still knows its rooms: its task closes its presence in them).
    pub(super) fn forget(&self, sid: Sid) {
        let Some(member) = self.members.write().remove(&sid) else { return };
        for room in member.rooms() {
            self.stop_delivering(&room, sid);
        }
    }

    /// Every member, taken once.
    pub(super) fn snapshot(&self) -> Vec<Arc<Member>> {
        self.members.read().values().cloned().collect()
    }

    /// The member with this session id, if it is one of this node's.
    pub(super) fn member(&self, sid: &SessionId) -> Option<Arc<Member>> {
        self.members.read().values().find(|member| &member.sid == sid).cloned()
    }

    /// Starts delivering `room` to this node for good (the lobby, which legacy clients
    /// enter the moment they connect).
    pub(super) fn keep(&self, room: &RoomName) {
        self.delivery(room);
    }

    /// Puts `member` in `room`: it is sent the room's events from when the room's task
    /// started reading (see [`Hub::started`]).
    pub(super) fn enter(&self, room: &RoomName, member: &Arc<Member>) -> Started {
        member.enter(room);
        // Under the node's list: a connection that is gone (forgotten) enters no room,
        // and one forgotten after this is taken out of the room too.
        let members = self.members.read();
        if !members.contains_key(&member.outbox.id()) {
            return Started(watch::channel(Some(Position::default())).1);
        }
        let state = self.delivery(room);
        state.members.write().insert(member.outbox.id(), member.clone());
        Started(state.delivered.subscribe())
    }

    /// Takes `member` out of `room`; the room's task stops with its last member here.
    pub(super) fn leave(&self, room: &RoomName, member: &Member) {
        member.exit(room);
        self.stop_delivering(room, member.outbox.id());
    }

    /// `room`'s events no longer go to `sid`; the room's task stops with its last member.
    fn stop_delivering(&self, room: &RoomName, sid: Sid) {
        let mut rooms = self.rooms.write();
        let Some(delivery) = rooms.get(room) else { return };
        let empty = {
            let mut members = delivery.state.members.write();
            members.remove(&sid);
            members.is_empty()
        };
        if empty
            && !room.is_lobby()
            && let Some(delivery) = rooms.remove(room)
        {
            delivery.task.abort();
            self.emptied.lock().push(room.clone());
            self.metrics.rooms_delivered.set(gauge_value(rooms.len()));
        }
    }

    /// The room's delivery, started if it was not.
    fn delivery(&self, room: &RoomName) -> Arc<RoomState> {
        if let Some(delivery) = self.rooms.read().get(room) {
            return delivery.state.clone();
        }
        let mut rooms = self.rooms.write();
        if let Some(delivery) = rooms.get(room) {
            return delivery.state.clone();
        }
        let state = Arc::new(RoomState {
            room: room.clone(),
            members: RwLock::new(HashMap::new()),
            delivered: watch::Sender::new(None),
        });
        let task = tokio::spawn(deliver(state.clone(), self.chat.clone(), self.metrics.clone())).abort_handle();
        rooms.insert(room.clone(), RoomDelivery { state: state.clone(), task });
        self.metrics.rooms_delivered.set(gauge_value(rooms.len()));
        state
    }

    /// The rooms to report as in use: those with members here now, and those whose last
    /// member here left since the last report (once more, with their new count).
    pub(super) fn rooms_to_report(&self) -> Vec<RoomName> {
        let mut rooms: Vec<RoomName> = std::mem::take(&mut *self.emptied.lock());
        for (room, delivery) in self.rooms.read().iter() {
            if !delivery.state.members.read().is_empty() {
                rooms.push(room.clone());
            }
        }
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Stops every room's task.
    pub(super) fn stop(&self) {
        for (_, delivery) in self.rooms.write().drain() {
            delivery.task.abort();
        }
    }

    /// How far this node's delivery of `room` is behind the room's newest event: `None`
    /// when the room is not delivered here, or its bus does not answer.
    pub(super) async fn lag(&self, room: &RoomName) -> Option<Duration> {
        let state = self.rooms.read().get(room).map(|delivery| delivery.state.clone())?;
        let tail = self.chat.bus(room).tail().await.ok()?;
        let delivered = (*state.delivered.borrow())?;
        Some(if delivered >= tail {
            Duration::ZERO
        } else {
            Duration::from_millis(tail.ms.saturating_sub(delivered.ms))
        })
    }

    /// Waits until every event of every room delivered here, up to its tail when asked,
    /// has been delivered, or `within` passed.
    pub(super) async fn wait_delivered(&self, within: Duration) -> bool {
        let states: Vec<Arc<RoomState>> = self.rooms.read().values().map(|d| d.state.clone()).collect();
        let all = async {
            for state in states {
                let Ok(tail) = self.chat.bus(&state.room).tail().await else { return false };
                let mut delivered = state.delivered.subscribe();
                if delivered.wait_for(|at| at.is_some_and(|at| at >= tail)).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(within, all).await.unwrap_or(false)
    }
}

/// A count as a gauge's value.
fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Resolves once a room's task knows where it reads from: a backlog read after that
/// leaves no gap before the live events.
pub(super) struct Started(watch::Receiver<Option<Position>>);

impl Started {
    /// Waits for it.
    pub(super) async fn wait(mut self) {
        // The sender lives as long as the room's state; a room torn down meanwhile has
        // no events to wait for.
        let _ = self.0.wait_for(Option::is_some).await;
    }
}

/// Reads `room`'s bus from its current end and writes every event, in order, to the
/// room's members; runs until the hub aborts it.
async fn deliver(state: Arc<RoomState>, chat: Arc<ChatService>, metrics: Arc<Metrics>) {
    let room = &state.room;
    let bus = chat.bus(room);
    let mut after = read_tail(&chat, room).await;
    state.delivered.send_replace(Some(after));
    let mut failing = false;
    loop {
        match bus.read_after(after, DELIVERY_BATCH).await {
            Ok(batch) => {
                if std::mem::take(&mut failing) {
                    metrics.bus_reconnects.inc();
                }
                let now_ms = crate::clock::now_ms();
                // Once a batch: whoever joins meanwhile gets these from its backlog.
                let members: Vec<Arc<Member>> = state.members.read().values().cloned().collect();
                for delivered in batch {
                    let lag = Duration::from_millis(now_ms.saturating_sub(delivered.position.ms));
                    Metrics::observe(&metrics.delivery_seconds, lag);
                    let legacy = delivered.event.legacy_text();
                    let line = room_line(None, &delivered);
                    let labelled = room_line(Some(room), &delivered);
                    for member in &members {
                        member.deliver(room, &delivered, legacy.as_deref(), &line, &labelled);
                    }
                    after = delivered.position;
                }
                state.delivered.send_replace(Some(after));
            }
            Err(BackendError::EpochChanged) => {
                // Redis lost the room's stream: what this node's clients saw of it is no
                // longer in it. Each chatroom client in it is told with a reset; delivery
                // goes on from the new stream's start.
                tracing::error!(%room, "the room's stream was lost and started anew: resetting its clients");
                metrics.backend_error("epoch_changed");
                let members: Vec<Arc<Member>> = state.members.read().values().cloned().collect();
                for member in members {
                    member.resync(room);
                }
                after = Position::default();
            }
            Err(BackendError::Rewound { after: delivered, last }) => {
                // A failover lost the newest events delivered here: the room's clients
                // saw lines the room no longer has, and are told with a reset. Delivery
                // goes on after the newest event the room has, so none that follow is missed.
                tracing::error!(%room, %delivered, %last, "a Redis failover lost events delivered here; resetting the room's clients");
                metrics.backend_error("rewound");
                let members: Vec<Arc<Member>> = state.members.read().values().cloned().collect();
                for member in members {
                    member.resync(room);
                }
                after = last;
            }
            Err(BackendError::NotYetReplicated { .. }) => {
                // No replica has the newest events yet (logged where that is asked): they
                // are read again, and delivered once one has them.
                tokio::time::sleep(RETRY).await;
            }
            Err(BackendError::Trimmed { after: missed_from, oldest }) => {
                // Events in between are gone for this node: its clients in the room are
                // told with a reset rather than left with a hole.
                tracing::error!(%room, %missed_from, %oldest, "delivery fell behind the bus; resetting the room's clients");
                after = read_tail(&chat, room).await;
                let members: Vec<Arc<Member>> = state.members.read().values().cloned().collect();
                for member in members {
                    member.resync(room);
                }
            }
            Err(err) => {
                tracing::warn!(%room, %err, "cannot read the bus; retrying");
                metrics.backend_error("bus_read");
                failing = true;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// The position of `room`'s newest event, asked until the bus answers.
async fn read_tail(chat: &ChatService, room: &RoomName) -> Position {
    loop {
        match chat.bus(room).tail().await {
            Ok(position) => return position,
            Err(err) => {
                tracing::warn!(%room, %err, "cannot find the end of the bus; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

//! Where a node keeps what the rooms share, behind three traits: each room's ordered bus
//! of events ([`Buses`], [`EventBus`]), who is online and in which room ([`Presence`]) and
//! the legacy session records ([`SessionStore`]). [`memory`] serves one node; [`redis`]
//! lets many nodes share the rooms.
//!
//! Invariant of every implementation: a change to a room's presence and its announcement
//! on that room's bus are one step, so a room's presence list and its events never
//! disagree. Rooms are independent: each has its own order, positions and epoch.

pub mod memory;
pub mod moderation;
pub mod redis;

use app::protocol::{BadPosition, ClientKey, Position, PresenceList, RoomEvent, RoomLine, RoomName, Username};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A room event with the position the bus gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Where it stands in the room's order.
    pub position: Position,
    /// What happened.
    pub event: RoomEvent,
    /// The user a join or rename is about, so that its other connections take the
    /// name too; never sent to clients (it is the user's secret key).
    pub user: Option<UserId>,
}

impl Delivered {
    /// The event as a chatroom client receives it.
    pub fn line(&self) -> RoomLine {
        RoomLine { room: None, pos: self.position, ts: self.position.ms, event: self.event.clone() }
    }
}

/// The part of the room's order a client can resume in: from where the bus's current
/// epoch began to its newest event. A position outside it is from another epoch (Redis
/// lost its data since), or not one the bus ever gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The position of the epoch's first event (the default position for an empty room).
    pub epoch: Position,
    /// The position of its newest event (the default position for an empty room).
    pub tail: Position,
}

impl Span {
    /// Whether a client that saw the room up to `after` can resume from there.
    pub fn holds(&self, after: Position) -> bool {
        self.epoch <= after && after <= self.tail
    }
}

/// One connection: its Socket.IO session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// The session id socketioxide gave a connection.
    pub fn new(sid: impl Into<String>) -> Self {
        Self(sid.into())
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a connection belongs to: the subject of its connection token, else the client key
/// of a chatroom client (its tabs and reconnects are one user), else the connection
/// itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UserId(String);

impl UserId {
    /// The user of a client key.
    pub fn from_key(key: &ClientKey) -> Self {
        Self(format!("k:{key}"))
    }

    /// The user a connection token names (`sub`): all its devices are one user.
    pub fn from_subject(subject: &str) -> Self {
        Self(format!("s:{subject}"))
    }

    /// The `sub` of a user a connection token named.
    pub fn subject(&self) -> Option<&str> {
        self.0.strip_prefix("s:")
    }

    /// The user that is this connection alone.
    pub fn of_connection(sid: &SessionId) -> Self {
        Self(format!("c:{sid}"))
    }

    /// A stored id read back (from a stream entry or a presence record).
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// Whether this user can come back as the same user (it has a token or a client key).
    pub fn can_return(&self) -> bool {
        self.0.starts_with("k:") || self.0.starts_with("s:")
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The outcome of a user asking for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Another online user has it (names compared by their [`NameKeys`](crate::names::NameKeys)).
    Taken,
    /// The user already had exactly this name: nothing was announced.
    Unchanged,
    /// The user had no name: it joined, and that was announced.
    Joined,
    /// The user had another name: the rename was announced.
    Renamed,
}

/// Who is online: users, their connections and their unique names (one registry for
/// the whole service), and who is in which room. A user is in a room while one of its
/// connections is; a named user is listed there. Every change to a room's list is
/// published on that room's bus in the same step as it is made.
#[async_trait]
pub trait Presence: Send + Sync {
    /// A connection of `user` opened; returns the name the user already has (another
    /// tab of it is online, or it came back within its grace period).
    async fn connect(&self, user: &UserId, sid: &SessionId) -> Result<Option<Username>, BackendError>;

    /// Gives `user` the name `name` unless another online user has one with the same
    /// [`NameKeys`](crate::names::NameKeys) key; announces a join or a rename in every
    /// room the user is in.
    async fn claim(&self, user: &UserId, sid: &SessionId, name: &Username) -> Result<Claim, BackendError>;

    /// The connection `sid` of `user` is in `room` now; a named user new to the room is
    /// announced there. A room not listed yet is opened, unless the service holds as
    /// many rooms as [`RoomPolicy::max_rooms`] allows.
    async fn enter(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<Entered, BackendError>;

    /// The connection `sid` left `room`; when it was the user's last there, the user
    /// leaves the room at once.
    async fn exit(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<(), BackendError>;

    /// A connection closed, and with it its presence in `rooms`. A user whose last
    /// connection in a room this was leaves the room once `grace` has passed without a
    /// new one (at once when `grace` is zero); likewise a user with no connection left
    /// loses its name.
    async fn disconnect(
        &self,
        user: &UserId,
        sid: &SessionId,
        rooms: &[RoomName],
        grace: Duration,
    ) -> Result<(), BackendError>;

    /// The names in `room`, sorted, and the position of its newest event they reflect.
    async fn snapshot(&self, room: &RoomName) -> Result<PresenceList, BackendError>;

    /// `rooms` have members on this node now: they stay listed (with their count of
    /// users online brought up to date) and their keys do not expire. Reported every few
    /// seconds, and once more when a room's last member here left.
    async fn report(&self, rooms: &[RoomName]) -> Result<(), BackendError>;

    /// The rooms in use: with members, or whose last member left less than
    /// [`RoomPolicy::idle`] ago; with how many users are online in each.
    async fn rooms(&self) -> Result<Vec<RoomInfo>, BackendError>;

    /// Beats for this node and announces the leave of users whose grace period is over,
    /// and in a cluster of users of nodes that stopped beating. Writes this node's
    /// connections back when presence lost them (Redis lost data, or this node was taken
    /// for dead), and says which of them lost their name to someone else meanwhile.
    async fn sweep(&self) -> Result<Swept, BackendError>;

    /// The online user who has `name` (or a name with the same keys), if any.
    async fn user_named(&self, name: &Username) -> Result<Option<UserId>, BackendError>;

    /// Publishes this node's status for the status page of every node.
    async fn publish_status(&self, status: &NodeStatus) -> Result<(), BackendError>;

    /// The nodes alive with their last published status, and the users online.
    async fn cluster(&self) -> Result<ClusterStatus, BackendError>;
}

/// Whether a connection got into a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// It is in the room.
    In,
    /// The room was not open, and no new room may be: the service holds as many as it may.
    RoomLimit,
}

/// How many rooms the service holds, and how long an unused one is kept.
#[derive(Debug, Clone, Copy)]
pub struct RoomPolicy {
    /// The most rooms listed at once; opening one more is refused.
    pub max_rooms: usize,
    /// A room with nobody in it for this long is forgotten, with its events.
    pub idle: Duration,
}

impl Default for RoomPolicy {
    fn default() -> Self {
        Self { max_rooms: 10_000, idle: Duration::from_secs(30 * 24 * 3600) }
    }
}

/// A room as the room list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Its name.
    pub room: RoomName,
    /// How many users are in it now (as of the last report, a few seconds at most).
    pub online: usize,
}

/// What a presence sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// How many users left.
    pub left: usize,
    /// This node's connections whose name another user took while presence had lost
    /// them: they have no name now, and their clients must be told.
    pub lost: Vec<SessionId>,
}

/// Why a backend call failed.
#[derive(Debug, Error)]
pub enum BackendError {
    /// A reader asked for events the bus no longer keeps.
    #[error("the bus no longer holds events after {after}; the oldest it holds is {oldest}")]
    Trimmed {
        /// The position the reader asked to read after.
        after: Position,
        /// The oldest position the bus still holds.
        oldest: Position,
    },
    /// The bus a reader was reading was replaced by a new epoch (Redis lost its data):
    /// what came after the reader's position in the old one is gone.
    #[error("the room's stream was lost and started anew; events after the last one delivered may be gone")]
    EpochChanged,
    /// The event a reader delivered last is gone, though nothing was trimmed past it: a
    /// failover promoted a replica that never had it (and perhaps the events before it).
    #[error("the event at {after} that was delivered is gone (the newest before it is {last}): a failover lost events")]
    Rewound {
        /// The position the reader asked to read after.
        after: Position,
        /// The newest position the bus holds before it: reading on from there misses nothing.
        last: Position,
    },
    /// The line is published, but no replica acknowledged it in time (`replica`
    /// durability): it is delivered once one does, and lost if the master fails first.
    #[error("the event at {position} is published but no replica has it yet")]
    NotYetReplicated {
        /// Where it stands in the room's order.
        position: Position,
    },
    /// A line reached Redis after its deadline and was dropped there, unpublished.
    #[error("the line reached Redis too late and was dropped")]
    PastDeadline,
    /// Redis did not answer, or refused the command.
    #[error("Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered, but not in the form the node wrote.
    #[error("Redis answered something unexpected: {0}")]
    UnexpectedReply(String),
    /// Redis returned an id that is not a stream position.
    #[error("Redis returned an id that is not a position: {0}")]
    BadPosition(#[from] BadPosition),
    /// A room event could not be written as JSON.
    #[error("cannot encode a room event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The in-memory bus is gone (the node is stopping).
    #[error("the in-memory bus was dropped")]
    Closed,
}

/// The buses of all rooms.
pub trait Buses: Send + Sync {
    /// The bus of `room` (a room nobody wrote to yet has an empty one).
    fn room(&self, room: &RoomName) -> Arc<dyn EventBus>;
}

/// One room's ordered bus: every node delivers what it reads here, in this order.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Appends an event and returns its position; an error means it was not published.
    async fn publish(&self, event: RoomEvent) -> Result<Position, BackendError> {
        self.publish_by(event, None).await
    }

    /// Appends an event written by `user` (a chat line), kept with it so that the user's
    /// lines can be found again (never sent to clients), and returns its position.
    async fn publish_by(&self, event: RoomEvent, user: Option<&UserId>) -> Result<Position, BackendError>;

    /// Removes the event at `position` and returns it (`None` when the bus does not hold
    /// it). Unlike trimming, this leaves resuming readers alone: a reader that saw up to a
    /// position before it still resumes, without the deleted event.
    async fn delete(&self, position: Position) -> Result<Option<Delivered>, BackendError>;

    /// Removes every event older than `oldest_ms` (ms since the Unix epoch), as trimming
    /// does (a reader behind them gets a reset); returns how many went.
    async fn trim_older_than(&self, oldest_ms: u64) -> Result<u64, BackendError>;

    /// The positions of every chat line `user` wrote that the bus holds, oldest first
    /// (not the joins and renames about it).
    async fn written_by(&self, user: &UserId) -> Result<Vec<Position>, BackendError>;

    /// The position of the newest event (the default position when there is none).
    async fn tail(&self) -> Result<Position, BackendError>;

    /// Where the current epoch began and where it ends now.
    async fn span(&self) -> Result<Span, BackendError>;

    /// Up to `max` events before `before` (or the newest, without it), newest first.
    async fn newest(&self, before: Option<Position>, max: usize) -> Result<Vec<Delivered>, BackendError>;

    /// How many events it keeps, and the oldest of them (for operators).
    async fn stats(&self) -> Result<BusStats, BackendError>;

    /// Up to `max` events after `after`, oldest first, without waiting; `Trimmed` when
    /// some events after `after` are no longer kept.
    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError>;

    /// Up to `max` events after `after`, oldest first; waits until there is at least one.
    /// `EpochChanged` when the bus started a new epoch since the last read: read the new
    /// one from its start (after the default position).
    async fn read_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError>;
}

/// What a room's bus keeps, as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct BusStats {
    /// How many events it keeps.
    pub length: u64,
    /// The position of the oldest of them.
    pub oldest: Option<Position>,
}

/// What a node tells operators about itself, published every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// Its name.
    pub node: String,
    /// Where it listens, as it knows it.
    pub address: String,
    /// When it published this (ms since the Unix epoch).
    pub at_ms: u64,
    /// Its last beat in the cluster (ms since the Unix epoch), filled in when read.
    #[serde(default)]
    pub last_beat_ms: u64,
    /// Its connections over WebSocket.
    pub websocket: u64,
    /// Its connections over HTTP long-polling.
    pub polling: u64,
    /// Whether it is draining (shutting down, taking no new connections).
    pub draining: bool,
    /// How far its delivery of the lobby is behind the lobby's newest event (ms).
    pub delivery_lag_ms: u64,
}

/// The nodes alive and the users online, across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStatus {
    /// The nodes alive (beating within the node timeout), by name.
    pub nodes: Vec<NodeStatus>,
    /// Users online with a name.
    pub users_online: u64,
}

/// Session records (the legacy contract's `session:{sid}` with its `username`).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Records a new session with no username.
    async fn create(&self, sid: &SessionId) -> Result<(), BackendError>;

    /// Stores the session's username.
    async fn set_username(&self, sid: &SessionId, name: &Username) -> Result<(), BackendError>;

    /// The session has no username any more.
    async fn forget_username(&self, sid: &SessionId) -> Result<(), BackendError>;

    /// The session's username: `None` for no session, `Some("")` for a session without one.
    async fn username(&self, sid: &SessionId) -> Result<Option<String>, BackendError>;

    /// Deletes the session.
    async fn remove(&self, sid: &SessionId) -> Result<(), BackendError>;
}

//! Where a node keeps what the room shares, behind three traits: the ordered bus of room
//! events ([`EventBus`]), who is online ([`Presence`]) and the legacy session records
//! ([`SessionStore`]). [`memory`] serves one node; [`redis`] lets many nodes share a room.
//!
//! Invariant of every implementation: a presence change and its announcement on the bus
//! are one step, so the presence list and the room's events never disagree.

pub mod memory;
pub mod redis;

use app::protocol::{BadPosition, ClientKey, Position, PresenceList, RoomEvent, RoomLine, Username};
use async_trait::async_trait;
use std::fmt;
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
        RoomLine { pos: self.position, ts: self.position.ms, event: self.event.clone() }
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

/// Who a connection belongs to: the client key of a chatroom client (its tabs and
/// reconnects are one user), or the connection itself for any other client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// The user of a client key.
    pub fn from_key(key: &ClientKey) -> Self {
        Self(format!("k:{key}"))
    }

    /// The user that is this connection alone.
    pub fn of_connection(sid: &SessionId) -> Self {
        Self(format!("c:{sid}"))
    }

    /// A stored id read back (from a stream entry or a presence record).
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// Whether this user can come back as the same user (it has a client key).
    pub fn can_return(&self) -> bool {
        self.0.starts_with("k:")
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

/// Who is online: users, their connections, and their unique names. Every change to
/// the list is published on the bus in the same step as it is made, so the list and the
/// room's events never disagree.
#[async_trait]
pub trait Presence: Send + Sync {
    /// A connection of `user` opened; returns the name the user already has (another
    /// tab of it is online, or it came back within its grace period).
    async fn connect(&self, user: &UserId, sid: &SessionId) -> Result<Option<Username>, BackendError>;

    /// Gives `user` the name `name` unless another online user has one with the same
    /// [`NameKeys`](crate::names::NameKeys) key; announces a join or a rename.
    async fn claim(&self, user: &UserId, sid: &SessionId, name: &Username) -> Result<Claim, BackendError>;

    /// A connection closed. When it was the user's last, the user leaves once `grace`
    /// has passed without a new connection (at once when `grace` is zero).
    async fn disconnect(&self, user: &UserId, sid: &SessionId, grace: Duration) -> Result<(), BackendError>;

    /// The names online, sorted, and the position of the newest room event they reflect.
    async fn snapshot(&self) -> Result<PresenceList, BackendError>;

    /// Beats for this node and announces the leave of users whose grace period is over,
    /// and in a cluster of users of nodes that stopped beating. Writes this node's
    /// connections back when presence lost them (Redis lost data, or this node was taken
    /// for dead), and says which of them lost their name to someone else meanwhile.
    async fn sweep(&self) -> Result<Swept, BackendError>;
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

/// The room's one ordered bus: every node delivers what it reads here, in this order.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Appends an event and returns its position; an error means it was not published.
    async fn publish(&self, event: RoomEvent) -> Result<Position, BackendError>;

    /// The position of the newest event (the default position when there is none).
    async fn tail(&self) -> Result<Position, BackendError>;

    /// Where the current epoch began and where it ends now.
    async fn span(&self) -> Result<Span, BackendError>;

    /// Up to `max` events before `before` (or the newest, without it), newest first.
    async fn newest(&self, before: Option<Position>, max: usize) -> Result<Vec<Delivered>, BackendError>;

    /// Up to `max` events after `after`, oldest first, without waiting; `Trimmed` when
    /// some events after `after` are no longer kept.
    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError>;

    /// Up to `max` events after `after`, oldest first; waits until there is at least one.
    /// `EpochChanged` when the bus started a new epoch since the last read: read the new
    /// one from its start (after the default position).
    async fn read_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError>;
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

//! What operators impose and what every node must carry out: mutes and bans with their
//! end, the users added to private rooms, the audit trail of every action, and the
//! orders sent to every node (close a user's connections, take a user out of a room,
//! read the sanctions again). [`Moderation`] keeps them; `memory`
//! for one node, `redis` for a cluster.
//!
//! Invariant: a sanction in force (or a user added to a room) is in the store until its
//! end (or until it is taken back); nodes hold a copy that
//! they read again on every [`Order::Refresh`] and every few seconds, so a node that
//! missed an order is late by seconds at most.

use super::{BackendError, UserId};
use app::protocol::RoomName;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use tokio::sync::broadcast;

/// What a sanction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanctionKind {
    /// The user's lines are refused.
    Mute,
    /// The user may not connect.
    Ban,
}

/// Whom a sanction holds: a user (by client key, across reconnects), or a source
/// address (for clients without a key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A user.
    User(UserId),
    /// A source address.
    Address(IpAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(user) => write!(f, "user:{}", user.as_str()),
            Target::Address(addr) => write!(f, "address:{addr}"),
        }
    }
}

/// A mute or a ban, until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    /// What it does.
    pub kind: SanctionKind,
    /// Whom it holds.
    pub target: Target,
    /// The name the user had when it was imposed (for people reading the list).
    pub name: String,
    /// When it ends (ms since the Unix epoch).
    pub until_ms: u64,
}

impl Sanction {
    /// The key it is stored under: one sanction of a kind per target.
    pub fn key(&self) -> String {
        sanction_key(self.kind, &self.target)
    }

    /// Whether it holds at `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

/// The key of the sanction of `kind` on `target`.
pub fn sanction_key(kind: SanctionKind, target: &Target) -> String {
    let kind = match kind {
        SanctionKind::Mute => "mute",
        SanctionKind::Ban => "ban",
    };
    format!("{kind}|{target}")
}

/// One operator action, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The action (`delete`, `kick`, `mute`, `ban`, `unban`, `forget`, `retention`).
    pub action: String,
    /// What it was about (a line's room and position, a user's name, an address).
    pub subject: String,
    /// What it did (lines removed, connections closed, until when).
    pub outcome: String,
    /// The node that carried it out.
    pub node: String,
}

/// What every node must do at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Close every connection of this user; for one without a key, also sanction the
    /// connection's address with `then` (a mute or ban carried over to the address).
    Kick {
        /// The user.
        user: UserId,
        /// A sanction to put on the addresses of its keyless connections.
        then: Option<(SanctionKind, u64)>,
    },
    /// Apply the same to the user's connections, without closing them (a mute).
    Mark {
        /// The user.
        user: UserId,
        /// The sanction to put on the addresses of its keyless connections.
        then: (SanctionKind, u64),
    },
    /// Take this user out of this private room on every node (it was taken off the
    /// room's members).
    Revoke {
        /// The room.
        room: RoomName,
        /// The user.
        user: UserId,
    },
    /// The sanctions or the rooms' members changed: read them again.
    Refresh,
}

/// A user an operator added to a private room: `room|user` as the store keeps it.
pub fn member_key(room: &RoomName, user: &UserId) -> String {
    format!("{room}|{}", user.as_str())
}

/// The room and user of a [`member_key`] (a room name holds no `|`).
pub fn member_of_key(key: &str) -> Option<(RoomName, UserId)> {
    let (room, user) = key.split_once('|')?;
    Some((RoomName::parse(room).ok()?, UserId::from_stored(user.to_owned())))
}

/// The sanctions, the audit trail and the orders of the whole service.
#[async_trait]
pub trait Moderation: Send + Sync {
    /// Imposes `sanction`, replacing one of the same kind on the same target.
    async fn impose(&self, sanction: &Sanction) -> Result<(), BackendError>;

    /// Lifts the sanction of `kind` on `target`; whether there was one.
    async fn lift(&self, kind: SanctionKind, target: &Target) -> Result<bool, BackendError>;

    /// The sanctions in force (those that ended are forgotten).
    async fn sanctions(&self) -> Result<Vec<Sanction>, BackendError>;

    /// Lets `user` join the private `room`, besides the users whose token lists it.
    async fn add_member(&self, room: &RoomName, user: &UserId) -> Result<(), BackendError>;

    /// Takes that back; whether the user had been added.
    async fn remove_member(&self, room: &RoomName, user: &UserId) -> Result<bool, BackendError>;

    /// Every user added to a private room, with the room.
    async fn members(&self) -> Result<Vec<(RoomName, UserId)>, BackendError>;

    /// Adds an action to the audit trail (the newest few thousand are kept).
    async fn record(&self, entry: &AuditEntry) -> Result<(), BackendError>;

    /// The newest `max` actions, newest first.
    async fn audit(&self, max: usize) -> Result<Vec<AuditEntry>, BackendError>;

    /// Sends `order` to every node, this one included.
    async fn broadcast(&self, order: &Order) -> Result<(), BackendError>;

    /// The orders sent to this node from now on.
    fn orders(&self) -> broadcast::Receiver<Order>;
}

/// How many audit entries are kept.
pub const AUDIT_KEPT: usize = 10_000;

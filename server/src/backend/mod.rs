//! Where a node keeps what the room shares: the ordered bus of room events and the
//! session records. In-memory for one node; the Redis backend implements the same traits.

pub mod memory;
pub mod redis;

use app::protocol::RoomEvent;
use async_trait::async_trait;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A room-wide position in the one order of room events, written like a Redis
/// stream id (`millis-seq`) so that both backends share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A position that is not `millis-seq`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not a position (expected MILLIS-SEQ): {0:?}")]
pub struct BadPosition(String);

impl FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.to_owned());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Position { ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

/// A room event with the position the bus gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Where it stands in the room's order.
    pub position: Position,
    /// What happened.
    pub event: RoomEvent,
}

/// Why a backend call failed.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("the bus no longer holds events after {after}; the oldest it holds is {oldest}")]
    Trimmed { after: Position, oldest: Position },
    #[error("the backend is unavailable: {0}")]
    Unavailable(String),
}

/// The room's one ordered bus: every node delivers what it reads here, in this order.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Appends an event and returns its position; an error means it was not published.
    async fn publish(&self, event: RoomEvent) -> Result<Position, BackendError>;

    /// The position of the newest event (the default position when there is none).
    async fn tail(&self) -> Result<Position, BackendError>;

    /// The newest `max` events, oldest first.
    async fn recent(&self, max: usize) -> Result<Vec<Delivered>, BackendError>;

    /// Up to `max` events after `after`, oldest first, without waiting; `Trimmed` when
    /// some events after `after` are no longer kept.
    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError>;

    /// Up to `max` events after `after`, oldest first; waits until there is at least one.
    async fn read_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError>;
}

/// Session records, keyed by Socket.IO session id.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Records a new session with no username.
    async fn create(&self, sid: &str) -> Result<(), BackendError>;

    /// Stores the session's username.
    async fn set_username(&self, sid: &str, name: &str) -> Result<(), BackendError>;

    /// The session's username: `None` for no session, `Some("")` for a session without one.
    async fn username(&self, sid: &str) -> Result<Option<String>, BackendError>;

    /// Deletes the session.
    async fn remove(&self, sid: &str) -> Result<(), BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_parse_and_order_like_stream_ids() {
        let p: Position = "1700000000000-3".parse().unwrap();
        assert_eq!(p, Position { ms: 1_700_000_000_000, seq: 3 });
        assert_eq!(p.to_string(), "1700000000000-3");
        assert!(Position { ms: 1, seq: 9 } < Position { ms: 2, seq: 0 });
        for bad in ["", "12", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}

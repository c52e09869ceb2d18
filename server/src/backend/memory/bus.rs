//! The rooms' buses in one process: for each room, a sequencer handing out stream-like
//! positions and a ring of the newest events, which it evicts like a capped Redis
//! stream. A room's epoch begins when this process first uses it: positions of an
//! earlier run are older.

use crate::backend::{BackendError, BusStats, Buses, Delivered, EventBus, Span, UserId};
use app::protocol::{Position, RoomEvent, RoomName};
use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::watch;

/// Every room's bus, made when a room is first used.
pub struct MemoryBuses {
    rooms: Mutex<HashMap<RoomName, Arc<MemoryBus>>>,
    capacity: usize,
}

impl MemoryBuses {
    /// Buses that each keep the newest `capacity` events for readers that lag.
    pub fn new(capacity: usize) -> Self {
        Self { rooms: Mutex::new(HashMap::new()), capacity }
    }

    /// Forgets `room` and its events (it was idle too long).
    pub fn forget(&self, room: &RoomName) {
        self.rooms.lock().remove(room);
    }

    /// The bus of `room`, as its own type.
    pub fn bus(&self, room: &RoomName) -> Arc<MemoryBus> {
        self.rooms.lock().entry(room.clone()).or_insert_with(|| Arc::new(MemoryBus::new(self.capacity))).clone()
    }
}

impl Buses for MemoryBuses {
    fn room(&self, room: &RoomName) -> Arc<dyn EventBus> {
        self.bus(room)
    }
}

/// One room's bus: keeps the newest events in order; readers wait on a watch of the
/// newest position.
pub struct MemoryBus {
    ring: Mutex<Ring>,
    capacity: usize,
    newest: watch::Sender<Position>,
    /// Where this process's epoch begins.
    epoch: Position,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Delivered>,
    /// The newest position handed out.
    last: Position,
    /// The newest position no longer kept (like a Redis stream's `max-deleted-entry-id`).
    max_deleted: Position,
}

impl MemoryBus {
    /// A bus that keeps the newest `capacity` events for readers that lag.
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
            newest: watch::Sender::new(Position::default()),
            epoch: Position { ms: crate::clock::now_ms(), seq: 0 },
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock()
    }

    fn events_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let ring = self.ring();
        if after < ring.max_deleted {
            let oldest = ring.events.front().map(|d| d.position).unwrap_or(ring.last);
            return Err(BackendError::Trimmed { after, oldest });
        }
        let start = ring.events.partition_point(|d| d.position <= after);
        Ok(ring.events.range(start..).take(max).cloned().collect())
    }
}

impl MemoryBus {
    /// Appends an event (about `user`, for joins and renames) and returns its position.
    pub fn append(&self, event: RoomEvent, user: Option<UserId>) -> Position {
        let position = {
            let mut ring = self.ring();
            // Like a stream id: the time, and a sequence within the same millisecond.
            let now = crate::clock::now_ms();
            let position = if now > ring.last.ms {
                Position { ms: now, seq: 0 }
            } else {
                Position { ms: ring.last.ms, seq: ring.last.seq + 1 }
            };
            ring.last = position;
            ring.events.push_back(Delivered { position, event, user });
            if ring.events.len() > self.capacity
                && let Some(evicted) = ring.events.pop_front()
            {
                ring.max_deleted = evicted.position;
            }
            position
        };
        self.newest.send_replace(position);
        position
    }

    /// The position of the newest event published.
    pub fn last(&self) -> Position {
        self.ring().last
    }

    /// Every event kept, oldest first (for tests).
    #[cfg(test)]
    pub(crate) fn events(&self) -> Vec<RoomEvent> {
        self.ring().events.iter().map(|d| d.event.clone()).collect()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish_by(&self, event: RoomEvent, user: Option<&UserId>) -> Result<Position, BackendError> {
        Ok(self.append(event, user.cloned()))
    }

    async fn delete(&self, position: Position) -> Result<Option<Delivered>, BackendError> {
        let mut ring = self.ring();
        let Ok(at) = ring.events.binary_search_by(|d| d.position.cmp(&position)) else { return Ok(None) };
        // Not a trim: `max_deleted` stays, so readers before it still resume.
        Ok(ring.events.remove(at))
    }

    async fn trim_older_than(&self, oldest_ms: u64) -> Result<u64, BackendError> {
        let mut ring = self.ring();
        let mut trimmed = 0;
        while ring.events.front().is_some_and(|d| d.position.ms < oldest_ms) {
            if let Some(gone) = ring.events.pop_front() {
                ring.max_deleted = gone.position;
                trimmed += 1;
            }
        }
        Ok(trimmed)
    }

    async fn written_by(&self, user: &UserId) -> Result<Vec<Position>, BackendError> {
        Ok(self
            .ring()
            .events
            .iter()
            .filter(|d| d.user.as_ref() == Some(user) && matches!(d.event, RoomEvent::Chat { .. }))
            .map(|d| d.position)
            .collect())
    }

    async fn tail(&self) -> Result<Position, BackendError> {
        Ok(*self.newest.borrow())
    }

    async fn span(&self) -> Result<Span, BackendError> {
        let tail = self.ring().last;
        Ok(Span { epoch: if tail == Position::default() { tail } else { self.epoch }, tail })
    }

    async fn newest(&self, before: Option<Position>, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let ring = self.ring();
        let end = before.map_or(ring.events.len(), |before| ring.events.partition_point(|d| d.position < before));
        Ok(ring.events.range(..end).rev().take(max).cloned().collect())
    }

    async fn stats(&self) -> Result<BusStats, BackendError> {
        let ring = self.ring();
        Ok(BusStats { length: ring.events.len() as u64, oldest: ring.events.front().map(|d| d.position) })
    }

    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        self.events_after(after, max)
    }

    async fn read_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        // Subscribe before looking, so a publish between the look and the wait wakes us.
        let mut newest = self.newest.subscribe();
        loop {
            let events = self.events_after(after, max.max(1))?;
            if !events.is_empty() {
                return Ok(events);
            }
            newest.changed().await.map_err(|_| BackendError::Closed)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn chat(n: usize) -> RoomEvent {
        RoomEvent::Chat { author: "a".into(), text: n.to_string() }
    }

    #[tokio::test]
    async fn positions_increase_and_reads_follow_the_order() {
        let bus = MemoryBus::new(100);
        assert_eq!(bus.tail().await.unwrap(), Position::default());
        for n in 0..5 {
            bus.publish(chat(n)).await.unwrap();
        }
        let all = bus.read_after(Position::default(), 100).await.unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.windows(2).all(|w| w[0].position < w[1].position), "positions increase");
        assert!(all[0].position.ms > 1_600_000_000_000, "positions carry the time");
        assert_eq!(all[2].event, chat(2));
        let tail = bus.read_after(all[2].position, 1).await.unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].event, chat(3));
        assert_eq!(bus.tail().await.unwrap(), all[4].position);
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_next_publish() {
        let bus = Arc::new(MemoryBus::new(10));
        let reader = tokio::spawn({
            let bus = bus.clone();
            async move { bus.read_after(Position::default(), 10).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished());
        bus.publish(chat(7)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), reader).await.unwrap().unwrap().unwrap();
        assert_eq!(got[0].event, chat(7));
    }

    #[tokio::test]
    async fn a_reader_behind_the_kept_events_is_told() {
        let bus = MemoryBus::new(3);
        for n in 0..6 {
            bus.publish(chat(n)).await.unwrap();
        }
        let mut kept = bus.newest(None, 10).await.unwrap();
        kept.reverse();
        assert_eq!(kept.iter().map(|d| d.event.clone()).collect::<Vec<_>>(), [chat(3), chat(4), chat(5)]);
        match bus.read_after(Position::default(), 10).await {
            Err(BackendError::Trimmed { oldest, .. }) => assert_eq!(oldest, kept[0].position),
            other => panic!("expected Trimmed, got {other:?}"),
        }
        // From the newest evicted event on, nothing is missing.
        let newest_evicted = bus.ring().max_deleted;
        assert_eq!(bus.range_after(newest_evicted, 10).await.unwrap(), kept);
        assert_eq!(bus.newest(None, 2).await.unwrap(), [kept[2].clone(), kept[1].clone()]);
        assert_eq!(bus.newest(Some(kept[2].position), 1).await.unwrap(), [kept[1].clone()]);
        assert!(bus.range_after(kept[2].position, 10).await.unwrap().is_empty());
    }
}

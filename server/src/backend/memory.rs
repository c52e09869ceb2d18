//! The single-node backend: an in-process sequencer and a session map.

use super::{BackendError, Delivered, EventBus, Position, SessionStore};
use app::protocol::RoomEvent;
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Keeps the newest events in order; readers wait on a watch of the newest position.
pub struct MemoryBus {
    ring: Mutex<Ring>,
    capacity: usize,
    newest: watch::Sender<Position>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Delivered>,
    last_seq: u64,
}

impl MemoryBus {
    /// A bus that keeps the newest `capacity` events for readers that lag.
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
            newest: watch::Sender::new(Position::default()),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring half-written (each
        // change is one push or pop), so a poisoned lock is still safe to use.
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn events_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let ring = self.ring();
        if let Some(oldest) = ring.events.front()
            && after.seq + 1 < oldest.position.seq
        {
            return Err(BackendError::Trimmed { after, oldest: oldest.position });
        }
        let start = ring.events.partition_point(|d| d.position <= after);
        Ok(ring.events.range(start..).take(max).cloned().collect())
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: RoomEvent) -> Result<Position, BackendError> {
        let position = {
            let mut ring = self.ring();
            ring.last_seq += 1;
            let position = Position { ms: 0, seq: ring.last_seq };
            ring.events.push_back(Delivered { position, event });
            if ring.events.len() > self.capacity {
                ring.events.pop_front();
            }
            position
        };
        self.newest.send_replace(position);
        Ok(position)
    }

    async fn tail(&self) -> Result<Position, BackendError> {
        Ok(*self.newest.borrow())
    }

    async fn read_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        // Subscribe before looking, so a publish between the look and the wait wakes us.
        let mut newest = self.newest.subscribe();
        loop {
            let events = self.events_after(after, max.max(1))?;
            if !events.is_empty() {
                return Ok(events);
            }
            newest.changed().await.map_err(|_| BackendError::Unavailable("the bus was dropped".into()))?;
        }
    }
}

/// Session records in a map.
#[derive(Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<String, String>>,
}

impl MemorySessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn create(&self, sid: &str) -> Result<(), BackendError> {
        self.map().insert(sid.to_owned(), String::new());
        Ok(())
    }

    async fn set_username(&self, sid: &str, name: &str) -> Result<(), BackendError> {
        self.map().insert(sid.to_owned(), name.to_owned());
        Ok(())
    }

    async fn username(&self, sid: &str) -> Result<Option<String>, BackendError> {
        Ok(self.map().get(sid).cloned())
    }

    async fn remove(&self, sid: &str) -> Result<(), BackendError> {
        self.map().remove(sid);
        Ok(())
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
        let seqs: Vec<u64> = all.iter().map(|d| d.position.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
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
        match bus.read_after(Position::default(), 10).await {
            Err(BackendError::Trimmed { oldest, .. }) => assert_eq!(oldest.seq, 4),
            other => panic!("expected Trimmed, got {other:?}"),
        }
        // Right before the oldest kept event is still readable without a gap.
        let got = bus.read_after(Position { ms: 0, seq: 3 }, 10).await.unwrap();
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn sessions_are_created_named_and_removed() {
        let store = MemorySessions::default();
        store.create("s1").await.unwrap();
        assert_eq!(store.username("s1").await.unwrap().as_deref(), Some(""));
        store.set_username("s1", "ann").await.unwrap();
        assert_eq!(store.username("s1").await.unwrap().as_deref(), Some("ann"));
        store.remove("s1").await.unwrap();
        assert_eq!(store.username("s1").await.unwrap(), None);
    }
}

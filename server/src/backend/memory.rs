//! The single-node backend: an in-process sequencer and a session map.

use super::{BackendError, Claim, Delivered, EventBus, Position, Presence, SessionStore, UserId};
use app::protocol::RoomEvent;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
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
    /// The newest position handed out.
    last: Position,
    /// The newest position no longer kept (like a Redis stream's `max-deleted-entry-id`).
    max_deleted: Position,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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
            let now = now_ms();
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
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: RoomEvent) -> Result<Position, BackendError> {
        Ok(self.append(event, None))
    }

    async fn tail(&self) -> Result<Position, BackendError> {
        Ok(*self.newest.borrow())
    }

    async fn recent(&self, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let ring = self.ring();
        let skip = ring.events.len().saturating_sub(max);
        Ok(ring.events.iter().skip(skip).cloned().collect())
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

/// One online user of the in-memory presence.
#[derive(Default)]
struct OnlineUser {
    /// The name and its folded form, once it took one.
    name: Option<(String, String)>,
    conns: HashSet<String>,
    /// When it leaves unless a connection comes back; set while it has none.
    leaves_at: Option<Instant>,
}

#[derive(Default)]
struct Roster {
    users: HashMap<UserId, OnlineUser>,
    /// Folded name to its owner.
    owners: HashMap<String, UserId>,
}

/// Presence of a single node: a roster in a map, its changes appended to the bus under
/// the roster's lock so that a snapshot and the bus agree.
pub struct MemoryPresence {
    bus: Arc<MemoryBus>,
    roster: Mutex<Roster>,
}

impl MemoryPresence {
    /// Presence that announces its changes on `bus`.
    pub fn new(bus: Arc<MemoryBus>) -> Self {
        Self { bus, roster: Mutex::new(Roster::default()) }
    }

    fn roster(&self) -> MutexGuard<'_, Roster> {
        // Every change below keeps the roster consistent at each step.
        self.roster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes a user with no connection left, announcing its leave if it had a name.
    fn leave(&self, roster: &mut Roster, user: &UserId) -> bool {
        let Some(gone) = roster.users.remove(user) else { return false };
        let Some((name, folded)) = gone.name else { return false };
        if roster.owners.get(&folded) == Some(user) {
            roster.owners.remove(&folded);
        }
        self.bus.append(RoomEvent::Left { author: name }, None);
        true
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn connect(&self, user: &UserId, sid: &str) -> Result<Option<String>, BackendError> {
        let mut roster = self.roster();
        let online = roster.users.entry(user.clone()).or_default();
        online.conns.insert(sid.to_owned());
        online.leaves_at = None;
        Ok(online.name.as_ref().map(|(name, _)| name.clone()))
    }

    async fn claim(&self, user: &UserId, sid: &str, name: &str, folded: &str) -> Result<Claim, BackendError> {
        let mut roster = self.roster();
        if roster.owners.get(folded).is_some_and(|owner| owner != user) {
            return Ok(Claim::Taken);
        }
        let online = roster.users.entry(user.clone()).or_default();
        online.conns.insert(sid.to_owned());
        online.leaves_at = None;
        let previous = online.name.replace((name.to_owned(), folded.to_owned()));
        let (claim, event) = match previous {
            Some((old, _)) if old == name => return Ok(Claim::Unchanged),
            Some((old, old_folded)) => {
                if old_folded != folded {
                    roster.owners.remove(&old_folded);
                }
                (Claim::Renamed, RoomEvent::Renamed { author: name.to_owned(), from: old })
            }
            None => (Claim::Joined, RoomEvent::Joined { author: name.to_owned() }),
        };
        roster.owners.insert(folded.to_owned(), user.clone());
        self.bus.append(event, Some(user.clone()));
        Ok(claim)
    }

    async fn disconnect(&self, user: &UserId, sid: &str, grace: Duration) -> Result<(), BackendError> {
        let mut roster = self.roster();
        let Some(online) = roster.users.get_mut(user) else { return Ok(()) };
        online.conns.remove(sid);
        if !online.conns.is_empty() {
            return Ok(());
        }
        if grace.is_zero() || online.name.is_none() {
            self.leave(&mut roster, user);
        } else {
            online.leaves_at = Some(Instant::now() + grace);
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<(Vec<String>, Position), BackendError> {
        let roster = self.roster();
        let mut names: Vec<String> =
            roster.users.values().filter_map(|u| u.name.as_ref().map(|(name, _)| name.clone())).collect();
        names.sort();
        Ok((names, self.bus.last()))
    }

    async fn sweep(&self) -> Result<usize, BackendError> {
        let mut roster = self.roster();
        let now = Instant::now();
        let due: Vec<UserId> = roster
            .users
            .iter()
            .filter(|(_, u)| u.conns.is_empty() && u.leaves_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        Ok(due.iter().filter(|user| self.leave(&mut roster, user)).count())
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
        let kept = bus.recent(10).await.unwrap();
        assert_eq!(kept.iter().map(|d| d.event.clone()).collect::<Vec<_>>(), [chat(3), chat(4), chat(5)]);
        match bus.read_after(Position::default(), 10).await {
            Err(BackendError::Trimmed { oldest, .. }) => assert_eq!(oldest, kept[0].position),
            other => panic!("expected Trimmed, got {other:?}"),
        }
        // From the newest evicted event on, nothing is missing.
        let newest_evicted = bus.ring().max_deleted;
        assert_eq!(bus.range_after(newest_evicted, 10).await.unwrap(), kept);
        assert_eq!(bus.recent(2).await.unwrap(), kept[1..]);
        assert!(bus.range_after(kept[2].position, 10).await.unwrap().is_empty());
    }

    fn events(bus: &MemoryBus) -> Vec<RoomEvent> {
        bus.ring().events.iter().map(|d| d.event.clone()).collect()
    }

    #[tokio::test]
    async fn names_are_unique_and_changes_are_announced_once() {
        let bus = Arc::new(MemoryBus::new(100));
        let presence = MemoryPresence::new(bus.clone());
        let (ann, bob) = (UserId::from_key("ann-key-0123456789"), UserId::of_connection("s2"));
        assert_eq!(presence.connect(&ann, "s1").await.unwrap(), None);
        presence.connect(&bob, "s2").await.unwrap();
        assert_eq!(presence.claim(&ann, "s1", "Ann", "ann").await.unwrap(), Claim::Joined);
        assert_eq!(presence.claim(&bob, "s2", "ANN", "ann").await.unwrap(), Claim::Taken);
        assert_eq!(presence.claim(&ann, "s1", "Ann", "ann").await.unwrap(), Claim::Unchanged);
        assert_eq!(presence.claim(&ann, "s1", "Annie", "annie").await.unwrap(), Claim::Renamed);
        assert_eq!(presence.claim(&bob, "s2", "ann", "ann").await.unwrap(), Claim::Joined, "the old name is free");
        // A second tab of ann is the same user, with the same name.
        assert_eq!(presence.connect(&ann, "s3").await.unwrap().as_deref(), Some("Annie"));
        let (names, at) = presence.snapshot().await.unwrap();
        assert_eq!((names, at), (vec!["Annie".to_owned(), "ann".to_owned()], bus.last()));
        assert_eq!(
            events(&bus),
            [
                RoomEvent::Joined { author: "Ann".into() },
                RoomEvent::Renamed { author: "Annie".into(), from: "Ann".into() },
                RoomEvent::Joined { author: "ann".into() },
            ]
        );
        assert_eq!(bus.ring().events[0].user.as_ref(), Some(&ann));
    }

    #[tokio::test]
    async fn a_user_leaves_after_its_grace_period_unless_it_comes_back() {
        let bus = Arc::new(MemoryBus::new(100));
        let presence = MemoryPresence::new(bus.clone());
        let ann = UserId::from_key("ann-key-0123456789");
        presence.claim(&ann, "s1", "ann", "ann").await.unwrap();
        let grace = Duration::from_millis(50);
        presence.disconnect(&ann, "s1", grace).await.unwrap();
        presence.connect(&ann, "s2").await.unwrap();
        tokio::time::sleep(grace * 2).await;
        assert_eq!(presence.sweep().await.unwrap(), 0, "it came back in time");
        presence.disconnect(&ann, "s2", grace).await.unwrap();
        assert_eq!(presence.sweep().await.unwrap(), 0, "still within its grace period");
        assert_eq!(presence.snapshot().await.unwrap().0, ["ann"]);
        tokio::time::sleep(grace * 2).await;
        assert_eq!(presence.sweep().await.unwrap(), 1);
        assert!(presence.snapshot().await.unwrap().0.is_empty());
        assert_eq!(events(&bus).last(), Some(&RoomEvent::Left { author: "ann".into() }));

        // Without a grace period the leave is at once.
        let carl = UserId::of_connection("s9");
        presence.claim(&carl, "s9", "carl", "carl").await.unwrap();
        presence.disconnect(&carl, "s9", Duration::ZERO).await.unwrap();
        assert_eq!(events(&bus).last(), Some(&RoomEvent::Left { author: "carl".into() }));
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

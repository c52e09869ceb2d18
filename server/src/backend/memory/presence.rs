//! Who is online on a single node: a roster in a map, each change appended to the bus
//! under the roster's lock, so that a snapshot and the bus always agree.

use super::MemoryBus;
use crate::backend::{BackendError, Claim, Presence, SessionId, Swept, UserId};
use crate::names::{FoldedName, NameKeys};
use app::protocol::{PresenceList, RoomEvent, Username};
use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One online user of the in-memory presence.
#[derive(Default)]
struct OnlineUser {
    /// The name and its keys, once it took one.
    name: Option<(Username, NameKeys)>,
    conns: HashSet<SessionId>,
    /// When it leaves unless a connection comes back; set while it has none.
    leaves_at: Option<Instant>,
}

#[derive(Default)]
struct Roster {
    users: HashMap<UserId, OnlineUser>,
    /// Each key of a name held to its owner.
    owners: HashMap<FoldedName, UserId>,
}

/// Presence of a single node.
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
        self.roster.lock()
    }

    /// Removes a user with no connection left, announcing its leave if it had a name.
    fn leave(&self, roster: &mut Roster, user: &UserId) -> bool {
        let Some(gone) = roster.users.remove(user) else { return false };
        let Some((name, keys)) = gone.name else { return false };
        release(roster, &keys, user);
        self.bus.append(RoomEvent::Left { author: name.to_string() }, None);
        true
    }
}

/// Frees the keys of a name `user` held.
fn release(roster: &mut Roster, keys: &NameKeys, user: &UserId) {
    for key in keys.iter() {
        if roster.owners.get(key) == Some(user) {
            roster.owners.remove(key);
        }
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn connect(&self, user: &UserId, sid: &SessionId) -> Result<Option<Username>, BackendError> {
        let mut roster = self.roster();
        let online = roster.users.entry(user.clone()).or_default();
        online.conns.insert(sid.clone());
        online.leaves_at = None;
        Ok(online.name.as_ref().map(|(name, _)| name.clone()))
    }

    async fn claim(&self, user: &UserId, sid: &SessionId, name: &Username) -> Result<Claim, BackendError> {
        let keys = NameKeys::of(name);
        let mut roster = self.roster();
        if keys.iter().any(|key| roster.owners.get(key).is_some_and(|owner| owner != user)) {
            return Ok(Claim::Taken);
        }
        let online = roster.users.entry(user.clone()).or_default();
        online.conns.insert(sid.clone());
        online.leaves_at = None;
        let previous = online.name.replace((name.clone(), keys.clone()));
        let (claim, event) = match previous {
            Some((old, _)) if old == *name => return Ok(Claim::Unchanged),
            Some((old, old_keys)) => {
                release(&mut roster, &old_keys, user);
                (Claim::Renamed, RoomEvent::Renamed { author: name.to_string(), from: old.to_string() })
            }
            None => (Claim::Joined, RoomEvent::Joined { author: name.to_string() }),
        };
        for key in keys.iter() {
            roster.owners.insert(key.clone(), user.clone());
        }
        self.bus.append(event, Some(user.clone()));
        Ok(claim)
    }

    async fn disconnect(&self, user: &UserId, sid: &SessionId, grace: Duration) -> Result<(), BackendError> {
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

    async fn snapshot(&self) -> Result<PresenceList, BackendError> {
        let roster = self.roster();
        let mut users: Vec<String> =
            roster.users.values().filter_map(|u| u.name.as_ref().map(|(name, _)| name.to_string())).collect();
        users.sort();
        Ok(PresenceList { at: self.bus.last(), users })
    }

    async fn sweep(&self) -> Result<Swept, BackendError> {
        let mut roster = self.roster();
        let now = Instant::now();
        let due: Vec<UserId> = roster
            .users
            .iter()
            .filter(|(_, u)| u.conns.is_empty() && u.leaves_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        let left = due.iter().filter(|user| self.leave(&mut roster, user)).count();
        // One process cannot lose a name to another behind its back.
        Ok(Swept { left, lost: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(id: &str) -> SessionId {
        SessionId::new(id)
    }

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    fn key_user(key: &str) -> UserId {
        UserId::from_key(&key.parse().unwrap())
    }

    #[tokio::test]
    async fn names_are_unique_and_changes_are_announced_once() {
        let bus = Arc::new(MemoryBus::new(100));
        let presence = MemoryPresence::new(bus.clone());
        let (ann, bob) = (key_user("ann-key-0123456789"), UserId::of_connection(&sid("s2")));
        assert_eq!(presence.connect(&ann, &sid("s1")).await.unwrap(), None);
        presence.connect(&bob, &sid("s2")).await.unwrap();
        assert_eq!(presence.claim(&ann, &sid("s1"), &name("Ann")).await.unwrap(), Claim::Joined);
        assert_eq!(presence.claim(&bob, &sid("s2"), &name("ANN")).await.unwrap(), Claim::Taken);
        assert_eq!(presence.claim(&ann, &sid("s1"), &name("Ann")).await.unwrap(), Claim::Unchanged);
        assert_eq!(presence.claim(&ann, &sid("s1"), &name("Annie")).await.unwrap(), Claim::Renamed);
        assert_eq!(
            presence.claim(&bob, &sid("s2"), &name("ann")).await.unwrap(),
            Claim::Joined,
            "the old name is free"
        );
        // A second tab of ann is the same user, with the same name.
        assert_eq!(presence.connect(&ann, &sid("s3")).await.unwrap(), Some(name("Annie")));
        let list = presence.snapshot().await.unwrap();
        assert_eq!((list.users, list.at), (vec!["Annie".to_owned(), "ann".to_owned()], bus.last()));
        assert_eq!(
            bus.events(),
            [
                RoomEvent::Joined { author: "Ann".into() },
                RoomEvent::Renamed { author: "Annie".into(), from: "Ann".into() },
                RoomEvent::Joined { author: "ann".into() },
            ]
        );
        let first = crate::backend::EventBus::range_after(&*bus, Default::default(), 1).await.unwrap();
        assert_eq!(first[0].user.as_ref(), Some(&ann));
    }

    #[tokio::test]
    async fn a_user_leaves_after_its_grace_period_unless_it_comes_back() {
        let bus = Arc::new(MemoryBus::new(100));
        let presence = MemoryPresence::new(bus.clone());
        let ann = key_user("ann-key-0123456789");
        presence.claim(&ann, &sid("s1"), &name("ann")).await.unwrap();
        let grace = Duration::from_millis(50);
        presence.disconnect(&ann, &sid("s1"), grace).await.unwrap();
        presence.connect(&ann, &sid("s2")).await.unwrap();
        tokio::time::sleep(grace * 2).await;
        assert_eq!(presence.sweep().await.unwrap().left, 0, "it came back in time");
        presence.disconnect(&ann, &sid("s2"), grace).await.unwrap();
        assert_eq!(presence.sweep().await.unwrap().left, 0, "still within its grace period");
        assert_eq!(presence.snapshot().await.unwrap().users, ["ann"]);
        tokio::time::sleep(grace * 2).await;
        assert_eq!(presence.sweep().await.unwrap().left, 1);
        assert!(presence.snapshot().await.unwrap().users.is_empty());
        assert_eq!(bus.events().last(), Some(&RoomEvent::Left { author: "ann".into() }));

        // Without a grace period the leave is at once.
        let carl = UserId::of_connection(&sid("s9"));
        presence.claim(&carl, &sid("s9"), &name("carl")).await.unwrap();
        presence.disconnect(&carl, &sid("s9"), Duration::ZERO).await.unwrap();
        assert_eq!(bus.events().last(), Some(&RoomEvent::Left { author: "carl".into() }));
    }
}

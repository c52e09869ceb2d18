//! Who is online on a single node: a roster in a map, each change appended to its
//! room's bus under the roster's lock, so that a room's list and its bus always agree.

use super::MemoryBuses;
use crate::backend::{
    BackendError, Claim, ClusterStatus, Entered, NodeStatus, Presence, RoomInfo, RoomPolicy, SessionId, Swept, UserId,
};
use crate::names::{FoldedName, NameKeys};
use app::protocol::{PresenceList, RoomEvent, RoomName, Username};
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
    /// When it loses its name unless a connection comes back; set while it has none.
    leaves_at: Option<Instant>,
}

/// A user in one room.
#[derive(Default)]
struct RoomMember {
    /// Its connections in the room.
    conns: HashSet<SessionId>,
    /// The name the room knows it by (announced there), once it has one.
    announced: Option<Username>,
    /// When it leaves the room unless a connection comes back; set while it has none.
    leaves_at: Option<Instant>,
}

#[derive(Default)]
struct Roster {
    users: HashMap<UserId, OnlineUser>,
    /// Each key of a name held to its owner.
    owners: HashMap<FoldedName, UserId>,
    rooms: HashMap<RoomName, HashMap<UserId, RoomMember>>,
    /// The rooms in use, with when they last had a member.
    listed: HashMap<RoomName, Instant>,
}

/// Presence of a single node.
pub struct MemoryPresence {
    buses: Arc<MemoryBuses>,
    roster: Mutex<Roster>,
    policy: RoomPolicy,
    /// The node's last published status: the only node there is.
    status: Mutex<Option<NodeStatus>>,
}

impl MemoryPresence {
    /// Presence that announces its changes on the rooms' `buses`.
    pub fn new(buses: Arc<MemoryBuses>) -> Self {
        Self { buses, roster: Mutex::new(Roster::default()), policy: RoomPolicy::default(), status: Mutex::new(None) }
    }

    /// The same presence holding rooms by `policy`.
    pub fn with_policy(self, policy: RoomPolicy) -> Self {
        Self { policy, ..self }
    }

    fn roster(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock()
    }

    fn announce(&self, room: &RoomName, event: RoomEvent, user: Option<&UserId>) {
        self.buses.bus(room).append(event, user.cloned());
    }

    /// Makes the room know `user` by `name`: a join, or a rename.
    fn announce_name(&self, room: &RoomName, member: &mut RoomMember, user: &UserId, name: &Username) {
        let event = match member.announced.replace(name.clone()) {
            Some(old) if old == *name => return,
            Some(old) => RoomEvent::Renamed { author: name.to_string(), from: old.to_string() },
            None => RoomEvent::Joined { author: name.to_string() },
        };
        self.announce(room, event, Some(user));
    }

    /// `user` leaves `room`, announced if the room knew its name; returns whether it was.
    fn leave_room(&self, roster: &mut Roster, room: &RoomName, user: &UserId) -> bool {
        let Some(members) = roster.rooms.get_mut(room) else { return false };
        let Some(gone) = members.remove(user) else { return false };
        if members.is_empty() {
            roster.rooms.remove(room);
        }
        let Some(name) = gone.announced else { return false };
        self.announce(room, RoomEvent::Left { author: name.to_string() }, None);
        true
    }

    /// `sid` of `user` leaves `room`; the user with it when it was its last there: at once
    /// without a grace period (or without a name), else once it is over.
    fn drop_from_room(&self, roster: &mut Roster, room: &RoomName, user: &UserId, sid: &SessionId, grace: Duration) {
        let Some(member) = roster.rooms.get_mut(room).and_then(|members| members.get_mut(user)) else { return };
        member.conns.remove(sid);
        if !member.conns.is_empty() {
            return;
        }
        if grace.is_zero() || member.announced.is_none() {
            self.leave_room(roster, room, user);
        } else {
            member.leaves_at = Some(Instant::now() + grace);
        }
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

/// Removes a user with no connection left; its name is free again.
fn forget_user(roster: &mut Roster, user: &UserId) {
    if let Some(gone) = roster.users.remove(user)
        && let Some((_, keys)) = gone.name
    {
        release(roster, &keys, user);
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
        let claim = match online.name.replace((name.clone(), keys.clone())) {
            Some((old, _)) if old == *name => return Ok(Claim::Unchanged),
            Some((_, old_keys)) => {
                release(&mut roster, &old_keys, user);
                Claim::Renamed
            }
            None => Claim::Joined,
        };
        for key in keys.iter() {
            roster.owners.insert(key.clone(), user.clone());
        }
        for (room, members) in &mut roster.rooms {
            if let Some(member) = members.get_mut(user) {
                self.announce_name(room, member, user, name);
            }
        }
        Ok(claim)
    }

    async fn enter(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<Entered, BackendError> {
        let mut roster = self.roster();
        if !roster.listed.contains_key(room) {
            if roster.listed.len() >= self.policy.max_rooms {
                return Ok(Entered::RoomLimit);
            }
            roster.listed.insert(room.clone(), Instant::now());
        }
        let name = roster.users.get(user).and_then(|online| online.name.as_ref().map(|(name, _)| name.clone()));
        let member = roster.rooms.entry(room.clone()).or_default().entry(user.clone()).or_default();
        member.conns.insert(sid.clone());
        member.leaves_at = None;
        if let Some(name) = name {
            self.announce_name(room, member, user, &name);
        }
        Ok(Entered::In)
    }

    async fn exit(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<(), BackendError> {
        let mut roster = self.roster();
        self.drop_from_room(&mut roster, room, user, sid, Duration::ZERO);
        Ok(())
    }

    async fn disconnect(
        &self,
        user: &UserId,
        sid: &SessionId,
        rooms: &[RoomName],
        grace: Duration,
    ) -> Result<(), BackendError> {
        let mut roster = self.roster();
        for room in rooms {
            self.drop_from_room(&mut roster, room, user, sid, grace);
        }
        let Some(online) = roster.users.get_mut(user) else { return Ok(()) };
        online.conns.remove(sid);
        if !online.conns.is_empty() {
            return Ok(());
        }
        if grace.is_zero() || online.name.is_none() {
            forget_user(&mut roster, user);
        } else {
            online.leaves_at = Some(Instant::now() + grace);
        }
        Ok(())
    }

    async fn snapshot(&self, room: &RoomName) -> Result<PresenceList, BackendError> {
        let roster = self.roster();
        let mut users: Vec<String> = roster
            .rooms
            .get(room)
            .into_iter()
            .flat_map(HashMap::values)
            .filter_map(|member| member.announced.as_ref().map(Username::to_string))
            .collect();
        users.sort();
        Ok(PresenceList { room: None, at: self.buses.bus(room).last(), users })
    }

    async fn report(&self, rooms: &[RoomName]) -> Result<(), BackendError> {
        let mut roster = self.roster();
        let now = Instant::now();
        for room in rooms {
            roster.listed.insert(room.clone(), now);
        }
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<RoomInfo>, BackendError> {
        let roster = self.roster();
        let online = |room: &RoomName| {
            roster.rooms.get(room).map_or(0, |members| members.values().filter(|m| m.announced.is_some()).count())
        };
        Ok(roster.listed.keys().map(|room| RoomInfo { room: room.clone(), online: online(room) }).collect())
    }

    async fn sweep(&self) -> Result<Swept, BackendError> {
        let mut roster = self.roster();
        let now = Instant::now();
        // Rooms nobody was in for the idle time are forgotten, with their events.
        let idle: Vec<RoomName> = roster
            .listed
            .iter()
            .filter(|(room, seen)| !roster.rooms.contains_key(*room) && now.duration_since(**seen) >= self.policy.idle)
            .map(|(room, _)| room.clone())
            .collect();
        for room in idle {
            roster.listed.remove(&room);
            self.buses.forget(&room);
        }
        let due = |leaves_at: Option<Instant>| leaves_at.is_some_and(|at| at <= now);
        let rooms_due: Vec<(RoomName, UserId)> = roster
            .rooms
            .iter()
            .flat_map(|(room, members)| {
                members
                    .iter()
                    .filter(|(_, m)| m.conns.is_empty() && due(m.leaves_at))
                    .map(|(user, _)| (room.clone(), user.clone()))
            })
            .collect();
        let left = rooms_due.iter().filter(|(room, user)| self.leave_room(&mut roster, room, user)).count();
        let users_due: Vec<UserId> = roster
            .users
            .iter()
            .filter(|(_, u)| u.conns.is_empty() && due(u.leaves_at))
            .map(|(id, _)| id.clone())
            .collect();
        for user in users_due {
            forget_user(&mut roster, &user);
        }
        // One process cannot lose a name to another behind its back.
        Ok(Swept { left, lost: Vec::new() })
    }

    async fn user_named(&self, name: &Username) -> Result<Option<UserId>, BackendError> {
        let roster = self.roster();
        Ok(NameKeys::of(name).iter().find_map(|key| roster.owners.get(key).cloned()))
    }

    async fn publish_status(&self, status: &NodeStatus) -> Result<(), BackendError> {
        *self.status.lock() = Some(status.clone());
        Ok(())
    }

    async fn cluster(&self) -> Result<ClusterStatus, BackendError> {
        // The only node beats as long as it runs: its last beat is its last status.
        let nodes = self
            .status
            .lock()
            .iter()
            .map(|status| NodeStatus { last_beat_ms: status.at_ms, ..status.clone() })
            .collect();
        let users_online = self.roster().users.values().filter(|user| user.name.is_some()).count() as u64;
        Ok(ClusterStatus { nodes, users_online })
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

    fn room(raw: &str) -> RoomName {
        RoomName::parse(raw).unwrap()
    }

    fn key_user(key: &str) -> UserId {
        UserId::from_key(&key.parse().unwrap())
    }

    fn setup() -> (Arc<MemoryBuses>, MemoryPresence) {
        let buses = Arc::new(MemoryBuses::new(100));
        (buses.clone(), MemoryPresence::new(buses))
    }

    #[tokio::test]
    async fn names_are_unique_and_changes_are_announced_once() {
        let (buses, presence) = setup();
        let lobby = RoomName::lobby();
        let (ann, bob) = (key_user("ann-key-0123456789"), UserId::of_connection(&sid("s2")));
        assert_eq!(presence.connect(&ann, &sid("s1")).await.unwrap(), None);
        presence.enter(&lobby, &ann, &sid("s1")).await.unwrap();
        presence.connect(&bob, &sid("s2")).await.unwrap();
        presence.enter(&lobby, &bob, &sid("s2")).await.unwrap();
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
        presence.enter(&lobby, &ann, &sid("s3")).await.unwrap();
        let list = presence.snapshot(&lobby).await.unwrap();
        let bus = buses.bus(&lobby);
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
    async fn each_room_hears_of_its_own_members_only() {
        let (buses, presence) = setup();
        let (lobby, ops) = (RoomName::lobby(), room("ops"));
        let ann = key_user("ann-key-0123456789");
        presence.connect(&ann, &sid("s1")).await.unwrap();
        presence.enter(&lobby, &ann, &sid("s1")).await.unwrap();
        presence.claim(&ann, &sid("s1"), &name("ann")).await.unwrap();
        assert!(buses.bus(&ops).events().is_empty(), "ann is not in ops");
        // Entering a room announces the name there; a rename reaches every room it is in.
        presence.enter(&ops, &ann, &sid("s1")).await.unwrap();
        presence.claim(&ann, &sid("s1"), &name("anna")).await.unwrap();
        let renamed = RoomEvent::Renamed { author: "anna".into(), from: "ann".into() };
        assert_eq!(buses.bus(&ops).events(), [RoomEvent::Joined { author: "ann".into() }, renamed.clone()]);
        assert_eq!(buses.bus(&lobby).events(), [RoomEvent::Joined { author: "ann".into() }, renamed]);
        // Leaving one room is heard there only; the name stays.
        presence.exit(&ops, &ann, &sid("s1")).await.unwrap();
        assert_eq!(buses.bus(&ops).events().last(), Some(&RoomEvent::Left { author: "anna".into() }));
        assert!(presence.snapshot(&ops).await.unwrap().users.is_empty());
        assert_eq!(presence.snapshot(&lobby).await.unwrap().users, ["anna"]);
        assert_eq!(buses.bus(&lobby).events().len(), 2);
    }

    #[tokio::test]
    async fn a_user_leaves_after_its_grace_period_unless_it_comes_back() {
        let (buses, presence) = setup();
        let lobby = RoomName::lobby();
        let bus = buses.bus(&lobby);
        let ann = key_user("ann-key-0123456789");
        let rooms = [lobby.clone()];
        presence.enter(&lobby, &ann, &sid("s1")).await.unwrap();
        presence.claim(&ann, &sid("s1"), &name("ann")).await.unwrap();
        let grace = Duration::from_millis(50);
        presence.disconnect(&ann, &sid("s1"), &rooms, grace).await.unwrap();
        presence.connect(&ann, &sid("s2")).await.unwrap();
        presence.enter(&lobby, &ann, &sid("s2")).await.unwrap();
        tokio::time::sleep(grace * 2).await;
        assert_eq!(presence.sweep().await.unwrap().left, 0, "it came back in time");
        presence.disconnect(&ann, &sid("s2"), &rooms, grace).await.unwrap();
        assert_eq!(presence.sweep().await.unwrap().left, 0, "still within its grace period");
        assert_eq!(presence.snapshot(&lobby).await.unwrap().users, ["ann"]);
        tokio::time::sleep(grace * 2).await;
        assert_eq!(presence.sweep().await.unwrap().left, 1);
        assert!(presence.snapshot(&lobby).await.unwrap().users.is_empty());
        assert_eq!(bus.events().last(), Some(&RoomEvent::Left { author: "ann".into() }));
        let bob = UserId::of_connection(&sid("s8"));
        assert_eq!(presence.claim(&bob, &sid("s8"), &name("ANN")).await.unwrap(), Claim::Joined, "its name is free");

        // Without a grace period the leave is at once.
        let carl = UserId::of_connection(&sid("s9"));
        presence.enter(&lobby, &carl, &sid("s9")).await.unwrap();
        presence.claim(&carl, &sid("s9"), &name("carl")).await.unwrap();
        presence.disconnect(&carl, &sid("s9"), &rooms, Duration::ZERO).await.unwrap();
        assert_eq!(bus.events().last(), Some(&RoomEvent::Left { author: "carl".into() }));
    }

    #[tokio::test]
    async fn rooms_are_listed_bounded_and_forgotten_when_idle() {
        let buses = Arc::new(MemoryBuses::new(100));
        let idle = Duration::from_millis(50);
        let presence = MemoryPresence::new(buses.clone()).with_policy(RoomPolicy { max_rooms: 2, idle });
        let ann = key_user("ann-key-0123456789");
        presence.claim(&ann, &sid("s1"), &name("ann")).await.unwrap();
        assert_eq!(presence.enter(&room("a"), &ann, &sid("s1")).await.unwrap(), Entered::In);
        assert_eq!(presence.enter(&room("b"), &ann, &sid("s1")).await.unwrap(), Entered::In);
        assert_eq!(presence.enter(&room("c"), &ann, &sid("s1")).await.unwrap(), Entered::RoomLimit);
        let mut listed = presence.rooms().await.unwrap();
        listed.sort_by(|x, y| x.room.cmp(&y.room));
        assert_eq!(listed, [RoomInfo { room: room("a"), online: 1 }, RoomInfo { room: room("b"), online: 1 }]);
        // Nobody in b for the idle time: it is forgotten with its events, and room for c.
        presence.exit(&room("b"), &ann, &sid("s1")).await.unwrap();
        assert!(!buses.bus(&room("b")).events().is_empty());
        tokio::time::sleep(idle * 2).await;
        presence.report(&[room("a")]).await.unwrap();
        presence.sweep().await.unwrap();
        assert_eq!(presence.rooms().await.unwrap(), [RoomInfo { room: room("a"), online: 1 }], "a has a member");
        assert!(buses.bus(&room("b")).events().is_empty(), "b's events are gone");
        assert_eq!(presence.enter(&room("c"), &ann, &sid("s1")).await.unwrap(), Entered::In);
    }
}

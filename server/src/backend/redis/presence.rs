//! Who is online in the cluster, kept in Redis by two scripts: `global.lua` (users, their
//! connections, their unique names, the nodes' beats; one slot) and `room.lua` (who is in
//! one room; that room's slot), so that each change to a room's list and its
//! announcement on the room's stream are one atomic step, whichever node makes it. No
//! script touches keys of two slots: a change that concerns several rooms (a rename, a
//! closed connection) is one step per room, and a room that hears of two names out of
//! order keeps the newer (names carry a version).
//!
//! Each node beats every sweep; a node silent for longer than the node timeout is taken
//! for dead by the others: its connections leave their rooms, and its users lose their
//! names unless they have a connection elsewhere. The node also keeps its live
//! connections in memory, and writes them back when Redis disagrees (after Redis lost
//! data, or after the node was wrongly taken for dead).

use super::bus::STREAM_LUA;
use super::keys::{RoomKeys, global_keys, status_key};
use super::under_way::UnderWay;
use super::{RedisConn, RedisLink};
use crate::backend::{
    BackendError, Claim, ClusterStatus, Entered, NodeStatus, Presence, RoomInfo, RoomPolicy, SessionId, Swept, UserId,
};
use crate::names::NameKeys;
use app::protocol::{PresenceList, RoomName, Username};
use async_trait::async_trait;
use futures::future::try_join_all;
use parking_lot::{Mutex, MutexGuard};
use redis::{FromRedisValue, Script};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// A live connection of this node: its user, the name it claimed, its rooms.
#[derive(Debug, Clone)]
struct LiveConnection {
    user: UserId,
    name: Option<Username>,
    rooms: BTreeSet<RoomName>,
}

/// This node's live connections, taken at one moment to be written back to Redis.
pub struct LiveList(Vec<(SessionId, LiveConnection)>);

/// Presence in Redis, seen from one node.
pub struct RedisPresence {
    conn: RedisConn,
    global: Script,
    room: Script,
    global_keys: [String; 14],
    /// Hash: node → its last published [`NodeStatus`] (JSON), for the status page.
    status_key: String,
    node: String,
    stream_max_len: usize,
    grace: Duration,
    node_timeout: Duration,
    policy: RoomPolicy,
    live: Mutex<HashMap<SessionId, LiveConnection>>,
    /// Connections opening and closing whose write to Redis has not landed yet.
    under_way: UnderWay,
}

/// Rooms asked at once when this node reports its rooms.
const REPORTS_AT_ONCE: usize = 64;

/// A room's count of users online is taken for current while a node reported it this
/// recently (nodes report every few seconds); after that, nobody is counted in it.
const COUNT_STALE_AFTER: Duration = Duration::from_secs(15);

/// How the cluster's presence behaves.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTimings {
    /// How long a user with no connection stays before its leave is announced.
    pub grace: Duration,
    /// How long a node may stay silent before the others take it for dead.
    pub node_timeout: Duration,
}

impl RedisPresence {
    /// Presence for the node named `node`, announcing on streams capped at `stream_max_len`.
    pub async fn connect(
        link: &RedisLink,
        node: &str,
        stream_max_len: usize,
        timings: PresenceTimings,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            conn: link.connect(Duration::from_secs(2)).await?,
            global: Script::new(include_str!("global.lua")),
            room: Script::new(&format!("{STREAM_LUA}{}", include_str!("room.lua"))),
            global_keys: global_keys(),
            status_key: status_key(),
            node: node.to_owned(),
            stream_max_len,
            grace: timings.grace,
            node_timeout: timings.node_timeout,
            policy: RoomPolicy::default(),
            live: Mutex::new(HashMap::new()),
            under_way: UnderWay::default(),
        })
    }

    /// The same presence holding rooms by `policy`.
    pub fn with_policy(self, policy: RoomPolicy) -> Self {
        Self { policy, ..self }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<SessionId, LiveConnection>> {
        self.live.lock()
    }

    /// Runs one operation of the global script.
    async fn run_global<T: FromRedisValue>(&self, op: &str, args: &[&str]) -> Result<T, BackendError> {
        let mut invocation = self.global.prepare_invoke();
        for key in &self.global_keys {
            invocation.key(key);
        }
        invocation.arg(op).arg(&self.node);
        for arg in args {
            invocation.arg(*arg);
        }
        Ok(invocation.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Runs one operation of the room script on `room`.
    async fn run_room<T: FromRedisValue>(&self, room: &RoomName, op: &str, args: &[&str]) -> Result<T, BackendError> {
        let keys = RoomKeys::of(room);
        let mut invocation = self.room.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(op).arg(room.as_str()).arg(&self.node).arg(self.stream_max_len);
        for arg in args {
            invocation.arg(*arg);
        }
        Ok(invocation.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Tells the global index when `room` has a grace period due.
    async fn note_grace(&self, room: &RoomName, deadline: i64) -> Result<(), BackendError> {
        if deadline > 0 {
            self.run_global::<i64>("room_grace", &[room.as_str(), &deadline.to_string()]).await?;
        }
        Ok(())
    }

    /// `sid` leaves `room`, its user with it after `grace` if it was its last there;
    /// returns whether the user left at once.
    async fn drop_from_room(&self, room: &RoomName, sid: &SessionId, grace: Duration) -> Result<usize, BackendError> {
        let grace_ms = grace.as_millis().to_string();
        let (left, deadline): (usize, i64) = self.run_room(room, "exit", &[sid.as_str(), &grace_ms]).await?;
        self.note_grace(room, deadline).await?;
        Ok(left)
    }

    /// Leaves of users whose grace period in `room` is over (the room was due at `seen`).
    async fn expire_room(&self, room: &RoomName, seen: &str) -> Result<usize, BackendError> {
        let (left, next): (usize, i64) = self.run_room(room, "expire", &[]).await?;
        self.run_global::<i64>("room_graced", &[room.as_str(), seen, &next.to_string()]).await?;
        Ok(left)
    }

    /// The connections of a node taken for dead leave its rooms, then the node is forgotten.
    async fn reap(&self, dead: &str, rooms: &str) -> Result<usize, BackendError> {
        let mut left = 0;
        for room in rooms.lines().filter_map(|room| RoomName::parse(room).ok()) {
            left += self.run_room::<usize>(&room, "reap", &[dead]).await?;
        }
        tracing::warn!(node = %self.node, %dead, left, "took a silent node for dead: its users left its rooms");
        self.run_global::<i64>("forget_node", &[dead]).await?;
        Ok(left)
    }

    /// Writes `entries` (sid, user, name, its version) back as this node's connections in
    /// `room`, then drops from it every connection of the node that the node no longer
    /// has there; returns how many users left.
    async fn write_room_back(&self, room: &RoomName, entries: Vec<[String; 4]>) -> Result<usize, BackendError> {
        let has_it = |live: &HashMap<SessionId, LiveConnection>, sid: &str| {
            live.get(&SessionId::new(sid.to_owned())).is_some_and(|conn| conn.rooms.contains(room))
        };
        // Those that closed or left the room since the list was taken stay out of it.
        let entries: Vec<[String; 4]> = {
            let now_live = self.live();
            entries.into_iter().filter(|entry| has_it(&now_live, &entry[0])).collect()
        };
        let grace_ms = self.grace.as_millis().to_string();
        let mut args: Vec<&str> = vec![&grace_ms];
        for entry in &entries {
            args.extend(entry.iter().map(String::as_str));
        }
        let reply: Vec<String> = self.run_room(room, "sync", &args).await?;
        let Some((deadline, unlisted)) = reply.split_first() else {
            return Err(BackendError::UnexpectedReply("a room sync without its deadline".into()));
        };
        let deadline = deadline
            .parse()
            .map_err(|_| BackendError::UnexpectedReply(format!("a room sync's deadline {deadline:?}")))?;
        self.note_grace(room, deadline).await?;
        // The script ran a moment after the node's record was read: whatever the node no
        // longer has in the room, listed or not, is gone. One that entered the room after
        // the list was taken was added to the node's own record before Redis heard of it,
        // so it is found there now and keeps counting (a user resuming on this node while
        // its old node was reaped was announced as left before).
        let gone: Vec<SessionId> = {
            let now_live = self.live();
            entries
                .iter()
                .map(|entry| &entry[0])
                .chain(unlisted)
                .filter(|sid| !has_it(&now_live, sid))
                .map(|sid| SessionId::new(sid.clone()))
                .collect()
        };
        let mut left = 0;
        for sid in &gone {
            left += self.drop_from_room(room, sid, self.grace).await?;
        }
        Ok(left)
    }

    /// This node's live connections as they are now, for [`Self::write_back`]; taking
    /// the list begins a sync, so the writes that failed before it are in it.
    pub fn live_list(&self) -> LiveList {
        self.under_way.syncing();
        LiveList(self.live().iter().map(|(s, c)| (s.clone(), c.clone())).collect())
    }

    /// Writes `list` back as this node's connections: first the users and names, then
    /// each room's list. Connections may open, enter rooms and close while it runs (a
    /// sweep's sync is not atomic with them); each keeps counting as the node has it
    /// now. Public so that a test can change the node between the list and its writing.
    pub async fn write_back(&self, LiveList(listed): LiveList) -> Result<Swept, BackendError> {
        // Each listed connection as the node has it now: one closed since is not written
        // back, one that left a room since is not put back in it.
        let live: Vec<(SessionId, LiveConnection)> = {
            let now_live = self.live();
            listed.into_iter().filter_map(|(sid, _)| now_live.get(&sid).map(|conn| (sid, conn.clone()))).collect()
        };
        let fields: Vec<[String; 5]> = live
            .iter()
            .map(|(sid, conn)| {
                [
                    sid.to_string(),
                    conn.user.as_str().to_owned(),
                    conn.name.as_ref().map_or_else(String::new, Username::to_string),
                    conn.name.as_ref().map_or_else(String::new, |name| NameKeys::of(name).joined()),
                    conn.rooms.iter().map(RoomName::as_str).collect::<Vec<_>>().join("\n"),
                ]
            })
            .collect();
        let grace_ms = self.grace.as_millis().to_string();
        let mut args: Vec<&str> = vec![&grace_ms];
        for field in &fields {
            args.extend(field.iter().map(String::as_str));
        }
        let reply: Vec<String> = self.run_global("sync", &args).await?;
        if reply.len() < 2 * live.len() {
            return Err(BackendError::UnexpectedReply("a short presence sync".into()));
        }
        let (names, lost) = reply.split_at(2 * live.len());
        let lost: Vec<SessionId> = lost.iter().cloned().map(SessionId::new).collect();
        let mut rooms: HashMap<RoomName, Vec<[String; 4]>> = HashMap::new();
        for ((sid, conn), versioned) in live.iter().zip(names.chunks(2)) {
            for room in &conn.rooms {
                let entry =
                    [sid.to_string(), conn.user.as_str().to_owned(), versioned[0].clone(), versioned[1].clone()];
                rooms.entry(room.clone()).or_default().push(entry);
            }
        }
        let mut left = 0;
        for (room, entries) in rooms {
            left += self.write_room_back(&room, entries).await?;
        }
        let closed_meanwhile: Vec<(SessionId, LiveConnection)> = {
            let mut now_live = self.live();
            for sid in &lost {
                if let Some(conn) = now_live.get_mut(sid) {
                    conn.name = None;
                }
            }
            live.into_iter().filter(|(sid, _)| !now_live.contains_key(sid)).collect()
        };
        // A connection that closed while the sync ran was written back by it: close it again.
        for (sid, conn) in closed_meanwhile {
            let grace = if conn.user.can_return() { self.grace } else { Duration::ZERO };
            let rooms: Vec<RoomName> = conn.rooms.into_iter().collect();
            self.disconnect(&conn.user, &sid, &rooms, grace).await?;
        }
        Ok(Swept { left, lost })
    }
}

/// Reads a stored name; one that no longer passes the rules is ignored (and logged).
fn stored_name(name: String) -> Option<Username> {
    if name.is_empty() {
        return None;
    }
    Username::parse(&name)
        .inspect_err(|refusal| tracing::error!(%name, %refusal, "a stored name does not pass the rules; ignoring it"))
        .ok()
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserId, sid: &SessionId) -> Result<Option<Username>, BackendError> {
        // Remembered first: if the write fails, the next sweep's sync writes it.
        let conn = LiveConnection { user: user.clone(), name: None, rooms: BTreeSet::new() };
        // Counted as under way before the node counts it, so a sweep in between sees why.
        let _write = self.under_way.begin();
        self.live().insert(sid.clone(), conn);
        let name: Option<String> = self
            .run_global("connect", &[user.as_str(), sid.as_str()])
            .await
            .inspect_err(|_| self.under_way.failed())?;
        Ok(name.and_then(stored_name))
    }

    async fn claim(&self, user: &UserId, sid: &SessionId, name: &Username) -> Result<Claim, BackendError> {
        let keys = NameKeys::of(name).joined();
        let mut reply: Vec<String> =
            self.run_global("claim", &[user.as_str(), sid.as_str(), name.as_str(), &keys]).await?;
        if reply.is_empty() {
            return Err(BackendError::UnexpectedReply("an empty presence claim".into()));
        }
        let claim = match reply.remove(0).as_str() {
            "taken" => return Ok(Claim::Taken),
            "unchanged" => Claim::Unchanged,
            "joined" => Claim::Joined,
            "renamed" => Claim::Renamed,
            other => return Err(BackendError::UnexpectedReply(format!("presence claim answered {other:?}"))),
        };
        if let Some(conn) = self.live().get_mut(sid) {
            conn.name = Some(name.clone());
        }
        if claim == Claim::Unchanged {
            return Ok(claim);
        }
        let version = reply.remove(0);
        // Each room the user is in hears of the name; one that cannot be told now is
        // told by the next sync, should it have lost it.
        for room in reply.iter().filter_map(|room| RoomName::parse(room).ok()) {
            self.run_room::<i64>(&room, "name", &[user.as_str(), name.as_str(), &version]).await?;
        }
        Ok(claim)
    }

    async fn enter(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<Entered, BackendError> {
        let max_rooms = self.policy.max_rooms.to_string();
        // The user's name ('' for none) and its version, or 'limit'.
        let reply: Vec<String> =
            self.run_global("enter", &[user.as_str(), sid.as_str(), room.as_str(), &max_rooms]).await?;
        let [name, version] = reply.as_slice() else {
            return match reply.first().map(String::as_str) {
                Some("limit") => Ok(Entered::RoomLimit),
                _ => Err(BackendError::UnexpectedReply(format!("entering a room answered {reply:?}"))),
            };
        };
        if let Some(conn) = self.live().get_mut(sid) {
            conn.rooms.insert(room.clone());
        }
        self.run_room::<i64>(room, "enter", &[sid.as_str(), user.as_str(), name, version]).await?;
        Ok(Entered::In)
    }

    async fn exit(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<(), BackendError> {
        if let Some(conn) = self.live().get_mut(sid) {
            conn.rooms.remove(room);
        }
        self.drop_from_room(room, sid, Duration::ZERO).await?;
        self.run_global::<i64>("exit", &[user.as_str(), sid.as_str(), room.as_str()]).await?;
        Ok(())
    }

    async fn disconnect(
        &self,
        _user: &UserId,
        sid: &SessionId,
        rooms: &[RoomName],
        grace: Duration,
    ) -> Result<(), BackendError> {
        // Under way before the node stops counting it, as for a connection opening.
        let _write = self.under_way.begin();
        // Forgotten first, so that a sync cannot write the closed connection back.
        self.live().remove(sid);
        let written = async {
            for room in rooms {
                self.drop_from_room(room, sid, grace).await?;
            }
            let grace_ms = grace.as_millis().to_string();
            self.run_global::<i64>("disconnect", &[sid.as_str(), &grace_ms]).await.map(drop)
        };
        written.await.inspect_err(|_| self.under_way.failed())
    }

    async fn snapshot(&self, room: &RoomName) -> Result<PresenceList, BackendError> {
        let mut reply: Vec<String> = self.run_room(room, "snapshot", &[]).await?;
        if reply.is_empty() {
            return Err(BackendError::UnexpectedReply("an empty presence snapshot".into()));
        }
        let at = reply.remove(0).parse()?;
        reply.sort();
        Ok(PresenceList { room: None, at, users: reply })
    }

    async fn report(&self, rooms: &[RoomName]) -> Result<(), BackendError> {
        let idle_ms = self.policy.idle.as_millis().to_string();
        let touch_args = [idle_ms.as_str()];
        // This runs in the task that beats for the node: the rooms of a chunk are asked
        // together (the connection pipelines them), not one round trip after another, so
        // that many rooms on a slow link cannot hold the beat back long enough to look dead.
        for chunk in rooms.chunks(REPORTS_AT_ONCE) {
            let touches = chunk.iter().map(|room| self.run_room::<usize>(room, "touch", &touch_args));
            let counts: Vec<String> = try_join_all(touches).await?.iter().map(usize::to_string).collect();
            let args: Vec<&str> =
                chunk.iter().zip(&counts).flat_map(|(room, count)| [room.as_str(), count.as_str()]).collect();
            self.run_global::<i64>("report", &args).await?;
        }
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<RoomInfo>, BackendError> {
        let stale_ms = COUNT_STALE_AFTER.as_millis().to_string();
        let reply: Vec<String> = self.run_global("rooms", &[&stale_ms]).await?;
        Ok(reply
            .chunks(2)
            .filter_map(|pair| {
                let room = RoomName::parse(pair.first()?).ok()?;
                Some(RoomInfo { room, online: pair.get(1)?.parse().ok()? })
            })
            .collect())
    }

    async fn sweep(&self) -> Result<Swept, BackendError> {
        let timeout_ms = self.node_timeout.as_millis().to_string();
        let idle_ms = self.policy.idle.as_millis().to_string();
        let mark = self.under_way.mark();
        let reply: Vec<String> = self.run_global("sweep", &[&timeout_ms, &idle_ms]).await?;
        let number = |at: usize| -> Result<usize, BackendError> {
            reply
                .get(at)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| BackendError::UnexpectedReply("a presence sweep without its counts".into()))
        };
        let (held, dead) = (number(0)?, number(1)?);
        let dead_end = 2 + 2 * dead;
        let (Some(dead_nodes), Some(due_rooms)) = (reply.get(2..dead_end), reply.get(dead_end..)) else {
            return Err(BackendError::UnexpectedReply("a short presence sweep".into()));
        };
        let mut left = 0;
        for node in dead_nodes.chunks(2) {
            left += self.reap(&node[0], &node[1]).await?;
        }
        for due in due_rooms.chunks(2) {
            if let (Ok(room), Some(seen)) = (RoomName::parse(&due[0]), due.get(1)) {
                left += self.expire_room(&room, seen).await?;
            }
        }
        let live = self.live().len();
        // While connections open and close, Redis's count trails the node's by the writes
        // on their way; rewriting every connection then (each sweep of a surge) would
        // only load Redis more.
        if held == live || self.under_way.explains(mark, held.abs_diff(live)) {
            return Ok(Swept { left, lost: Vec::new() });
        }
        tracing::info!(node = %self.node, held, live, "presence in Redis differs from this node's connections; writing them back");
        let synced = self.write_back(self.live_list()).await?;
        Ok(Swept { left: left + synced.left, lost: synced.lost })
    }

    async fn user_named(&self, name: &Username) -> Result<Option<UserId>, BackendError> {
        let names = &self.global_keys[2];
        let mut conn = self.conn.clone();
        for key in NameKeys::of(name).iter() {
            let owner: Option<String> = redis::cmd("HGET").arg(names).arg(key.as_str()).query_async(&mut conn).await?;
            if let Some(owner) = owner {
                return Ok(Some(UserId::from_stored(owner)));
            }
        }
        Ok(None)
    }

    async fn publish_status(&self, status: &NodeStatus) -> Result<(), BackendError> {
        let json = serde_json::to_string(status)?;
        let mut conn = self.conn.clone();
        let () = redis::cmd("HSET").arg(&self.status_key).arg(&self.node).arg(json).query_async(&mut conn).await?;
        Ok(())
    }

    async fn cluster(&self) -> Result<ClusterStatus, BackendError> {
        let [users, nodes] = [&self.global_keys[0], &self.global_keys[8]];
        let mut conn = self.conn.clone();
        let (beats, statuses, users_online): (Vec<(String, u64)>, HashMap<String, String>, u64) = redis::pipe()
            .cmd("ZRANGE")
            .arg(nodes)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("HGETALL")
            .arg(&self.status_key)
            .cmd("HLEN")
            .arg(users)
            .query_async(&mut conn)
            .await?;
        let alive_since =
            crate::clock::now_ms().saturating_sub(u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX));
        let beat_of: HashMap<&str, u64> = beats.iter().map(|(node, beat)| (node.as_str(), *beat)).collect();
        let mut alive = Vec::new();
        let mut gone = Vec::new();
        for (node, json) in &statuses {
            match (beat_of.get(node.as_str()), serde_json::from_str::<NodeStatus>(json)) {
                (Some(&beat), Ok(status)) if beat >= alive_since => {
                    alive.push(NodeStatus { last_beat_ms: beat, ..status });
                }
                (None, _) => gone.push(node.clone()),
                _ => {}
            }
        }
        if !gone.is_empty() {
            // Nodes taken for dead leave their last status behind: it goes with them.
            let () = redis::cmd("HDEL").arg(&self.status_key).arg(&gone).query_async(&mut conn).await?;
        }
        alive.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(ClusterStatus { nodes: alive, users_online })
    }
}

//! Who is online in the cluster, kept in Redis by `presence.lua` so that each change (and
//! its announcement on the room's stream) is one atomic step, whichever node makes it.
//!
//! Each node beats every sweep; a node silent for longer than the node timeout is taken
//! for dead by the others, and its users leave unless they have a connection elsewhere.
//! The node also keeps its live connections in memory, and writes them back when Redis
//! disagrees (after Redis lost data, or after the node was wrongly taken for dead).

use super::connect;
use crate::backend::{BackendError, Claim, Presence, SessionId, Swept, UserId};
use crate::names::NameKeys;
use app::protocol::{PresenceList, Username};
use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use std::collections::HashMap;
use std::time::Duration;

/// A live connection of this node: its user, and the name it claimed.
type LiveConnection = (UserId, Option<Username>);

/// Presence in Redis, seen from one node.
pub struct RedisPresence {
    conn: ConnectionManager,
    script: Script,
    node: String,
    stream_max_len: usize,
    grace: Duration,
    node_timeout: Duration,
    live: Mutex<HashMap<SessionId, LiveConnection>>,
}

/// How the cluster's presence behaves.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTimings {
    /// How long a user with no connection stays before its leave is announced.
    pub grace: Duration,
    /// How long a node may stay silent before the others take it for dead.
    pub node_timeout: Duration,
}

impl RedisPresence {
    /// Presence for the node named `node`, announcing on a stream capped at `stream_max_len`.
    pub async fn connect(
        client: &Client,
        node: &str,
        stream_max_len: usize,
        timings: PresenceTimings,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            conn: connect(client, Duration::from_secs(2)).await?,
            script: Script::new(&format!("{}{}", super::bus::STREAM_LUA, include_str!("presence.lua"))),
            node: node.to_owned(),
            stream_max_len,
            grace: timings.grace,
            node_timeout: timings.node_timeout,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<SessionId, LiveConnection>> {
        self.live.lock()
    }

    /// Runs one operation of the script.
    async fn run<T: redis::FromRedisValue>(&self, op: &str, args: &[&str]) -> Result<T, BackendError> {
        let mut invocation = self.script.arg(op);
        invocation.arg(&self.node).arg(self.stream_max_len);
        for arg in args {
            invocation.arg(*arg);
        }
        Ok(invocation.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Writes this node's live connections back as they are here.
    async fn sync(&self) -> Result<Swept, BackendError> {
        let live: Vec<(SessionId, LiveConnection)> = self.live().iter().map(|(s, c)| (s.clone(), c.clone())).collect();
        let keys: Vec<String> = live
            .iter()
            .map(|(_, (_, name))| name.as_ref().map_or_else(String::new, |name| NameKeys::of(name).joined()))
            .collect();
        let grace_ms = self.grace.as_millis().to_string();
        let mut args: Vec<&str> = vec![&grace_ms];
        for ((sid, (user, name)), keys) in live.iter().zip(&keys) {
            let name = name.as_ref().map_or("", Username::as_str);
            args.extend([sid.as_str(), user.as_str(), name, keys.as_str()]);
        }
        let mut reply: Vec<String> = self.run("sync", &args).await?;
        if reply.is_empty() {
            return Err(BackendError::UnexpectedReply("an empty presence sync".into()));
        }
        let left = reply.remove(0).parse().map_err(|_| BackendError::UnexpectedReply("a sync count".into()))?;
        let lost: Vec<SessionId> = reply.into_iter().map(SessionId::new).collect();
        let closed_meanwhile: Vec<(SessionId, UserId)> = {
            let mut now_live = self.live();
            for sid in &lost {
                if let Some((_, name)) = now_live.get_mut(sid) {
                    *name = None;
                }
            }
            live.into_iter()
                .filter(|(sid, _)| !now_live.contains_key(sid))
                .map(|(sid, (user, _))| (sid, user))
                .collect()
        };
        // A connection that closed while the sync ran was written back by it: close it again.
        for (sid, user) in closed_meanwhile {
            let grace = if user.can_return() { self.grace } else { Duration::ZERO };
            self.disconnect(&user, &sid, grace).await?;
        }
        Ok(Swept { left, lost })
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserId, sid: &SessionId) -> Result<Option<Username>, BackendError> {
        // Remembered first: if the write fails, the next sweep's sync writes it.
        self.live().insert(sid.clone(), (user.clone(), None));
        let name: Option<String> = self.run("connect", &[user.as_str(), sid.as_str()]).await?;
        Ok(name.and_then(|name| {
            Username::parse(&name)
                .inspect_err(
                    |refusal| tracing::error!(%name, %refusal, "a stored name does not pass the rules; ignoring it"),
                )
                .ok()
        }))
    }

    async fn claim(&self, user: &UserId, sid: &SessionId, name: &Username) -> Result<Claim, BackendError> {
        let keys = NameKeys::of(name).joined();
        let outcome: String = self.run("claim", &[user.as_str(), sid.as_str(), name.as_str(), &keys]).await?;
        let claim = match outcome.as_str() {
            "taken" => return Ok(Claim::Taken),
            "unchanged" => Claim::Unchanged,
            "joined" => Claim::Joined,
            "renamed" => Claim::Renamed,
            other => return Err(BackendError::UnexpectedReply(format!("presence claim answered {other:?}"))),
        };
        self.live().insert(sid.clone(), (user.clone(), Some(name.clone())));
        Ok(claim)
    }

    async fn disconnect(&self, user: &UserId, sid: &SessionId, grace: Duration) -> Result<(), BackendError> {
        // Forgotten first, so that a sync cannot write the closed connection back.
        self.live().remove(sid);
        let grace_ms = grace.as_millis().to_string();
        self.run::<i64>("disconnect", &[user.as_str(), sid.as_str(), &grace_ms]).await.map(drop)
    }

    async fn snapshot(&self) -> Result<PresenceList, BackendError> {
        let mut reply: Vec<String> = self.run("snapshot", &[]).await?;
        if reply.is_empty() {
            return Err(BackendError::UnexpectedReply("an empty presence snapshot".into()));
        }
        let at = reply.remove(0).parse()?;
        reply.sort();
        Ok(PresenceList { at, users: reply })
    }

    async fn sweep(&self) -> Result<Swept, BackendError> {
        let timeout_ms = self.node_timeout.as_millis().to_string();
        let (held, left): (usize, usize) = self.run("sweep", &[&timeout_ms]).await?;
        let live = self.live().len();
        if held == live {
            return Ok(Swept { left, lost: Vec::new() });
        }
        tracing::info!(node = %self.node, held, live, "presence in Redis differs from this node's connections; writing them back");
        let synced = self.sync().await?;
        Ok(Swept { left: left + synced.left, lost: synced.lost })
    }
}

//! The cluster's presence, kept in Redis by `presence.lua` so that each change (and
//! its announcement on the room's stream) is one atomic step, whichever node makes it.
//!
//! Each node beats every sweep; a node silent for longer than the node timeout is taken
//! for dead by the others, and its users leave unless they have a connection elsewhere.
//! The node also keeps its live connections in memory, and writes them back when Redis
//! disagrees (after Redis lost data, or after the node was wrongly taken for dead).

use super::redis::{connect, unavailable};
use super::{BackendError, Claim, Position, Presence, UserId};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A live connection of this node: its user, and the name it claimed with its folded form.
type LiveConnection = (UserId, Option<(String, String)>);

/// Presence in Redis, seen from one node.
pub struct RedisPresence {
    conn: ConnectionManager,
    script: Script,
    node: String,
    stream_max_len: usize,
    grace: Duration,
    node_timeout: Duration,
    live: Mutex<HashMap<String, LiveConnection>>,
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
            script: Script::new(include_str!("presence.lua")),
            node: node.to_owned(),
            stream_max_len,
            grace: timings.grace,
            node_timeout: timings.node_timeout,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, LiveConnection>> {
        // Each change is one insert or remove: a poisoned lock is still consistent.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one operation of the script.
    async fn run<T: redis::FromRedisValue>(&self, op: &str, args: &[&str]) -> Result<T, BackendError> {
        let mut invocation = self.script.arg(op);
        invocation.arg(&self.node).arg(self.stream_max_len);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)
    }

    /// Writes this node's live connections back as they are here.
    async fn sync(&self) -> Result<usize, BackendError> {
        let live: Vec<(String, LiveConnection)> = self.live().iter().map(|(s, c)| (s.clone(), c.clone())).collect();
        let grace_ms = self.grace.as_millis().to_string();
        let mut args: Vec<&str> = vec![&grace_ms];
        for (sid, (user, name)) in &live {
            let (name, folded) = name.as_ref().map(|(n, f)| (n.as_str(), f.as_str())).unwrap_or(("", ""));
            args.extend([sid.as_str(), user.as_str(), name, folded]);
        }
        self.run("sync", &args).await
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserId, sid: &str) -> Result<Option<String>, BackendError> {
        // Remembered first: if the write fails, the next sweep's sync writes it.
        self.live().insert(sid.to_owned(), (user.clone(), None));
        self.run("connect", &[user.as_str(), sid]).await
    }

    async fn claim(&self, user: &UserId, sid: &str, name: &str, folded: &str) -> Result<Claim, BackendError> {
        let outcome: String = self.run("claim", &[user.as_str(), sid, name, folded]).await?;
        let claim = match outcome.as_str() {
            "taken" => return Ok(Claim::Taken),
            "unchanged" => Claim::Unchanged,
            "joined" => Claim::Joined,
            "renamed" => Claim::Renamed,
            other => return Err(BackendError::Unavailable(format!("unexpected presence answer {other:?}"))),
        };
        self.live().insert(sid.to_owned(), (user.clone(), Some((name.to_owned(), folded.to_owned()))));
        Ok(claim)
    }

    async fn disconnect(&self, user: &UserId, sid: &str, grace: Duration) -> Result<(), BackendError> {
        // Forgotten first, so that a sync cannot write the closed connection back.
        self.live().remove(sid);
        let grace_ms = grace.as_millis().to_string();
        self.run::<i64>("disconnect", &[user.as_str(), sid, &grace_ms]).await.map(drop)
    }

    async fn snapshot(&self) -> Result<(Vec<String>, Position), BackendError> {
        let mut reply: Vec<String> = self.run("snapshot", &[]).await?;
        if reply.is_empty() {
            return Err(BackendError::Unavailable("empty presence snapshot".into()));
        }
        let at =
            reply.remove(0).parse().map_err(|err: super::BadPosition| BackendError::Unavailable(err.to_string()))?;
        reply.sort();
        Ok((reply, at))
    }

    async fn sweep(&self) -> Result<usize, BackendError> {
        let timeout_ms = self.node_timeout.as_millis().to_string();
        let (held, mut left): (usize, usize) = self.run("sweep", &[&timeout_ms]).await?;
        let live = self.live().len();
        if held != live {
            tracing::info!(node = %self.node, held, live, "presence in Redis differs from this node's connections; writing them back");
            left += self.sync().await?;
        }
        Ok(left)
    }
}

//! Legacy session records: `session:{sid}` hashes with a TTL. The node remembers its live
//! sessions to keep them alive and to write them back if Redis lost them.

use super::{RedisConn, RedisLink};
use crate::backend::{BackendError, SessionId, SessionStore};
use app::protocol::Username;
use async_trait::async_trait;
use futures::future::try_join_all;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::time::Duration;

/// Sessions refreshed per pipeline.
const REFRESH_CHUNK: usize = 500;

/// Session hashes with a TTL, seen from one node.
pub struct RedisSessions {
    conn: RedisConn,
    ttl: Duration,
    /// This node's live sessions and their names ("" before one is set).
    live: Mutex<HashMap<SessionId, String>>,
}

/// The Redis key of a session.
pub fn session_key(sid: &SessionId) -> String {
    format!("session:{sid}")
}

impl RedisSessions {
    /// A store whose records expire `ttl` after their last refresh.
    pub async fn connect(link: &RedisLink, ttl: Duration) -> Result<Self, BackendError> {
        Ok(Self { conn: link.connect(Duration::from_secs(2)).await?, ttl, live: Mutex::new(HashMap::new()) })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<SessionId, String>> {
        self.live.lock()
    }

    /// How often [`RedisSessions::refresh`] must run for records to outlive their TTL.
    pub fn refresh_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// Writes the records, each in one round trip of its own (its keys may sit on
    /// different Redis Cluster slots); the connection sends them together.
    async fn write(&self, records: &[(SessionId, String)]) -> Result<(), BackendError> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let writes = records.iter().map(|(sid, name)| {
            let key = session_key(sid);
            let mut pipe = redis::pipe();
            pipe.hset(&key, "username", name).ignore().expire(&key, ttl).ignore();
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        });
        try_join_all(writes).await?;
        Ok(())
    }

    /// Rewrites every live session with a fresh TTL (this also restores them after a
    /// Redis restart that lost its data).
    pub async fn refresh(&self) -> Result<usize, BackendError> {
        let records: Vec<(SessionId, String)> = self.live().iter().map(|(s, n)| (s.clone(), n.clone())).collect();
        for chunk in records.chunks(REFRESH_CHUNK) {
            self.write(chunk).await?;
            // A session removed while its chunk was written would be written back and
            // linger until its TTL (seen when thousands of clients left at once): remove
            // it again. Its own DEL, if still to come, is sent after this write anyway.
            let closed: Vec<String> = {
                let live = self.live();
                chunk.iter().filter(|(sid, _)| !live.contains_key(sid)).map(|(sid, _)| session_key(sid)).collect()
            };
            let deletes = closed.iter().map(|key| {
                let mut conn = self.conn.clone();
                async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut conn).await }
            });
            try_join_all(deletes).await?;
        }
        Ok(records.len())
    }

    /// Refreshes the live sessions for the life of the node.
    pub async fn keep_alive(&self) {
        let mut ticks = tokio::time::interval(self.refresh_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(err) = self.refresh().await {
                tracing::warn!(%err, "cannot refresh the session records; retrying at the next tick");
            }
        }
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create(&self, sid: &SessionId) -> Result<(), BackendError> {
        // Remembered even if the write fails: the next refresh writes it.
        self.live().insert(sid.clone(), String::new());
        self.write(&[(sid.clone(), String::new())]).await
    }

    async fn set_username(&self, sid: &SessionId, name: &Username) -> Result<(), BackendError> {
        // Remembered only once stored: a refused rename must not come back with a refresh.
        self.write(&[(sid.clone(), name.to_string())]).await?;
        self.live().insert(sid.clone(), name.to_string());
        Ok(())
    }

    async fn forget_username(&self, sid: &SessionId) -> Result<(), BackendError> {
        // Forgotten first, so that a refresh cannot write the name back.
        if let Some(name) = self.live().get_mut(sid) {
            name.clear();
        }
        self.write(&[(sid.clone(), String::new())]).await
    }

    async fn username(&self, sid: &SessionId) -> Result<Option<String>, BackendError> {
        Ok(redis::cmd("HGET").arg(session_key(sid)).arg("username").query_async(&mut self.conn.clone()).await?)
    }

    async fn remove(&self, sid: &SessionId) -> Result<(), BackendError> {
        self.live().remove(sid);
        Ok(redis::cmd("DEL").arg(session_key(sid)).query_async::<()>(&mut self.conn.clone()).await?)
    }
}

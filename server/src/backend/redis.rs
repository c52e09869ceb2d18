//! The cluster backend: the room's bus is a Redis Stream, read back by every node in
//! the stream's order; sessions are `session:{sid}` hashes that their node keeps alive.
//!
//! Publishing is an `XADD` (capped with `MAXLEN ~`); each node delivers only what it
//! reads back with `XREAD BLOCK` after the last id it delivered, its own lines included,
//! so every node delivers the same sequence. A blocking read holds its connection, so
//! reads use a connection of their own and writes a shared, multiplexed one.

use super::{BackendError, Delivered, EventBus, Position, SessionStore, UserId};
use app::protocol::RoomEvent;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{Client, RedisError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The stream that carries the room's events.
pub const STREAM_KEY: &str = "chatroom:events";
/// The stream field holding an event's JSON.
const EVENT_FIELD: &str = "e";
/// The stream field naming the user a join or rename is about (see `presence.lua`).
const USER_FIELD: &str = "u";
/// How long one `XREAD` waits for new events before asking again.
const BLOCK_MS: u64 = 2_000;
/// Sessions refreshed per pipeline.
const REFRESH_CHUNK: usize = 500;

pub(super) fn unavailable(err: RedisError) -> BackendError {
    BackendError::Unavailable(err.to_string())
}

/// Connects to Redis with timeouts short enough that an outage is noticed in seconds.
pub async fn connect(client: &Client, response_timeout: Duration) -> Result<ConnectionManager, BackendError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    client.get_connection_manager_with_config(config).await.map_err(unavailable)
}

/// The room's bus on a Redis Stream.
pub struct RedisBus {
    writer: ConnectionManager,
    reader: tokio::sync::Mutex<ConnectionManager>,
    max_len: usize,
    /// Set after a failed read: the next read first checks that the stream was not
    /// trimmed past the reader's position while it was away.
    check_trim: AtomicBool,
}

impl RedisBus {
    /// Opens the writer and reader connections.
    pub async fn connect(client: &Client, max_len: usize) -> Result<Self, BackendError> {
        let writer = connect(client, Duration::from_secs(2)).await?;
        let reader = connect(client, Duration::from_millis(BLOCK_MS + 3_000)).await?;
        Ok(Self { writer, reader: tokio::sync::Mutex::new(reader), max_len, check_trim: AtomicBool::new(true) })
    }

    async fn trimmed_past(
        &self,
        conn: &mut ConnectionManager,
        after: Position,
    ) -> Result<Option<Position>, BackendError> {
        let info: HashMap<String, redis::Value> =
            match redis::cmd("XINFO").arg("STREAM").arg(STREAM_KEY).query_async(conn).await {
                Ok(info) => info,
                // No stream yet: nothing was trimmed.
                Err(err) if err.to_string().contains("no such key") => return Ok(None),
                Err(err) => return Err(unavailable(err)),
            };
        let deleted = info
            .get("max-deleted-entry-id")
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .and_then(|id| id.parse::<Position>().ok())
            .unwrap_or_default();
        Ok((deleted > after).then_some(deleted))
    }
}

/// Reads one stream entry; an entry that is not a room event (written by something
/// else) cannot be shown to anyone, so it is logged and skipped.
fn decode_entry(id: &str, fields: &HashMap<String, redis::Value>) -> Option<Delivered> {
    let Ok(position) = id.parse::<Position>() else {
        tracing::error!(%id, "skipping a stream entry with an id that is not MILLIS-SEQ");
        return None;
    };
    let field =
        |name: &str| -> Option<String> { fields.get(name).and_then(|v| redis::from_redis_value(v.clone()).ok()) };
    let user = field(USER_FIELD).map(UserId::from_stored);
    match field(EVENT_FIELD).map(|raw| serde_json::from_str::<RoomEvent>(&raw)) {
        Some(Ok(event)) => Some(Delivered { position, event, user }),
        Some(Err(err)) => {
            tracing::error!(%position, %err, "skipping a stream entry that is not a room event");
            None
        }
        None => {
            tracing::error!(%position, "skipping a stream entry without an event field");
            None
        }
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: RoomEvent) -> Result<Position, BackendError> {
        let json = serde_json::to_string(&event).map_err(|err| BackendError::Unavailable(err.to_string()))?;
        let id: String = redis::cmd("XADD")
            .arg(STREAM_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(json)
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        id.parse().map_err(|err: super::BadPosition| BackendError::Unavailable(err.to_string()))
    }

    async fn tail(&self) -> Result<Position, BackendError> {
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        match newest.ids.first() {
            Some(entry) => {
                entry.id.parse().map_err(|err: super::BadPosition| BackendError::Unavailable(err.to_string()))
            }
            None => Ok(Position::default()),
        }
    }

    async fn recent(&self, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        Ok(newest.ids.iter().rev().filter_map(|e| decode_entry(&e.id, &e.map)).collect())
    }

    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let mut conn = self.writer.clone();
        if let Some(oldest) = self.trimmed_past(&mut conn, after).await? {
            return Err(BackendError::Trimmed { after, oldest });
        }
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(STREAM_KEY)
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(range.ids.iter().filter_map(|e| decode_entry(&e.id, &e.map)).collect())
    }

    async fn read_after(&self, mut after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let mut conn = self.reader.lock().await;
        let result = async {
            if self.check_trim.load(Ordering::Relaxed) {
                if let Some(oldest) = self.trimmed_past(&mut conn, after).await? {
                    return Err(BackendError::Trimmed { after, oldest });
                }
                self.check_trim.store(false, Ordering::Relaxed);
            }
            loop {
                let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(max.max(1))
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(STREAM_KEY)
                    .arg(after.to_string())
                    .query_async(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let entries: Vec<_> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
                let Some(last) = entries.last() else { continue };
                let delivered: Vec<Delivered> = entries.iter().filter_map(|e| decode_entry(&e.id, &e.map)).collect();
                if !delivered.is_empty() {
                    return Ok(delivered);
                }
                // Only unreadable entries: read on past them.
                after = last.id.parse().unwrap_or(after);
            }
        }
        .await;
        if matches!(result, Err(BackendError::Unavailable(_))) {
            self.check_trim.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Session hashes with a TTL; the node remembers its live sessions to keep them alive
/// and to write them back if Redis lost them.
pub struct RedisSessions {
    conn: ConnectionManager,
    ttl: Duration,
    live: Mutex<HashMap<String, String>>,
}

/// The Redis key of a session.
pub fn session_key(sid: &str) -> String {
    format!("session:{sid}")
}

impl RedisSessions {
    /// A store whose records expire `ttl` after their last refresh.
    pub async fn connect(client: &Client, ttl: Duration) -> Result<Self, BackendError> {
        Ok(Self { conn: connect(client, Duration::from_secs(2)).await?, ttl, live: Mutex::new(HashMap::new()) })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How often [`RedisSessions::refresh`] must run for records to outlive their TTL.
    pub fn refresh_interval(&self) -> Duration {
        self.ttl / 3
    }

    async fn write(&self, records: &[(String, String)]) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        for (sid, name) in records {
            let key = session_key(sid);
            pipe.hset(&key, "username", name).ignore();
            pipe.expire(&key, self.ttl.as_secs() as i64).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(unavailable)
    }

    /// Rewrites every live session with a fresh TTL (this also restores them after a
    /// Redis restart that lost its data).
    pub async fn refresh(&self) -> Result<usize, BackendError> {
        let records: Vec<(String, String)> = self.live().iter().map(|(s, n)| (s.clone(), n.clone())).collect();
        for chunk in records.chunks(REFRESH_CHUNK) {
            self.write(chunk).await?;
            // A session removed while its chunk was written would be written back and
            // linger until its TTL (seen when thousands of clients left at once): remove
            // it again. Its own DEL, if still to come, is sent after this write anyway.
            let closed: Vec<String> = {
                let live = self.live();
                chunk.iter().filter(|(sid, _)| !live.contains_key(sid)).map(|(sid, _)| session_key(sid)).collect()
            };
            if !closed.is_empty() {
                redis::cmd("DEL").arg(&closed).query_async::<()>(&mut self.conn.clone()).await.map_err(unavailable)?;
            }
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
    async fn create(&self, sid: &str) -> Result<(), BackendError> {
        // Remembered even if the write fails: the next refresh writes it.
        self.live().insert(sid.to_owned(), String::new());
        self.write(&[(sid.to_owned(), String::new())]).await
    }

    async fn set_username(&self, sid: &str, name: &str) -> Result<(), BackendError> {
        // Remembered only once stored: a refused rename must not come back with a refresh.
        self.write(&[(sid.to_owned(), name.to_owned())]).await?;
        self.live().insert(sid.to_owned(), name.to_owned());
        Ok(())
    }

    async fn username(&self, sid: &str) -> Result<Option<String>, BackendError> {
        redis::cmd("HGET")
            .arg(session_key(sid))
            .arg("username")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn remove(&self, sid: &str) -> Result<(), BackendError> {
        self.live().remove(sid);
        redis::cmd("DEL").arg(session_key(sid)).query_async::<()>(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

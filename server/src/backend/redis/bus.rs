//! The room's bus on a Redis Stream.
//!
//! Publishing is an `XADD` (capped with `MAXLEN ~`); each node delivers only what it
//! reads back with `XREAD BLOCK` after the last id it delivered, its own lines included,
//! so every node delivers the same sequence. A blocking read holds its connection, so
//! reads use a connection of their own and writes a shared, multiplexed one.

use super::connect;
use crate::backend::{BackendError, Delivered, EventBus, UserId};
use app::protocol::{Position, RoomEvent};
use async_trait::async_trait;
use redis::Client;
use redis::aio::ConnectionManager;
use redis::streams::{StreamRangeReply, StreamReadReply};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The stream that carries the room's events.
pub const STREAM_KEY: &str = "chatroom:events";
/// The stream field holding an event's JSON.
const EVENT_FIELD: &str = "e";
/// The stream field naming the user a join or rename is about (see `presence.lua`).
const USER_FIELD: &str = "u";
/// How long one `XREAD` waits for new events before asking again.
const BLOCK_MS: u64 = 2_000;

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
                Err(err) => return Err(err.into()),
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
        let json = serde_json::to_string(&event)?;
        let id: String = redis::cmd("XADD")
            .arg(STREAM_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(json)
            .query_async(&mut self.writer.clone())
            .await?;
        Ok(id.parse()?)
    }

    async fn tail(&self) -> Result<Position, BackendError> {
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.writer.clone())
            .await?;
        match newest.ids.first() {
            Some(entry) => Ok(entry.id.parse()?),
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
            .await?;
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
            .await?;
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
                    .await?;
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
        // After any failure but a trim, the next read checks for a trim first.
        if result.as_ref().is_err_and(|err| !matches!(err, BackendError::Trimmed { .. })) {
            self.check_trim.store(true, Ordering::Relaxed);
        }
        result
    }
}

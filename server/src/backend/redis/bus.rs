//! The room's bus on a Redis Stream.
//!
//! Publishing is an `XADD` (capped with `MAXLEN ~`); each node delivers only what it
//! reads back with `XREAD BLOCK` after the last id it delivered, its own lines included,
//! so every node delivers the same sequence. A blocking read holds its connection, so
//! reads use a connection of their own and writes a shared, multiplexed one.

use super::connect;
use crate::backend::{BackendError, Delivered, EventBus, Span, UserId};
use app::protocol::{Position, RoomEvent};
use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{Client, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The stream that carries the room's events.
pub const STREAM_KEY: &str = "chatroom:events";
/// The key holding the id where the stream's current epoch began (see `stream.lua`).
pub const EPOCH_KEY: &str = "chatroom:epoch";
/// The stream field holding an event's JSON.
const EVENT_FIELD: &str = "e";
/// The stream field naming the user a join or rename is about (see `presence.lua`).
const USER_FIELD: &str = "u";
/// How long one `XREAD` waits for new events before asking again (and looks at the epoch).
const BLOCK_MS: u64 = 2_000;
/// How long a publish waits for Redis's answer before its sender is told it failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// A line that reaches Redis later than this after it was sent is dropped there: well
/// within the publish timeout, so that a line reported as failed is never published.
const PUBLISH_DEADLINE_MS: i64 = 1_000;
/// How often the difference between Redis's clock and ours is measured again.
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(30);

/// What every script that appends to the stream starts with (the stream and its epoch).
pub(super) const STREAM_LUA: &str = include_str!("stream.lua");

/// The bus script: `stream.lua` then `bus.lua` (publish with a deadline, span).
pub fn bus_script() -> Script {
    Script::new(&format!("{STREAM_LUA}{}", include_str!("bus.lua")))
}

/// The room's bus on a Redis Stream.
pub struct RedisBus {
    /// Publishing and `/readyz`.
    writer: ConnectionManager,
    /// Backlog reads (history, resume), so that a big one delays no publish or probe.
    history: ConnectionManager,
    /// The blocking reads of delivery.
    reader: tokio::sync::Mutex<ConnectionManager>,
    script: Script,
    max_len: usize,
    /// Set after a failed read: the next read first checks that the stream was not
    /// trimmed past the reader's position while it was away.
    check_trim: AtomicBool,
    /// The epoch the reader is in; `None` while there is no stream.
    epoch: Mutex<Option<Position>>,
    /// Redis's clock minus ours in ms, and when that was measured.
    clock_offset: Mutex<Option<(i64, Instant)>>,
}

impl RedisBus {
    /// Opens the writer, history and reader connections, and learns the current epoch.
    pub async fn connect(client: &Client, max_len: usize) -> Result<Self, BackendError> {
        let writer = connect(client, PUBLISH_TIMEOUT).await?;
        let history = connect(client, Duration::from_secs(5)).await?;
        let reader = connect(client, Duration::from_millis(BLOCK_MS + 3_000)).await?;
        let bus = Self {
            writer,
            history,
            reader: tokio::sync::Mutex::new(reader),
            script: bus_script(),
            max_len,
            check_trim: AtomicBool::new(true),
            epoch: Mutex::new(None),
            clock_offset: Mutex::new(None),
        };
        let span = bus.span().await?;
        *bus.epoch.lock() = (span.tail != Position::default()).then_some(span.epoch);
        Ok(bus)
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

    /// Redis's clock now, in ms, from ours and the last measured difference.
    async fn redis_now_ms(&self) -> Result<i64, BackendError> {
        let ours = || i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX);
        let known = *self.clock_offset.lock();
        let offset = match known {
            Some((offset, at)) if at.elapsed() < CLOCK_CHECK_EVERY => offset,
            _ => {
                let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut self.writer.clone()).await?;
                let offset = secs * 1_000 + micros / 1_000 - ours();
                *self.clock_offset.lock() = Some((offset, Instant::now()));
                offset
            }
        };
        Ok(ours() + offset)
    }

    /// Notes the epoch a read saw; whether it differs from the one the reader was in
    /// (a stream appearing where there was none is not a change: the reader reads it
    /// from its start).
    fn epoch_changed(&self, seen: Option<Position>) -> bool {
        let mut known = self.epoch.lock();
        let changed = known.is_some() && *known != seen;
        *known = seen;
        changed
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
        let deadline = self.redis_now_ms().await? + PUBLISH_DEADLINE_MS;
        let mut invocation = self.script.arg("publish");
        invocation.arg(self.max_len).arg(deadline).arg(json);
        let id: Option<String> = invocation.invoke_async(&mut self.writer.clone()).await?;
        Ok(id.ok_or(BackendError::PastDeadline)?.parse()?)
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

    async fn span(&self) -> Result<Span, BackendError> {
        let (epoch, tail): (String, String) = self.script.arg("span").invoke_async(&mut self.history.clone()).await?;
        Ok(Span { epoch: epoch.parse()?, tail: tail.parse()? })
    }

    async fn newest(&self, before: Option<Position>, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let end = before.map_or_else(|| "+".to_owned(), |before| format!("({before}"));
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.history.clone())
            .await?;
        Ok(newest.ids.iter().filter_map(|e| decode_entry(&e.id, &e.map)).collect())
    }

    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let mut conn = self.history.clone();
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
                // The epoch is read right after the entries, in the same round trip: a
                // batch read from a stream that replaced the reader's is not delivered.
                let (reply, epoch): (Option<StreamReadReply>, Option<String>) = redis::pipe()
                    .cmd("XREAD")
                    .arg("COUNT")
                    .arg(max.max(1))
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(STREAM_KEY)
                    .arg(after.to_string())
                    .cmd("GET")
                    .arg(EPOCH_KEY)
                    .query_async(&mut *conn)
                    .await?;
                let epoch = epoch.map(|epoch| epoch.parse::<Position>()).transpose()?;
                if self.epoch_changed(epoch) {
                    return Err(BackendError::EpochChanged);
                }
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
        // After any failure but a trim or a new epoch, the next read checks for a trim first.
        if result.as_ref().is_err_and(|err| !matches!(err, BackendError::Trimmed { .. } | BackendError::EpochChanged)) {
            self.check_trim.store(true, Ordering::Relaxed);
        }
        result
    }
}

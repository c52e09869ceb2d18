//! The rooms' buses on Redis Streams, one stream per room.
//!
//! Publishing is an `XADD` (capped with `MAXLEN ~`) that also names the room on the wake
//! channel; each node delivers only what it reads back from the stream after the last id
//! it delivered, its own lines included, so every node delivers the same sequence. A
//! node reads a room when the wake channel names it, and every two seconds anyway (a
//! wake-up can be lost while the subscription reconnects): one non-blocking `XREAD` of
//! one stream at a time works the same on Redis Cluster, where one blocking read across
//! rooms of different slots is refused.

use super::keys::{RoomKeys, WAKE_CHANNEL};
use super::{RedisConn, RedisLink, Replication};
use crate::backend::{BackendError, BusStats, Buses, Delivered, EventBus, Span, UserId};
use app::protocol::{Position, RoomEvent, RoomName};
use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use redis::Script;
use redis::streams::{StreamRangeReply, StreamReadReply};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The stream field holding an event's JSON.
const EVENT_FIELD: &str = "e";
/// The stream field naming the user a join or rename is about (see `room.lua`), or who
/// wrote a chat line.
const USER_FIELD: &str = "u";
/// Entries read at a time when a room's stream is scanned (for a user's lines).
const SCAN_PAGE: usize = 500;
/// How long a reader waits for a wake-up before it reads its room anyway (and looks at
/// the epoch).
const POLL: Duration = Duration::from_secs(2);
/// How long a publish waits for Redis's answer before its sender is told it failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// A line that reaches Redis later than this after it was sent is dropped there: well
/// within the publish timeout, so that a line reported as failed is never published.
const PUBLISH_DEADLINE_MS: i64 = 1_000;
/// How often the difference between Redis's clock and ours is measured again.
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long to wait before subscribing to the wake channel again.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// What every script that appends to a room's stream starts with (the stream, its epoch).
pub(super) const STREAM_LUA: &str = include_str!("stream.lua");

/// The bus script: `stream.lua` then `bus.lua` (publish with a deadline, span).
pub fn bus_script() -> Script {
    Script::new(&format!("{STREAM_LUA}{}", include_str!("bus.lua")))
}

/// What the buses of all rooms share: connections, the script, the wake-ups.
struct Shared {
    /// Publishing and `/readyz`.
    writer: RedisConn,
    /// Backlog reads (history, resume), so that a big one delays no publish or probe.
    history: RedisConn,
    /// The reads of delivery.
    reader: RedisConn,
    /// The way to Redis (whose generation tells of a failover).
    link: RedisLink,
    /// Under `replica` durability: events count (and are read) only once a replica has them.
    replication: Option<Arc<Replication>>,
    script: Script,
    max_len: usize,
    /// Redis's clock minus ours in ms, and when that was measured.
    clock_offset: Mutex<Option<(i64, Instant)>>,
    /// The rooms this node reads, each with the wake-up of its reader.
    wakers: Mutex<HashMap<RoomName, Arc<Notify>>>,
}

impl Shared {
    /// Wakes every reader: after the subscription was lost, wake-ups may have been missed.
    fn wake_all(&self) {
        for waker in self.wakers.lock().values() {
            waker.notify_one();
        }
    }

    fn wake(&self, room: &str) {
        let Ok(room) = RoomName::parse(room) else { return };
        if let Some(waker) = self.wakers.lock().get(&room) {
            waker.notify_one();
        }
    }
}

/// Every room's bus on Redis.
pub struct RedisBuses {
    shared: Arc<Shared>,
}

impl RedisBuses {
    /// Opens the writer, history and reader connections, and subscribes to the wake
    /// channel for the life of the node; with `replication`, only events a replica has
    /// are read.
    pub async fn connect(
        link: &RedisLink,
        max_len: usize,
        replication: Option<Arc<Replication>>,
    ) -> Result<Self, BackendError> {
        let shared = Arc::new(Shared {
            writer: link.connect(PUBLISH_TIMEOUT).await?,
            history: link.connect(Duration::from_secs(5)).await?,
            reader: link.connect(Duration::from_secs(5)).await?,
            link: link.clone(),
            replication,
            script: bus_script(),
            max_len,
            clock_offset: Mutex::new(None),
            wakers: Mutex::new(HashMap::new()),
        });
        tokio::spawn(listen(link.clone(), Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// The bus of `room`, as its own type.
    pub fn bus(&self, room: &RoomName) -> RedisBus {
        RedisBus {
            shared: self.shared.clone(),
            room: room.clone(),
            keys: RoomKeys::of(room),
            check_trim: AtomicBool::new(true),
            checked_in: AtomicU64::new(self.shared.link.generation()),
            epoch: Mutex::new(None),
            waker: OnceLock::new(),
        }
    }
}

impl Buses for RedisBuses {
    fn room(&self, room: &RoomName) -> Arc<dyn EventBus> {
        Arc::new(self.bus(room))
    }
}

/// Follows the wake channel and wakes the reader of each room it names, until the node's
/// buses are dropped; subscribes again after a failure, and then wakes every reader.
async fn listen(link: RedisLink, shared: Weak<Shared>) {
    loop {
        match link.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(WAKE_CHANNEL).await {
                Ok(()) => {
                    let Some(buses) = shared.upgrade() else { return };
                    buses.wake_all();
                    drop(buses);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(buses) = shared.upgrade() else { return };
                        if let Ok(room) = message.get_payload::<String>() {
                            buses.wake(&room);
                        }
                    }
                    tracing::warn!("the wake channel's subscription ended; subscribing again");
                }
                Err(err) => tracing::warn!(%err, "cannot subscribe to the wake channel; retrying"),
            },
            Err(err) => tracing::warn!(%err, "cannot open the wake channel's connection; retrying"),
        }
        let Some(buses) = shared.upgrade() else { return };
        buses.wake_all();
        drop(buses);
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// One room's bus on its Redis Stream.
pub struct RedisBus {
    shared: Arc<Shared>,
    room: RoomName,
    keys: RoomKeys,
    /// Set until the first read and after a failed one: the next read first checks that
    /// the stream was not trimmed past the reader's position while it was away.
    check_trim: AtomicBool,
    /// The link's generation the last check was made in: a failover since calls for another.
    checked_in: AtomicU64,
    /// The epoch the reader is in: `None` before its first read, `Some(None)` while
    /// there is no stream.
    epoch: Mutex<Option<Option<Position>>>,
    /// The reader's wake-up, once this bus is read for delivery.
    waker: OnceLock<Arc<Notify>>,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        if let Some(waker) = self.waker.get() {
            let mut wakers = self.shared.wakers.lock();
            if wakers.get(&self.room).is_some_and(|known| Arc::ptr_eq(known, waker)) {
                wakers.remove(&self.room);
            }
        }
    }
}

impl RedisBus {
    /// The newest id trimming removed from the stream (the default position for none).
    async fn max_deleted(&self, conn: &mut RedisConn) -> Result<Position, BackendError> {
        let info: HashMap<String, redis::Value> =
            match redis::cmd("XINFO").arg("STREAM").arg(&self.keys.stream).query_async(conn).await {
                Ok(info) => info,
                // No stream yet: nothing was trimmed.
                Err(err) if err.to_string().contains("no such key") => return Ok(Position::default()),
                Err(err) => return Err(err.into()),
            };
        Ok(info
            .get("max-deleted-entry-id")
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .and_then(|id| id.parse::<Position>().ok())
            .unwrap_or_default())
    }

    /// `Trimmed` when the stream no longer holds every event after `after`.
    async fn check_trimmed(&self, conn: &mut RedisConn, after: Position) -> Result<(), BackendError> {
        let deleted = self.max_deleted(conn).await?;
        if deleted > after {
            return Err(BackendError::Trimmed { after, oldest: deleted });
        }
        Ok(())
    }

    /// `Rewound` when the event at `after` is gone though nothing was trimmed past it:
    /// the master a failover promoted never had it. (An operator's deletion of exactly
    /// that event looks the same, and costs the room's clients a needless reset.)
    async fn check_rewound(&self, conn: &mut RedisConn, after: Position) -> Result<(), BackendError> {
        if after == Position::default() {
            return Ok(());
        }
        let (at, before): (StreamRangeReply, StreamRangeReply) = redis::pipe()
            .cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg(after.to_string())
            .arg(after.to_string())
            .cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg(format!("({after}"))
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        if !at.ids.is_empty() {
            return Ok(());
        }
        // Trimmed away is not lost: what follows it is still there, or `Trimmed` says not.
        if self.max_deleted(conn).await? >= after {
            return self.check_trimmed(conn, after).await;
        }
        // A stream that began anew (Redis lost its data) is the epoch's business.
        let epoch: Option<String> = redis::cmd("GET").arg(&self.keys.epoch).query_async(conn).await?;
        let epoch = epoch.map(|epoch| epoch.parse::<Position>()).transpose()?;
        if self.epoch_changed(epoch) {
            return Err(BackendError::EpochChanged);
        }
        let last = before.ids.first().map(|entry| entry.id.parse()).transpose()?.unwrap_or_default();
        Err(BackendError::Rewound { after, last })
    }

    /// Redis's clock now, in ms, from ours and the last measured difference.
    async fn redis_now_ms(&self) -> Result<i64, BackendError> {
        let ours = || i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX);
        let known = *self.shared.clock_offset.lock();
        let offset = match known {
            Some((offset, at)) if at.elapsed() < CLOCK_CHECK_EVERY => offset,
            _ => {
                let (secs, micros): (i64, i64) =
                    redis::cmd("TIME").query_async(&mut self.shared.writer.clone()).await?;
                let offset = secs * 1_000 + micros / 1_000 - ours();
                *self.shared.clock_offset.lock() = Some((offset, Instant::now()));
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
        let changed = matches!(*known, Some(Some(_))) && *known != Some(seen);
        *known = Some(seen);
        changed
    }

    /// The reader's wake-up, registered with the wake channel's listener.
    fn waker(&self) -> Arc<Notify> {
        self.waker
            .get_or_init(|| {
                let waker = Arc::new(Notify::new());
                self.shared.wakers.lock().insert(self.room.clone(), waker.clone());
                waker
            })
            .clone()
    }

    /// Whether a replica has every event read or written so far (always, under `async`
    /// durability).
    async fn replicated(&self) -> bool {
        match &self.shared.replication {
            Some(replication) => replication.confirm().await,
            None => true,
        }
    }

    /// `NotYetReplicated` unless a replica has the events just read (to be shown).
    async fn check_replicated(&self, events: &[Delivered]) -> Result<(), BackendError> {
        match events.last() {
            Some(newest) if !self.replicated().await => {
                Err(BackendError::NotYetReplicated { position: newest.position })
            }
            _ => Ok(()),
        }
    }

    /// The script with the room's keys and its first two arguments.
    fn invocation(&self, op: &str) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.shared.script.prepare_invoke();
        invocation.key(&self.keys.stream).key(&self.keys.epoch).arg(op).arg(self.room.as_str());
        invocation
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
    async fn publish_by(&self, event: RoomEvent, user: Option<&UserId>) -> Result<Position, BackendError> {
        let json = serde_json::to_string(&event)?;
        let deadline = self.redis_now_ms().await? + PUBLISH_DEADLINE_MS;
        let mut invocation = self.invocation("publish");
        invocation.arg(self.shared.max_len).arg(deadline).arg(json);
        if let Some(user) = user {
            invocation.arg(user.as_str());
        }
        let id: Option<String> = invocation.invoke_async(&mut self.shared.writer.clone()).await?;
        let position: Position = id.ok_or(BackendError::PastDeadline)?.parse()?;
        if !self.replicated().await {
            return Err(BackendError::NotYetReplicated { position });
        }
        Ok(position)
    }

    async fn delete(&self, position: Position) -> Result<Option<Delivered>, BackendError> {
        let mut invocation = self.invocation("delete");
        invocation.arg(position.to_string());
        let found: Option<(String, String)> = invocation.invoke_async(&mut self.shared.writer.clone()).await?;
        let Some((json, user)) = found else { return Ok(None) };
        let user = (!user.is_empty()).then(|| UserId::from_stored(user));
        Ok(Some(Delivered { position, event: serde_json::from_str(&json)?, user }))
    }

    async fn trim_older_than(&self, oldest_ms: u64) -> Result<u64, BackendError> {
        let trimmed: u64 = redis::cmd("XTRIM")
            .arg(&self.keys.stream)
            .arg("MINID")
            .arg(format!("{oldest_ms}-0"))
            .query_async(&mut self.shared.writer.clone())
            .await?;
        Ok(trimmed)
    }

    async fn written_by(&self, user: &UserId) -> Result<Vec<Position>, BackendError> {
        let mut found = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.stream)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(SCAN_PAGE)
                .query_async(&mut self.shared.history.clone())
                .await?;
            for entry in &page.ids {
                let by_user = decode_entry(&entry.id, &entry.map)
                    .is_some_and(|d| d.user.as_ref() == Some(user) && matches!(d.event, RoomEvent::Chat { .. }));
                if by_user {
                    found.push(entry.id.parse()?);
                }
            }
            match page.ids.last() {
                Some(last) if page.ids.len() == SCAN_PAGE => from = format!("({}", last.id),
                _ => return Ok(found),
            }
        }
    }

    async fn tail(&self) -> Result<Position, BackendError> {
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.shared.writer.clone())
            .await?;
        match newest.ids.first() {
            Some(entry) => Ok(entry.id.parse()?),
            None => Ok(Position::default()),
        }
    }

    async fn span(&self) -> Result<Span, BackendError> {
        let (epoch, tail): (String, String) =
            self.invocation("span").invoke_async(&mut self.shared.history.clone()).await?;
        Ok(Span { epoch: epoch.parse()?, tail: tail.parse()? })
    }

    async fn newest(&self, before: Option<Position>, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let end = before.map_or_else(|| "+".to_owned(), |before| format!("({before}"));
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.shared.history.clone())
            .await?;
        let events: Vec<Delivered> = newest.ids.iter().filter_map(|e| decode_entry(&e.id, &e.map)).collect();
        self.check_replicated(&events).await?;
        Ok(events)
    }

    async fn stats(&self) -> Result<BusStats, BackendError> {
        let (length, oldest): (u64, StreamRangeReply) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.stream)
            .cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.shared.history.clone())
            .await?;
        let oldest = oldest.ids.first().map(|entry| entry.id.parse()).transpose()?;
        Ok(BusStats { length, oldest })
    }

    async fn range_after(&self, after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let mut conn = self.shared.history.clone();
        self.check_trimmed(&mut conn, after).await?;
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        let events: Vec<Delivered> = range.ids.iter().filter_map(|e| decode_entry(&e.id, &e.map)).collect();
        self.check_replicated(&events).await?;
        Ok(events)
    }

    async fn read_after(&self, mut after: Position, max: usize) -> Result<Vec<Delivered>, BackendError> {
        let waker = self.waker();
        let mut conn = self.shared.reader.clone();
        let result = async {
            if self.epoch.lock().is_none() {
                let span = self.span().await?;
                *self.epoch.lock() = Some((span.tail != Position::default()).then_some(span.epoch));
            }
            if self.check_trim.load(Ordering::Relaxed) {
                self.check_trimmed(&mut conn, after).await?;
                self.check_trim.store(false, Ordering::Relaxed);
            }
            // After a failover the new master may lack the newest events this reader
            // delivered, and the ids it gives next may be lower than theirs.
            let generation = self.shared.link.generation();
            if self.checked_in.load(Ordering::Relaxed) != generation {
                self.check_rewound(&mut conn, after).await?;
                self.checked_in.store(generation, Ordering::Relaxed);
            }
            loop {
                // The epoch is read right after the entries, in the same round trip: a
                // batch read from a stream that replaced the reader's is not delivered.
                let (reply, epoch): (Option<StreamReadReply>, Option<String>) = redis::pipe()
                    .cmd("XREAD")
                    .arg("COUNT")
                    .arg(max.max(1))
                    .arg("STREAMS")
                    .arg(&self.keys.stream)
                    .arg(after.to_string())
                    .cmd("GET")
                    .arg(&self.keys.epoch)
                    .query_async(&mut conn)
                    .await?;
                let epoch = epoch.map(|epoch| epoch.parse::<Position>()).transpose()?;
                if self.epoch_changed(epoch) {
                    return Err(BackendError::EpochChanged);
                }
                let entries: Vec<_> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
                let Some(last) = entries.last() else {
                    // Nothing new: wait for the room's next wake-up, or read again anyway.
                    let _ = tokio::time::timeout(POLL, waker.notified()).await;
                    continue;
                };
                let delivered: Vec<Delivered> = entries.iter().filter_map(|e| decode_entry(&e.id, &e.map)).collect();
                if !delivered.is_empty() {
                    // Under `replica` durability, held back until a replica has them (and
                    // read again then, from the master of that moment).
                    self.check_replicated(&delivered).await?;
                    return Ok(delivered);
                }
                // Only unreadable entries: read on past them.
                after = last.id.parse().unwrap_or(after);
            }
        }
        .await;
        // After any failure but a trim or a new epoch, the next read checks for a trim first.
        let gap = |err: &BackendError| {
            matches!(err, BackendError::Trimmed { .. } | BackendError::Rewound { .. } | BackendError::EpochChanged)
        };
        if result.as_ref().is_err_and(|err| !gap(err)) {
            self.check_trim.store(true, Ordering::Relaxed);
        }
        result
    }
}

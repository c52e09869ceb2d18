//! What a chatroom client is sent on joining, before any live line: the recent history,
//! or every event after the position it presents, read from the bus a page at a time.
//!
//! Invariants: a `resume` holds every event after the presented position, none left out;
//! when that cannot be (the position is from another epoch, past the bus's end, trimmed
//! away, or what was missed does not fit one packet) the client gets a `reset` with the
//! newest events instead, never a `resume` with a hole. A backlog's lines take at most
//! [`MAX_BACKLOG_BYTES`] as JSON, so one client cannot make a node build a huge packet.

use crate::backend::{BackendError, Delivered, EventBus};
use app::protocol::{BacklogKind, Position, Presented};
use std::time::Duration;

/// The most a backlog's lines take as JSON. The packet around them adds a few bytes.
pub const MAX_BACKLOG_BYTES: usize = 256 * 1024 - 1024;

/// Events read from the bus at a time.
const PAGE: usize = 64;

/// How much of the room's past a joining client is shown.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// At most this many events.
    pub len: usize,
    /// None older than this.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { len: 500, max_age: Duration::from_secs(24 * 3600) }
    }
}

/// A backlog read from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// What it is.
    pub kind: BacklogKind,
    /// Its events, oldest first.
    pub events: Vec<Delivered>,
    /// The position the client resumed after, for a `resume`.
    pub resumed_after: Option<Position>,
}

impl Backlog {
    /// The recent history, as a `reset` or as a fresh join's `history`.
    async fn recent(bus: &dyn EventBus, kind: BacklogKind, limits: HistoryLimits) -> Result<Self, BackendError> {
        Ok(Self { kind, events: history(bus, limits).await?, resumed_after: None })
    }
}

/// The backlog of a client that presents `after` (nothing for a fresh join).
pub async fn read(
    bus: &dyn EventBus,
    after: Option<&Presented<Position>>,
    limits: HistoryLimits,
) -> Result<Backlog, BackendError> {
    let after = match after {
        None => return Backlog::recent(bus, BacklogKind::History, limits).await,
        Some(Presented::Invalid(_)) => return Backlog::recent(bus, BacklogKind::Reset, limits).await,
        Some(Presented::Valid(after)) => *after,
    };
    if !bus.span().await?.holds(after) {
        return Backlog::recent(bus, BacklogKind::Reset, limits).await;
    }
    let mut missed: Vec<Delivered> = Vec::new();
    let mut bytes = 0;
    loop {
        let from = missed.last().map_or(after, |d| d.position);
        let page = match bus.range_after(from, PAGE).await {
            Ok(page) => page,
            Err(BackendError::Trimmed { .. }) => return Backlog::recent(bus, BacklogKind::Reset, limits).await,
            Err(err) => return Err(err),
        };
        let full = page.len() == PAGE;
        for delivered in page {
            bytes += line_bytes(&delivered);
            if bytes > MAX_BACKLOG_BYTES {
                // Too much was missed for one packet: start the client over from the newest.
                return Backlog::recent(bus, BacklogKind::Reset, limits).await;
            }
            missed.push(delivered);
        }
        if !full {
            return Ok(Backlog { kind: BacklogKind::Resume, events: missed, resumed_after: Some(after) });
        }
    }
}

/// The newest events within the history limits and the byte bound, oldest first.
async fn history(bus: &dyn EventBus, limits: HistoryLimits) -> Result<Vec<Delivered>, BackendError> {
    let max_age_ms = u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX);
    let oldest_ms = crate::clock::now_ms().saturating_sub(max_age_ms);
    Ok(newest_within(bus, None, limits.len, oldest_ms).await?.0)
}

/// Up to `limit` events before `before`, oldest first, within [`MAX_BACKLOG_BYTES`], and
/// whether they reach the oldest event the bus keeps (nothing older is left).
pub async fn older(bus: &dyn EventBus, before: Position, limit: usize) -> Result<(Vec<Delivered>, bool), BackendError> {
    if before == Position::default() {
        // Nothing comes before the first position (and Redis refuses the range).
        return Ok((Vec::new(), true));
    }
    newest_within(bus, Some(before), limit, 0).await
}

/// Up to `max` events before `before` (the newest without it), none older than
/// `oldest_ms`, within [`MAX_BACKLOG_BYTES`], read a page at a time; oldest first, and
/// whether nothing older is left (the bus's oldest event or `oldest_ms` was reached).
async fn newest_within(
    bus: &dyn EventBus,
    before: Option<Position>,
    max: usize,
    oldest_ms: u64,
) -> Result<(Vec<Delivered>, bool), BackendError> {
    let mut newest_first: Vec<Delivered> = Vec::new();
    let mut bytes = 0;
    let complete = 'pages: loop {
        // One more than `max` tells whether anything older is left.
        let asked = PAGE.min(max + 1 - newest_first.len());
        let page = bus.newest(newest_first.last().map(|d| d.position).or(before), asked).await?;
        let short = page.len() < asked;
        for delivered in page {
            if delivered.position.ms < oldest_ms {
                break 'pages true;
            }
            bytes += line_bytes(&delivered);
            if newest_first.len() == max || bytes > MAX_BACKLOG_BYTES {
                break 'pages false;
            }
            newest_first.push(delivered);
        }
        if short {
            break true;
        }
    };
    newest_first.reverse();
    Ok((newest_first, complete))
}

/// The size of an event as a line of a backlog, in JSON (with its separating comma).
pub fn line_bytes(delivered: &Delivered) -> usize {
    let mut counter = ByteCounter(1);
    // Writing to a counter cannot fail, and a room line always serializes.
    let _ = serde_json::to_writer(&mut counter, &delivered.line());
    counter.0
}

/// Counts what is written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBus;
    use app::protocol::RoomEvent;

    fn limits(len: usize) -> HistoryLimits {
        HistoryLimits { len, max_age: Duration::from_secs(60) }
    }

    fn line(text: &str) -> RoomEvent {
        RoomEvent::Chat { author: "ann".into(), text: text.into() }
    }

    async fn publish(bus: &MemoryBus, n: usize, text: &str) -> Vec<Position> {
        let mut positions = Vec::new();
        for _ in 0..n {
            positions.push(EventBus::publish(bus, line(text)).await.unwrap());
        }
        positions
    }

    fn packet_bytes(backlog: &Backlog) -> usize {
        let lines: Vec<_> = backlog.events.iter().map(Delivered::line).collect();
        serde_json::to_string(&app::protocol::Backlog { room: None, kind: backlog.kind, lines }).unwrap().len()
    }

    #[tokio::test]
    async fn a_resume_gets_every_missed_event_across_pages() {
        let bus = MemoryBus::new(1_000);
        let positions = publish(&bus, 200, "hi").await;
        let after = Presented::Valid(positions[9]);
        let backlog = read(&bus, Some(&after), limits(10)).await.unwrap();
        assert_eq!(backlog.kind, BacklogKind::Resume);
        assert_eq!(backlog.events.iter().map(|d| d.position).collect::<Vec<_>>(), positions[10..]);
        assert_eq!(backlog.resumed_after, Some(positions[9]));
    }

    #[tokio::test]
    async fn a_resume_too_big_for_one_packet_is_a_reset_with_the_newest_that_fit() {
        let bus = MemoryBus::new(10_000);
        // 1,900 control characters escape to 6 bytes each in JSON: ~11 KB a line.
        let heavy = "\u{1}".repeat(1_900);
        let positions = publish(&bus, 60, &heavy).await;
        let backlog = read(&bus, Some(&Presented::Valid(positions[0])), limits(500)).await.unwrap();
        assert_eq!(backlog.kind, BacklogKind::Reset);
        assert!(packet_bytes(&backlog) <= 256 * 1024, "{} bytes", packet_bytes(&backlog));
        assert!(backlog.events.len() > 10, "as many as fit: {}", backlog.events.len());
        assert_eq!(backlog.events.last().map(|d| d.position), positions.last().copied(), "the newest");
        // History on joining is bounded the same way.
        let history = read(&bus, None, limits(500)).await.unwrap();
        assert_eq!(history.kind, BacklogKind::History);
        assert!(packet_bytes(&history) <= 256 * 1024);
        assert_eq!(history.events, backlog.events);
    }

    #[tokio::test]
    async fn positions_outside_the_epoch_get_a_reset() {
        let bus = MemoryBus::new(100);
        let positions = publish(&bus, 3, "hi").await;
        let before_this_process = Position { ms: positions[0].ms - 60_000, seq: 0 };
        let past_the_end = Position { ms: positions[2].ms + 60_000, seq: 0 };
        for after in [before_this_process, past_the_end] {
            let backlog = read(&bus, Some(&Presented::Valid(after)), limits(2)).await.unwrap();
            assert_eq!((backlog.kind, backlog.events.len()), (BacklogKind::Reset, 2), "{after}");
        }
        let empty = MemoryBus::new(100);
        let backlog = read(&empty, Some(&Presented::Valid(positions[2])), limits(2)).await.unwrap();
        assert_eq!((backlog.kind, backlog.events.len()), (BacklogKind::Reset, 0), "a room that lost everything");
    }

    #[tokio::test]
    async fn history_keeps_to_its_length_and_age() {
        let bus = MemoryBus::new(1_000);
        let positions = publish(&bus, 100, "hi").await;
        let history = read(&bus, None, limits(70)).await.unwrap();
        assert_eq!(history.events.iter().map(|d| d.position).collect::<Vec<_>>(), positions[30..]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let none = read(&bus, None, HistoryLimits { len: 70, max_age: Duration::from_millis(5) }).await.unwrap();
        assert!(none.events.is_empty(), "older events are left out");
    }

    #[tokio::test]
    async fn older_lines_page_back_to_the_beginning_within_the_packet_bound() {
        let bus = MemoryBus::new(1_000);
        let positions = publish(&bus, 150, "hi").await;
        let (lines, complete) = older(&bus, positions[120], 100).await.unwrap();
        assert_eq!(lines.iter().map(|d| d.position).collect::<Vec<_>>(), positions[20..120], "oldest first");
        assert!(!complete, "twenty older ones are left");
        let (lines, complete) = older(&bus, positions[20], 100).await.unwrap();
        assert_eq!(lines.iter().map(|d| d.position).collect::<Vec<_>>(), positions[..20]);
        assert!(complete, "the room's beginning");
        let (lines, complete) = older(&bus, positions[0], 100).await.unwrap();
        assert!(lines.is_empty() && complete);
        // Exactly as many as asked, and nothing older: still complete.
        let (lines, complete) = older(&bus, positions[5], 5).await.unwrap();
        assert_eq!((lines.len(), complete), (5, true));

        let heavy_bus = MemoryBus::new(1_000);
        let heavy = publish(&heavy_bus, 60, &"\u{1}".repeat(1_900)).await;
        let (lines, complete) = older(&heavy_bus, Position { ms: heavy[59].ms + 1, seq: 0 }, 100).await.unwrap();
        let packet = app::protocol::Older { room: None, lines: lines.iter().map(Delivered::line).collect(), complete };
        assert!(serde_json::to_string(&packet).unwrap().len() <= 256 * 1024);
        assert!(!complete && lines.len() > 10, "as many as fit: {}", lines.len());
        assert_eq!(lines.last().map(|d| d.position), Some(heavy[59]), "the newest before the position");
    }
}

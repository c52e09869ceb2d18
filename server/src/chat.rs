//! The chat's rules as plain functions: who may say what, and what the room hears.
//! The Socket.IO handlers call these; tests call them directly.

use crate::backend::memory::{MemoryBus, MemorySessions};
use crate::backend::{BackendError, Delivered, EventBus, Position, SessionStore};
use app::protocol::{BacklogKind, RoomEvent};
use app::validation::{MessageText, Refusal, Username};
use backon::{ConstantBuilder, Retryable};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A leave notice is retried every half second for up to 15 s.
const LEAVE_RETRY: ConstantBuilder = ConstantBuilder::new().with_delay(Duration::from_millis(500)).with_max_times(30);

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

/// Events read per page when a client resumes.
const RESUME_PAGE: usize = 1_000;

/// The chat service of one node, over a session store and an event bus.
#[derive(Clone)]
pub struct ChatService {
    sessions: Arc<dyn SessionStore>,
    bus: Arc<dyn EventBus>,
    max_message_chars: usize,
    history: HistoryLimits,
}

impl ChatService {
    /// A service over the given backends.
    pub fn new(sessions: Arc<dyn SessionStore>, bus: Arc<dyn EventBus>, max_message_chars: usize) -> Self {
        Self { sessions, bus, max_message_chars, history: HistoryLimits::default() }
    }

    /// The same service showing `history` to joining clients.
    pub fn with_history(self, history: HistoryLimits) -> Self {
        Self { history, ..self }
    }

    /// What a chatroom client gets on connecting: every event after the position it
    /// presents (`Resume`), or the recent history when it presents none (`History`) or
    /// one the room no longer holds events after (`Reset`). The position returned is the
    /// one resumed after, when there was one.
    pub async fn backlog(
        &self,
        after: Option<&str>,
    ) -> Result<(BacklogKind, Vec<Delivered>, Option<Position>), BackendError> {
        let Some(after) = after else { return Ok((BacklogKind::History, self.history().await?, None)) };
        let Ok(after) = after.parse::<Position>() else {
            return Ok((BacklogKind::Reset, self.history().await?, None));
        };
        let mut missed: Vec<Delivered> = Vec::new();
        loop {
            let from = missed.last().map(|d| d.position).unwrap_or(after);
            match self.bus.range_after(from, RESUME_PAGE).await {
                Ok(page) => {
                    let full = page.len() == RESUME_PAGE;
                    missed.extend(page);
                    if !full {
                        return Ok((BacklogKind::Resume, missed, Some(after)));
                    }
                }
                Err(BackendError::Trimmed { .. }) => return Ok((BacklogKind::Reset, self.history().await?, None)),
                Err(err) => return Err(err),
            }
        }
    }

    /// The recent events within the history limits, oldest first.
    async fn history(&self) -> Result<Vec<Delivered>, BackendError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let oldest_ms = now_ms.saturating_sub(self.history.max_age.as_millis() as u64);
        let mut recent = self.bus.recent(self.history.len).await?;
        recent.retain(|d| d.position.ms >= oldest_ms);
        Ok(recent)
    }

    /// A single-node service with in-memory state.
    /// `kept` is how many events the bus keeps for clients that resume.
    pub fn in_memory(max_message_chars: usize, kept: usize) -> Self {
        Self::new(Arc::new(MemorySessions::default()), Arc::new(MemoryBus::new(kept)), max_message_chars)
    }

    /// The bus this service publishes to.
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// The session records.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Records a new connection's session, without a username.
    pub async fn open_session(&self, sid: &str) -> Result<(), BackendError> {
        self.sessions.create(sid).await
    }

    /// Checks and stores a requested username; `raw` is the event's first argument.
    pub async fn set_username(&self, sid: &str, raw: Option<&Value>) -> Result<Username, Refusal> {
        let name = Username::parse(text_of(raw).ok_or(Refusal::NameNotText)?)?;
        self.sessions.set_username(sid, name.as_str()).await.map_err(|err| {
            tracing::error!(%sid, %err, "could not store a username");
            Refusal::NameUnavailable
        })?;
        Ok(name)
    }

    /// Publishes a chat line from `author` to the whole room, in the room's order.
    pub async fn post(&self, author: Option<&Username>, raw: Option<&Value>) -> Result<Position, Refusal> {
        let author = author.ok_or(Refusal::NoUsername)?;
        let text = MessageText::parse(text_of(raw).ok_or(Refusal::MessageNotText)?, self.max_message_chars)?;
        let event = RoomEvent::Chat { author: author.to_string(), text: text.into_string() };
        self.bus.publish(event).await.map_err(|err| {
            tracing::error!(%author, %err, "a chat line was not published; its sender is told");
            Refusal::Unavailable
        })
    }

    /// Ends a session: a named user's leave is announced to the room, then the record goes.
    /// The announcement is retried for a while, so a short bus outage does not lose it.
    pub async fn close_session(&self, sid: &str, username: Option<&Username>) -> Result<(), BackendError> {
        let announced = match username {
            Some(name) => {
                let left = RoomEvent::Left { author: name.to_string() };
                (|| self.bus.publish(left.clone()))
                    .retry(LEAVE_RETRY)
                    .notify(|err, wait| tracing::warn!(%name, %err, ?wait, "leave notice not published yet; retrying"))
                    .await
                    .map(drop)
            }
            None => Ok(()),
        };
        // Remove the record even when the announcement failed, so it cannot linger.
        let removed = self.sessions.remove(sid).await;
        announced.and(removed)
    }
}

/// The string inside an event argument; anything else (number, object, nothing) is not text.
fn text_of(raw: Option<&Value>) -> Option<&str> {
    raw.and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service() -> ChatService {
        ChatService::in_memory(10, 1_000)
    }

    async fn next_events(chat: &ChatService, after: Position) -> Vec<RoomEvent> {
        chat.bus().read_after(after, 100).await.unwrap().into_iter().map(|d| d.event).collect()
    }

    #[tokio::test]
    async fn a_named_user_posts_to_the_room() {
        let chat = service();
        chat.open_session("s1").await.unwrap();
        let name = chat.set_username("s1", Some(&json!(" ann "))).await.unwrap();
        assert_eq!(name.as_str(), "ann");
        assert_eq!(chat.sessions().username("s1").await.unwrap().as_deref(), Some("ann"));
        chat.post(Some(&name), Some(&json!("hi <b>"))).await.unwrap();
        assert_eq!(
            next_events(&chat, Position::default()).await,
            [RoomEvent::Chat { author: "ann".into(), text: "hi <b>".into() }]
        );
    }

    #[tokio::test]
    async fn a_joining_client_gets_history_and_a_returning_one_what_it_missed() {
        let chat =
            ChatService::in_memory(100, 1_000).with_history(HistoryLimits { len: 2, max_age: Duration::from_secs(60) });
        let name = Username::parse("ann").unwrap();
        let mut positions = Vec::new();
        for n in 0..4 {
            positions.push(chat.post(Some(&name), Some(&json!(n.to_string()))).await.unwrap());
        }
        let (kind, history, _) = chat.backlog(None).await.unwrap();
        assert_eq!(kind, BacklogKind::History);
        assert_eq!(history.iter().map(|d| d.position).collect::<Vec<_>>(), positions[2..]);

        let after = positions[0].to_string();
        let (kind, missed, resumed_after) = chat.backlog(Some(&after)).await.unwrap();
        assert_eq!(kind, BacklogKind::Resume);
        assert_eq!(missed.iter().map(|d| d.position).collect::<Vec<_>>(), positions[1..]);
        assert_eq!(resumed_after, Some(positions[0]));

        let newest = positions[3].to_string();
        assert_eq!(chat.backlog(Some(&newest)).await.unwrap().1, []);
        let (kind, lines, _) = chat.backlog(Some("not-a-position")).await.unwrap();
        assert_eq!((kind, lines.len()), (BacklogKind::Reset, 2));
    }

    #[tokio::test]
    async fn a_position_older_than_the_kept_events_gets_an_explicit_reset() {
        let chat = ChatService::new(Arc::new(MemorySessions::default()), Arc::new(MemoryBus::new(3)), 100);
        let name = Username::parse("ann").unwrap();
        let first = chat.post(Some(&name), Some(&json!("0"))).await.unwrap();
        for n in 1..6 {
            chat.post(Some(&name), Some(&json!(n.to_string()))).await.unwrap();
        }
        let (kind, lines, resumed_after) = chat.backlog(Some(&first.to_string())).await.unwrap();
        assert_eq!((kind, lines.len(), resumed_after), (BacklogKind::Reset, 3, None));
    }

    #[tokio::test]
    async fn posting_without_a_name_is_refused() {
        let chat = service();
        assert_eq!(chat.post(None, Some(&json!("hi"))).await, Err(Refusal::NoUsername));
    }

    #[tokio::test]
    async fn bad_payloads_are_refused_not_published() {
        let chat = service();
        chat.open_session("s1").await.unwrap();
        let name = Username::parse("ann").unwrap();
        for (raw, refusal) in [
            (None, Refusal::MessageNotText),
            (Some(json!(42)), Refusal::MessageNotText),
            (Some(json!({"text": "x"})), Refusal::MessageNotText),
            (Some(json!("  ")), Refusal::EmptyMessage),
            (Some(json!("x".repeat(11))), Refusal::MessageTooLong { max: 10 }),
        ] {
            assert_eq!(chat.post(Some(&name), raw.as_ref()).await, Err(refusal));
        }
        for (raw, refusal) in [
            (None, Refusal::NameNotText),
            (Some(json!(["ann"])), Refusal::NameNotText),
            (Some(json!("")), Refusal::EmptyName),
            (Some(json!("a\u{7}")), Refusal::NameHasControlChars),
        ] {
            assert_eq!(chat.set_username("s1", raw.as_ref()).await, Err(refusal));
        }
        assert_eq!(chat.bus().tail().await.unwrap(), Position::default());
        assert_eq!(chat.sessions().username("s1").await.unwrap().as_deref(), Some(""));
    }

    #[tokio::test]
    async fn closing_announces_named_users_only_and_removes_the_session() {
        let chat = service();
        chat.open_session("anon").await.unwrap();
        chat.close_session("anon", None).await.unwrap();
        assert_eq!(chat.bus().tail().await.unwrap(), Position::default());

        chat.open_session("s1").await.unwrap();
        let name = chat.set_username("s1", Some(&json!("ann"))).await.unwrap();
        chat.close_session("s1", Some(&name)).await.unwrap();
        assert_eq!(next_events(&chat, Position::default()).await, [RoomEvent::Left { author: "ann".into() }]);
        assert_eq!(chat.sessions().username("s1").await.unwrap(), None);
    }
}

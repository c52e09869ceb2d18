//! The chat's rules as plain functions: who may say what, what each room hears, and what
//! a client joining a room is sent. The Socket.IO side (`realtime`) calls these; tests
//! call them directly.

use crate::backend::memory::{MemoryBuses, MemoryPresence, MemorySessions};
use crate::backend::{
    BackendError, Buses, Claim, ClusterStatus, Delivered, Entered, EventBus, NodeStatus, Presence, RoomInfo,
    RoomPolicy, SessionId, SessionStore, Swept, UserId,
};
use crate::backlog::{self, Backlog, HistoryLimits};
use app::protocol::{
    BacklogKind, Limits, MessageText, Older, Position, PresenceList, Presented, Refusal, RoomEvent, RoomName, Username,
};
use backon::{ConstantBuilder, Retryable};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A leave notice is retried every half second for up to 15 s.
const LEAVE_RETRY: ConstantBuilder = ConstantBuilder::new().with_delay(Duration::from_millis(500)).with_max_times(30);

/// Backlog reads at once on one node, unless configured otherwise: the rest wait their
/// turn, so that clients resuming together cannot make the node read (and hold) more.
pub const DEFAULT_BACKLOG_READS: usize = 8;

/// Session openings and closings in flight at once on one node. When thousands of
/// connections come or go together (a node drains, clients reconnect after an outage),
/// the rest wait here in turn instead of queueing in Redis past its response timeout and
/// failing (measured: 100,000 connections of six nodes closing at once left 1,391
/// sessions not closed cleanly, none with this bound).
const SESSION_OPS_AT_ONCE: usize = 64;

/// The chat service of one node, over a session store, an event bus and presence.
#[derive(Clone)]
pub struct ChatService {
    sessions: Arc<dyn SessionStore>,
    buses: Arc<dyn Buses>,
    presence: Arc<dyn Presence>,
    max_message_chars: usize,
    history: HistoryLimits,
    grace: Duration,
    session_ops: Arc<Semaphore>,
    backlog_reads: Arc<Semaphore>,
    rooms: RoomPolicy,
}

/// The backends a [`ChatService`] runs on.
pub struct Backends {
    /// Session records (the legacy contract's `session:{sid}`).
    pub sessions: Arc<dyn SessionStore>,
    /// Each room's ordered bus.
    pub buses: Arc<dyn Buses>,
    /// Who is online.
    pub presence: Arc<dyn Presence>,
    /// How many rooms the presence holds, and for how long (it was made with it).
    pub rooms: RoomPolicy,
}

impl ChatService {
    /// A service over the given backends.
    pub fn new(backends: Backends, max_message_chars: usize) -> Self {
        let Backends { sessions, buses, presence, rooms } = backends;
        Self {
            sessions,
            buses,
            presence,
            max_message_chars,
            history: HistoryLimits::default(),
            grace: Duration::from_secs(10),
            session_ops: Arc::new(Semaphore::new(SESSION_OPS_AT_ONCE)),
            backlog_reads: Arc::new(Semaphore::new(DEFAULT_BACKLOG_READS)),
            rooms,
        }
    }

    /// The same service showing `history` to joining clients.
    pub fn with_history(self, history: HistoryLimits) -> Self {
        Self { history, ..self }
    }

    /// The same service reading at most `reads` backlogs at once.
    pub fn with_backlog_reads(self, reads: usize) -> Self {
        Self { backlog_reads: Arc::new(Semaphore::new(reads.max(1))), ..self }
    }

    /// The same service keeping users whose connections all closed for `grace` before
    /// announcing their leave (they may come back on another connection meanwhile).
    pub fn with_grace(self, grace: Duration) -> Self {
        Self { grace, ..self }
    }

    /// What a chatroom client gets on connecting (see [`backlog::read`]): every event
    /// after the position it presents (`Resume`), or the recent history when it presents
    /// none (`History`) or one the room cannot resume from (`Reset`). One of at most
    /// `--max-backlog-reads` at once on this node.
    pub async fn backlog(&self, room: &RoomName, after: Option<&Presented<Position>>) -> Result<Backlog, BackendError> {
        // The semaphore is never closed.
        let _turn = self.backlog_reads.acquire().await;
        backlog::read(self.bus(room).as_ref(), after, self.history).await
    }

    /// A single-node service with in-memory state.
    /// `kept` is how many events each room's bus keeps for clients that resume.
    pub fn in_memory(max_message_chars: usize, kept: usize) -> Self {
        Self::in_memory_with(max_message_chars, kept, RoomPolicy::default())
    }

    /// A single-node service with in-memory state, holding rooms by `rooms`.
    pub fn in_memory_with(max_message_chars: usize, kept: usize, rooms: RoomPolicy) -> Self {
        let buses = Arc::new(MemoryBuses::new(kept));
        let presence = Arc::new(MemoryPresence::new(buses.clone()).with_policy(rooms));
        let sessions = Arc::new(MemorySessions::default());
        Self::new(Backends { sessions, buses, presence, rooms }, max_message_chars)
    }

    /// The bus of `room`.
    pub fn bus(&self, room: &RoomName) -> Arc<dyn EventBus> {
        self.buses.room(room)
    }

    /// The session records.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Records a new connection of `user`; returns the name the user already has (another
    /// of its connections is online, or it came back within its grace period).
    pub async fn open_session(&self, sid: &SessionId, user: &UserId) -> Result<Option<Username>, BackendError> {
        let _turn = self.session_ops.acquire().await;
        self.sessions.create(sid).await?;
        let Some(name) = self.presence.connect(user, sid).await? else { return Ok(None) };
        self.sessions.set_username(sid, &name).await?;
        Ok(Some(name))
    }

    /// The connection `sid` of `user` is in `room` now (a named user new to the room is
    /// announced there).
    pub async fn enter(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<(), Refusal> {
        match self.presence.enter(room, user, sid).await {
            Ok(Entered::In) => Ok(()),
            Ok(Entered::RoomLimit) => {
                tracing::warn!(%room, max = self.rooms.max_rooms, "a new room was refused: the service holds as many as it may");
                Err(Refusal::RoomLimit { max: self.rooms.max_rooms })
            }
            Err(err) => {
                tracing::error!(%sid, %room, %err, "could not enter a room");
                Err(Refusal::RoomUnavailable)
            }
        }
    }

    /// The rooms in use, most people online first, then by name; at most `max`.
    pub async fn rooms(&self, max: usize) -> Result<Vec<RoomInfo>, BackendError> {
        let mut rooms = self.presence.rooms().await?;
        rooms.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.room.cmp(&b.room)));
        rooms.truncate(max);
        Ok(rooms)
    }

    /// `rooms` have members on this node: listed, counted, kept (see [`Presence::report`]).
    pub async fn report_rooms(&self, rooms: &[RoomName]) -> Result<(), BackendError> {
        self.presence.report(rooms).await
    }

    /// The connection `sid` of `user` left `room` (its user leaves it with its last one).
    pub async fn exit(&self, room: &RoomName, user: &UserId, sid: &SessionId) -> Result<(), Refusal> {
        self.presence.exit(room, user, sid).await.map_err(|err| {
            tracing::error!(%sid, %room, %err, "could not leave a room");
            Refusal::RoomUnavailable
        })
    }

    /// What a chatroom client joining `room` is sent, in order: its backlog (after the
    /// position it presents), who is in the room as of the backlog's end, and a welcome
    /// if it is new there.
    pub async fn join(&self, room: &RoomName, after: Option<&Presented<Position>>) -> Join {
        let welcome = after.is_none();
        self.catch_up(room, self.backlog(room, after).await, welcome).await
    }

    /// Up to `limit` lines of `room` before `before` (see [`backlog::older`]), and whether
    /// they reach its beginning; one of the backlog reads at once on this node.
    pub async fn older(&self, room: &RoomName, before: Position, limit: usize) -> Result<Older, BackendError> {
        let _turn = self.backlog_reads.acquire().await;
        let (events, complete) = backlog::older(self.bus(room).as_ref(), before, limit).await?;
        Ok(Older { room: None, lines: events.iter().map(Delivered::line).collect(), complete })
    }

    /// The limits of what a client may send here, as `hello` tells them.
    pub fn limits(&self) -> Limits {
        Limits { name_chars: app::protocol::MAX_NAME_CHARS, message_chars: self.max_message_chars }
    }

    /// What a chatroom client that is already in `room` is sent when it cannot be
    /// continued there (the room's bus started a new epoch, or it fell too far behind):
    /// the recent history as a `reset`, and who is in the room.
    pub async fn resync(&self, room: &RoomName) -> Join {
        let invalid = Presented::Invalid(String::new());
        self.catch_up(room, self.backlog(room, Some(&invalid)).await, false).await
    }

    async fn catch_up(&self, room: &RoomName, backlog: Result<Backlog, BackendError>, welcome: bool) -> Join {
        let (backlog, backlog_error) = match backlog {
            Ok(backlog) => (backlog, None),
            // The client is told it may have missed events, rather than left guessing.
            Err(err) => (Backlog { kind: BacklogKind::Reset, events: Vec::new(), resumed_after: None }, Some(err)),
        };
        // Read after the backlog, so the list reflects every event the backlog holds.
        let online = self.online(room).await;
        Join {
            kind: backlog.kind,
            backlog: backlog.events,
            resumed_after: backlog.resumed_after,
            backlog_error,
            online,
            welcome,
        }
    }

    /// Checks a requested username (`raw` is the event's first argument) and gives it to
    /// `user` unless another online user has it; the join or rename is announced.
    pub async fn set_username(&self, sid: &SessionId, user: &UserId, raw: Option<&Value>) -> Result<Username, Refusal> {
        let name = Username::parse(text_of(raw).ok_or(Refusal::NameNotText)?)?;
        let unavailable = |err: BackendError| {
            tracing::error!(%sid, %err, "could not store a username");
            Refusal::NameUnavailable
        };
        let claim = self.presence.claim(user, sid, &name).await.map_err(unavailable)?;
        if claim == Claim::Taken {
            return Err(Refusal::NameTaken { name: name.to_string() });
        }
        self.sessions.set_username(sid, &name).await.map_err(unavailable)?;
        Ok(name)
    }

    /// The online user who has `name`, if any.
    pub async fn user_named(&self, name: &Username) -> Result<Option<UserId>, BackendError> {
        self.presence.user_named(name).await
    }

    /// Publishes this node's status for every node's status page.
    pub async fn publish_status(&self, status: &NodeStatus) -> Result<(), BackendError> {
        self.presence.publish_status(status).await
    }

    /// The nodes alive and the users online, across the cluster.
    pub async fn cluster(&self) -> Result<ClusterStatus, BackendError> {
        self.presence.cluster().await
    }

    /// The names in `room`, and the position of its newest event the list reflects.
    pub async fn online(&self, room: &RoomName) -> Result<PresenceList, BackendError> {
        self.presence.snapshot(room).await
    }

    /// Sweeps presence (see [`Presence::sweep`]); the session records of connections
    /// that lost their name lose it too. Run every second by the node.
    pub async fn sweep(&self) -> Result<Swept, BackendError> {
        let swept = self.presence.sweep().await?;
        if swept.left > 0 {
            tracing::info!(left = swept.left, "announced the leave of users gone for good");
        }
        for sid in &swept.lost {
            tracing::warn!(%sid, "a connection's name was taken while presence had lost it; it has none now");
            self.sessions.forget_username(sid).await?;
        }
        Ok(swept)
    }

    /// Publishes a chat line from `author` (`raw` is the event's text) to `room`, in the
    /// room's order.
    pub async fn post(
        &self,
        room: &RoomName,
        author: Option<&Username>,
        raw: Option<&Value>,
    ) -> Result<Position, Refusal> {
        self.post_by(room, author, None, raw).await
    }

    /// Publishes a chat line from `author`, the name of `user`: the line is kept with its
    /// user, so that the user's lines can be found again across renames (to forget them).
    pub async fn post_by(
        &self,
        room: &RoomName,
        author: Option<&Username>,
        user: Option<&UserId>,
        raw: Option<&Value>,
    ) -> Result<Position, Refusal> {
        let author = author.ok_or(Refusal::NoUsername)?;
        let text = MessageText::parse(text_of(raw).ok_or(Refusal::MessageNotText)?, self.max_message_chars)?;
        let event = RoomEvent::Chat { author: author.to_string(), text: text.into_string() };
        self.bus(room).publish_by(event, user).await.map_err(|err| match err {
            BackendError::NotYetReplicated { position } => {
                tracing::warn!(%author, %room, %position, "a chat line is published but no replica has it yet; its sender is told");
                Refusal::NotYetSafe
            }
            err => {
                tracing::error!(%author, %room, %err, "a chat line was not published; its sender is told");
                Refusal::Unavailable
            }
        })
    }

    /// Ends a session that was in `rooms`. When it was its user's last connection in a
    /// room, the user leaves it: at once for a connection-only user (legacy clients),
    /// after the grace period for a user with a client key. Retried for a while, so a
    /// short outage does not lose the leave.
    pub async fn close_session(&self, sid: &SessionId, user: &UserId, rooms: &[RoomName]) -> Result<(), BackendError> {
        let grace = if user.can_return() { self.grace } else { Duration::ZERO };
        let disconnect = || async {
            let _turn = self.session_ops.acquire().await;
            self.presence.disconnect(user, sid, rooms, grace).await
        };
        let closed = disconnect
            .retry(LEAVE_RETRY)
            .notify(|err, wait| tracing::warn!(%sid, %err, ?wait, "connection not closed in presence yet; retrying"))
            .await;
        // Remove the record even when that failed, so it cannot linger.
        let removed = {
            let _turn = self.session_ops.acquire().await;
            self.sessions.remove(sid).await
        };
        closed.and(removed)
    }
}

/// What a chatroom client joining a room is sent; see [`ChatService::join`].
#[derive(Debug)]
pub struct Join {
    /// What its backlog is.
    pub kind: BacklogKind,
    /// The backlog's events, oldest first.
    pub backlog: Vec<Delivered>,
    /// The position it resumed after, when it resumed.
    pub resumed_after: Option<Position>,
    /// Why the backlog could not be read (it is then an empty `Reset`).
    pub backlog_error: Option<BackendError>,
    /// Who is online as of the backlog's end.
    pub online: Result<PresenceList, BackendError>,
    /// Whether it is greeted: a fresh join, not a resume.
    pub welcome: bool,
}

/// The name a connecting chatroom client takes: the one its user already has (`current`:
/// another tab, or back within its grace period) wins over the one it presents.
pub fn name_on_connect(presented: Option<String>, current: Option<Username>) -> JoinName {
    match (current, presented) {
        (Some(current), _) => JoinName::Keep(current),
        (None, Some(presented)) => JoinName::Claim(presented),
        (None, None) => JoinName::None,
    }
}

/// The name a connecting chatroom client takes.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinName {
    /// The one its user already has: confirm it.
    Keep(Username),
    /// The one the client presented: claim it, like a `set_username`.
    Claim(String),
    /// None yet.
    None,
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
        chat.bus(&lobby()).read_after(after, 100).await.unwrap().into_iter().map(|d| d.event).collect()
    }

    fn sid(id: &str) -> SessionId {
        SessionId::new(id)
    }

    fn conn(id: &str) -> UserId {
        UserId::of_connection(&sid(id))
    }

    fn lobby() -> RoomName {
        RoomName::lobby()
    }

    /// A connection that opened and entered the lobby, as a client's does.
    async fn in_lobby(chat: &ChatService, id: &str, user: &UserId) {
        chat.open_session(&sid(id), user).await.unwrap();
        chat.enter(&lobby(), user, &sid(id)).await.unwrap();
    }

    #[tokio::test]
    async fn a_named_user_posts_to_the_room() {
        let chat = service();
        in_lobby(&chat, "s1", &conn("s1")).await;
        let name = chat.set_username(&sid("s1"), &conn("s1"), Some(&json!(" ann "))).await.unwrap();
        assert_eq!(name.as_str(), "ann");
        assert_eq!(chat.sessions().username(&sid("s1")).await.unwrap().as_deref(), Some("ann"));
        chat.post(&lobby(), Some(&name), Some(&json!("hi <b>"))).await.unwrap();
        assert_eq!(
            next_events(&chat, Position::default()).await,
            [
                RoomEvent::Joined { author: "ann".into() },
                RoomEvent::Chat { author: "ann".into(), text: "hi <b>".into() }
            ]
        );
    }

    #[tokio::test]
    async fn a_joining_client_gets_history_and_a_returning_one_what_it_missed() {
        let chat =
            ChatService::in_memory(100, 1_000).with_history(HistoryLimits { len: 2, max_age: Duration::from_secs(60) });
        let name = Username::parse("ann").unwrap();
        let mut positions = Vec::new();
        for n in 0..4 {
            positions.push(chat.post(&lobby(), Some(&name), Some(&json!(n.to_string()))).await.unwrap());
        }
        let Backlog { kind, events: history, .. } = chat.backlog(&lobby(), None).await.unwrap();
        assert_eq!(kind, BacklogKind::History);
        assert_eq!(history.iter().map(|d| d.position).collect::<Vec<_>>(), positions[2..]);

        let after = Presented::Valid(positions[0]);
        let Backlog { kind, events: missed, resumed_after } = chat.backlog(&lobby(), Some(&after)).await.unwrap();
        assert_eq!(kind, BacklogKind::Resume);
        assert_eq!(missed.iter().map(|d| d.position).collect::<Vec<_>>(), positions[1..]);
        assert_eq!(resumed_after, Some(positions[0]));

        let newest = Presented::Valid(positions[3]);
        assert_eq!(chat.backlog(&lobby(), Some(&newest)).await.unwrap().events, []);
        let Backlog { kind, events: lines, .. } =
            chat.backlog(&lobby(), Some(&Presented::Invalid("not-a-position".into()))).await.unwrap();
        assert_eq!((kind, lines.len()), (BacklogKind::Reset, 2));
    }

    #[tokio::test]
    async fn a_position_older_than_the_kept_events_gets_an_explicit_reset() {
        let chat = ChatService::in_memory(100, 3);
        let name = Username::parse("ann").unwrap();
        let first = chat.post(&lobby(), Some(&name), Some(&json!("0"))).await.unwrap();
        for n in 1..6 {
            chat.post(&lobby(), Some(&name), Some(&json!(n.to_string()))).await.unwrap();
        }
        let Backlog { kind, events: lines, resumed_after } =
            chat.backlog(&lobby(), Some(&Presented::Valid(first))).await.unwrap();
        assert_eq!((kind, lines.len(), resumed_after), (BacklogKind::Reset, 3, None));
    }

    #[tokio::test]
    async fn posting_without_a_name_is_refused() {
        let chat = service();
        assert_eq!(chat.post(&lobby(), None, Some(&json!("hi"))).await, Err(Refusal::NoUsername));
    }

    #[tokio::test]
    async fn bad_payloads_are_refused_not_published() {
        let chat = service();
        chat.open_session(&sid("s1"), &conn("s1")).await.unwrap();
        let name = Username::parse("ann").unwrap();
        for (raw, refusal) in [
            (None, Refusal::MessageNotText),
            (Some(json!(42)), Refusal::MessageNotText),
            (Some(json!({"text": "x"})), Refusal::MessageNotText),
            (Some(json!("  ")), Refusal::EmptyMessage),
            (Some(json!("x".repeat(11))), Refusal::MessageTooLong { max: 10 }),
        ] {
            assert_eq!(chat.post(&lobby(), Some(&name), raw.as_ref()).await, Err(refusal));
        }
        for (raw, refusal) in [
            (None, Refusal::NameNotText),
            (Some(json!(["ann"])), Refusal::NameNotText),
            (Some(json!("")), Refusal::EmptyName),
            (Some(json!("a\u{7}")), Refusal::NameHasControlChars),
        ] {
            assert_eq!(chat.set_username(&sid("s1"), &conn("s1"), raw.as_ref()).await, Err(refusal));
        }
        assert_eq!(chat.bus(&lobby()).tail().await.unwrap(), Position::default());
        assert_eq!(chat.sessions().username(&sid("s1")).await.unwrap().as_deref(), Some(""));
    }

    #[tokio::test]
    async fn closing_announces_named_users_only_and_removes_the_session() {
        let chat = service();
        let rooms = [lobby()];
        in_lobby(&chat, "anon", &conn("anon")).await;
        chat.close_session(&sid("anon"), &conn("anon"), &rooms).await.unwrap();
        assert_eq!(chat.bus(&lobby()).tail().await.unwrap(), Position::default());

        in_lobby(&chat, "s1", &conn("s1")).await;
        chat.set_username(&sid("s1"), &conn("s1"), Some(&json!("ann"))).await.unwrap();
        let after_join = chat.bus(&lobby()).tail().await.unwrap();
        chat.close_session(&sid("s1"), &conn("s1"), &rooms).await.unwrap();
        assert_eq!(next_events(&chat, after_join).await, [RoomEvent::Left { author: "ann".into() }]);
        assert_eq!(chat.sessions().username(&sid("s1")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn rooms_keep_their_own_order_history_and_presence() {
        let chat = service();
        let ops = RoomName::parse("ops").unwrap();
        in_lobby(&chat, "s1", &conn("s1")).await;
        let ann = chat.set_username(&sid("s1"), &conn("s1"), Some(&json!("ann"))).await.unwrap();
        chat.enter(&ops, &conn("s1"), &sid("s1")).await.unwrap();
        chat.post(&ops, Some(&ann), Some(&json!("in ops"))).await.unwrap();
        chat.post(&lobby(), Some(&ann), Some(&json!("lobby"))).await.unwrap();
        let texts = |join: &Join| -> Vec<String> { join.backlog.iter().map(|d| d.event.text()).collect() };
        let in_ops = chat.join(&ops, None).await;
        assert_eq!(texts(&in_ops), ["ann joined the chatroom.", "ann: in ops"]);
        assert_eq!(in_ops.online.unwrap().users, ["ann"]);
        let in_lobby_now = chat.join(&lobby(), None).await;
        assert_eq!(texts(&in_lobby_now), ["ann joined the chatroom.", "ann: lobby"]);
        // A room nobody is in has no history and nobody online.
        let empty = chat.join(&RoomName::parse("quiet").unwrap(), None).await;
        assert!(empty.backlog.is_empty() && empty.online.unwrap().users.is_empty());
        // Leaving ops is heard there; the lobby still lists ann.
        chat.exit(&ops, &conn("s1"), &sid("s1")).await.unwrap();
        assert_eq!(chat.online(&ops).await.unwrap().users, Vec::<String>::new());
        assert_eq!(chat.online(&lobby()).await.unwrap().users, ["ann"]);
    }

    #[tokio::test]
    async fn a_name_in_use_is_refused_whatever_its_case_width_or_invisible_characters() {
        let chat = service();
        chat.set_username(&sid("s1"), &conn("s1"), Some(&json!("Zoë"))).await.unwrap();
        // "Zoë" with a combining diaeresis, in capitals, in full width, with a zero-width space.
        for taken in ["zoe\u{308}", " ZOË ", "Ｚｏë", "Zo\u{200B}ë"] {
            assert_eq!(
                chat.set_username(&sid("s2"), &conn("s2"), Some(&json!(taken))).await,
                Err(Refusal::NameTaken { name: taken.trim().to_owned() }),
                "{taken:?}"
            );
        }
        assert_eq!(chat.sessions().username(&sid("s2")).await.unwrap(), None, "a refused name is not stored");
        // Its owner may change its case; another user may have a different name.
        assert!(chat.set_username(&sid("s1"), &conn("s1"), Some(&json!("ZOË"))).await.is_ok());
        assert!(chat.set_username(&sid("s2"), &conn("s2"), Some(&json!("Zoe"))).await.is_ok());
    }

    #[tokio::test]
    async fn a_user_with_a_key_keeps_its_name_on_a_new_connection() {
        let chat = service().with_grace(Duration::from_secs(60));
        let ann = UserId::from_key(&"0123456789abcdef".parse().unwrap());
        assert_eq!(chat.open_session(&sid("s1"), &ann).await.unwrap(), None);
        chat.enter(&lobby(), &ann, &sid("s1")).await.unwrap();
        chat.set_username(&sid("s1"), &ann, Some(&json!("ann"))).await.unwrap();
        chat.close_session(&sid("s1"), &ann, &[lobby()]).await.unwrap();
        let back = chat.open_session(&sid("s2"), &ann).await.unwrap();
        assert_eq!(back.as_ref().map(Username::as_str), Some("ann"));
        chat.enter(&lobby(), &ann, &sid("s2")).await.unwrap();
        assert_eq!(chat.sessions().username(&sid("s2")).await.unwrap().as_deref(), Some("ann"));
        assert_eq!(chat.online(&lobby()).await.unwrap().users, ["ann"]);
        assert_eq!(next_events(&chat, Position::default()).await, [RoomEvent::Joined { author: "ann".into() }]);
    }

    #[tokio::test]
    async fn a_fresh_join_gets_history_presence_and_a_welcome() {
        let chat = service();
        in_lobby(&chat, "s1", &conn("s1")).await;
        chat.set_username(&sid("s1"), &conn("s1"), Some(&json!("ann"))).await.unwrap();
        let join = chat.join(&lobby(), None).await;
        assert_eq!((join.kind, join.backlog.len(), join.welcome), (BacklogKind::History, 1, true));
        let online = join.online.unwrap();
        assert_eq!(online.users, ["ann"]);
        assert_eq!(Some(online.at), join.backlog.last().map(|d| d.position), "the list reflects the backlog");
        assert!(join.backlog_error.is_none());
    }

    #[tokio::test]
    async fn a_resume_is_not_greeted_and_the_name_the_user_has_wins() {
        let chat = service();
        let ann = Username::parse("ann").unwrap();
        let first = chat.post(&lobby(), Some(&ann), Some(&json!("1"))).await.unwrap();
        chat.post(&lobby(), Some(&ann), Some(&json!("2"))).await.unwrap();
        let after = Presented::Valid(first);
        let join = chat.join(&lobby(), Some(&after)).await;
        assert_eq!((join.kind, join.backlog.len(), join.welcome), (BacklogKind::Resume, 1, false));
        assert_eq!(join.resumed_after, Some(first));
        assert_eq!(name_on_connect(Some("bob".into()), Some(ann.clone())), JoinName::Keep(ann));
        // Without a name of its own, the one it presents is claimed.
        assert_eq!(name_on_connect(Some("bob".into()), None), JoinName::Claim("bob".into()));
        // A position that is not one: told it missed events, not greeted as new.
        let join = chat.join(&lobby(), Some(&Presented::Invalid("x".into()))).await;
        assert_eq!((join.kind, join.welcome), (BacklogKind::Reset, false));
    }
}

//! Socket.IO wiring: the event contract on top of [`ChatService`].
//!
//! socketioxide runs every event handler in a task of its own, so two messages from one
//! client could be handled out of order. Here each handler only queues the event, in
//! the order it arrived, and one task per connection handles the queue in that order.
//!
//! Room events reach clients only through the bus: [`Realtime::deliver_room_events`]
//! reads it and writes each event to every member of this node, so every client sees
//! the bus's one order. Legacy clients get the legacy strings; chatroom clients get
//! structured lines, and first their backlog (history, or what they missed). While a
//! chatroom client's backlog is read, live events for it are held back and then sent
//! after the backlog, skipping any the backlog already had: no gap and no duplicate at
//! the seam, because positions are totally ordered.

use crate::backend::{BackendError, Delivered, Position, UserId};
use crate::chat::ChatService;
use crate::limits::{ConnectionLimits, RateLimits, Verdict};
use crate::metrics::{ClientLabels, Metrics};
use app::protocol::{
    BACKLOG, Backlog, BacklogKind, ClientAuth, HELLO, Hello, LINE, MESSAGE, NOTICE, Notice, PRESENCE, Presence,
    RoomEvent, RoomLine, SET_USERNAME, WELCOME, username_set,
};
use app::validation::{Refusal, Username};
use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::socket::{DisconnectReason, Sid};
use socketioxide::{SendError, SocketError, SocketIo, TransportType};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

/// Events from one client waiting to be handled.
const INBOX_CAPACITY: usize = 1_024;
/// How long a flooding client still gets its pending answers before it is disconnected.
const FLOOD_DISCONNECT_DELAY: Duration = Duration::from_millis(500);
/// Room events delivered per read of the bus.
const DELIVERY_BATCH: usize = 256;

/// An event from a client, queued for its connection's task.
#[derive(Debug)]
enum Inbound {
    /// A chatroom client joined: send its backlog, then take the name it presented.
    Join {
        after: Option<String>,
        name: Option<String>,
    },
    SetUsername(Option<Value>),
    Message(Option<Value>),
}

/// One connection's events waiting for its task. Nothing is allocated until the client
/// sends one: a tokio channel allocates a block of 32 slots at once, about 2 KiB for
/// every idle connection.
#[derive(Default)]
struct EventQueue {
    pending: Mutex<Pending>,
    ready: Notify,
}

/// The events themselves, and whether the queue still takes any: under one lock, so no
/// event slips in after the task's last look.
#[derive(Default)]
struct Pending {
    events: VecDeque<Inbound>,
    closed: bool,
}

/// Why an event was not queued.
enum NotQueued {
    Full,
    Closed,
}

impl EventQueue {
    fn push(&self, event: Inbound) -> Result<(), NotQueued> {
        {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Err(NotQueued::Closed);
            }
            if pending.events.len() >= INBOX_CAPACITY {
                return Err(NotQueued::Full);
            }
            pending.events.push_back(event);
        }
        // Stores a permit when the task is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    fn try_next(&self) -> Option<Inbound> {
        lock(&self.pending).events.pop_front()
    }

    /// The next event, waiting for one.
    async fn next(&self) -> Inbound {
        loop {
            if let Some(event) = self.try_next() {
                return event;
            }
            self.ready.notified().await;
        }
    }

    /// Refuses further events and hands over those still waiting: the connection's task
    /// is done.
    fn close(&self) -> VecDeque<Inbound> {
        let mut pending = lock(&self.pending);
        pending.closed = true;
        std::mem::take(&mut pending.events)
    }
}

/// Where a chatroom client stands in the room's order.
#[derive(Debug, Default)]
struct Cursor {
    /// The newest event it was sent.
    last_sent: Position,
    /// Live events held back while its backlog is read; `None` once it is live.
    held: Option<Vec<Delivered>>,
}

/// How a connection receives room events.
#[derive(Debug)]
enum Feed {
    /// `message` strings.
    Legacy,
    /// `backlog` then `line` events.
    Structured(Mutex<Cursor>),
}

/// A connection of this node that receives room events.
struct Member {
    socket: SocketRef,
    feed: Feed,
    /// Who this connection belongs to.
    user: UserId,
    /// The name it posts under. Delivery changes it too, when another connection of the
    /// same user takes a name.
    name: Mutex<Option<Username>>,
    /// Tells its connection task that the connection is over.
    gone: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// How it is counted among the connected clients.
    labels: ClientLabels,
}

/// Each change under these locks is a single write: a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Member {
    fn name(&self) -> Option<Username> {
        lock(&self.name).clone()
    }

    /// Sets the name; returns the one it had.
    fn set_name(&self, name: Option<Username>) -> Option<Username> {
        std::mem::replace(&mut *lock(&self.name), name)
    }

    /// Writes one room event to this connection.
    fn deliver(&self, delivered: &Delivered, legacy: Option<&str>, line: &RoomLine) {
        match &self.feed {
            Feed::Legacy => {
                if let Some(text) = legacy {
                    self.send_room_event(MESSAGE, text);
                }
            }
            Feed::Structured(cursor) => {
                {
                    let mut cursor = lock(cursor);
                    if let Some(held) = cursor.held.as_mut() {
                        held.push(delivered.clone());
                    } else if delivered.position > cursor.last_sent {
                        cursor.last_sent = delivered.position;
                        self.send_room_event(LINE, line);
                    }
                }
                if delivered.user.as_ref() == Some(&self.user) {
                    self.follow_name_change(&delivered.event);
                }
            }
        }
    }

    /// Another connection of this user took a name: this one takes it too, and its client is told.
    fn follow_name_change(&self, event: &RoomEvent) {
        let (RoomEvent::Joined { author } | RoomEvent::Renamed { author, .. }) = event else { return };
        let Ok(name) = Username::parse(author) else { return };
        if self.name().as_ref() != Some(&name) {
            self.set_name(Some(name.clone()));
            self.reply(name_set(&name));
        }
    }

    /// Sends the backlog and who is online, then the live events held meanwhile that the
    /// backlog did not contain.
    fn catch_up(
        &self,
        kind: BacklogKind,
        backlog: Vec<Delivered>,
        resumed_after: Option<Position>,
        online: Option<(Vec<String>, Position)>,
    ) {
        let Feed::Structured(cursor) = &self.feed else { return };
        self.metrics.backlog(match kind {
            BacklogKind::History => "history",
            BacklogKind::Resume => "resume",
            BacklogKind::Reset => "reset",
        });
        let mut cursor = lock(cursor);
        cursor.last_sent = backlog.last().map(|d| d.position).or(resumed_after).unwrap_or_default();
        let lines = backlog.iter().map(room_line).collect();
        self.send_room_event(BACKLOG, &Backlog { kind, lines });
        if let Some((users, at)) = online {
            self.send_room_event(PRESENCE, &Presence { at: at.to_string(), users });
        }
        for delivered in cursor.held.take().unwrap_or_default() {
            if delivered.position > cursor.last_sent {
                cursor.last_sent = delivered.position;
                self.send_room_event(LINE, &room_line(&delivered));
            }
        }
    }

    fn send_room_event<T: Serialize + ?Sized>(&self, event: &'static str, data: &T) {
        match self.socket.emit(event, data) {
            Ok(()) => self.metrics.event_out(event),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                // Skipping a line for this client would leave a silent hole in its chat:
                // disconnect it instead, so it knows and can come back.
                tracing::warn!(sid = %self.socket.id, "client too slow, its queue is full: disconnecting it");
                let _ = self.socket.clone().disconnect();
            }
            Err(SendError::Socket(SocketError::Closed)) => {}
            Err(err) => tracing::warn!(sid = %self.socket.id, %err, "a room event was not written to a client"),
        }
    }

    /// Answers this client alone: its text for a legacy client, the notice for a chatroom client.
    fn reply(&self, notice: Notice) {
        let (event, sent) = match self.feed {
            Feed::Legacy => (MESSAGE, self.socket.emit(MESSAGE, notice.text())),
            Feed::Structured(_) => (NOTICE, self.socket.emit(NOTICE, &notice)),
        };
        match sent {
            Ok(()) => self.metrics.event_out(event),
            Err(err) => tracing::debug!(sid = %self.socket.id, %err, "reply not sent: the client is gone"),
        }
    }

    fn refuse(&self, refusal: &Refusal) {
        refuse_now(&self.socket, matches!(self.feed, Feed::Structured(_)), &self.metrics, refusal);
    }
}

/// Answers a refused input to its sender alone, and counts it.
fn refuse_now(socket: &SocketRef, structured: bool, metrics: &Metrics, refusal: &Refusal) {
    metrics.refused(refusal.code());
    let sent = if structured {
        socket.emit(NOTICE, &Notice::Refused { text: refusal.to_string() })
    } else {
        socket.emit(MESSAGE, &refusal.to_string())
    };
    match sent {
        Ok(()) => metrics.event_out(if structured { NOTICE } else { MESSAGE }),
        Err(err) => tracing::debug!(sid = %socket.id, %err, "refusal not sent: the client is gone"),
    }
}

fn name_set(name: &Username) -> Notice {
    Notice::NameSet { name: name.to_string(), text: username_set(name.as_str()) }
}

fn room_line(delivered: &Delivered) -> RoomLine {
    RoomLine { pos: delivered.position.to_string(), ts: delivered.position.ms, event: delivered.event.clone() }
}

/// The connections of this node that receive room events.
#[derive(Clone, Default)]
struct Members(Arc<RwLock<HashMap<Sid, Arc<Member>>>>);

impl Members {
    fn insert(&self, member: Arc<Member>) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).insert(member.socket.id, member);
    }

    fn remove(&self, sid: Sid) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).remove(&sid);
    }

    fn snapshot(&self) -> Vec<Arc<Member>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }
}

/// What every connection's handlers share.
#[derive(Clone)]
pub struct Realtime {
    chat: Arc<ChatService>,
    node: Arc<str>,
    members: Members,
    /// The connection tasks, so that shutdown can wait for their sessions to close.
    tasks: TaskTracker,
    /// The position of the newest room event delivered to this node's members.
    delivered: watch::Sender<Position>,
    metrics: Arc<Metrics>,
    limits: RateLimits,
    /// How many connections this node holds.
    connected: Arc<AtomicUsize>,
}

impl Realtime {
    /// Handlers over `chat`, on the node named `node`.
    pub fn new(chat: Arc<ChatService>, node: &str, metrics: Arc<Metrics>, limits: RateLimits) -> Self {
        Self {
            chat,
            node: node.into(),
            members: Members::default(),
            tasks: TaskTracker::new(),
            delivered: watch::Sender::new(Position::default()),
            metrics,
            limits,
            connected: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of connections this node holds, kept up to date.
    pub fn connection_count(&self) -> Arc<AtomicUsize> {
        self.connected.clone()
    }

    /// Installs the default namespace's handlers.
    pub fn register(&self, io: &SocketIo) {
        let realtime = self.clone();
        io.ns("/", move |socket: SocketRef, TryData(auth): TryData<Value>| {
            // Runs synchronously as the socket joins, before any event of it is read.
            realtime.on_connect(socket, auth.ok());
            async {}
        });
    }

    /// Waits until every room event published so far has been delivered to this node's
    /// members, or `within` passed; returns whether it was.
    pub async fn wait_delivered(&self, within: Duration) -> bool {
        let Ok(tail) = self.chat.bus().tail().await else { return false };
        let mut delivered = self.delivered.subscribe();
        tokio::time::timeout(within, delivered.wait_for(|at| *at >= tail)).await.is_ok_and(|r| r.is_ok())
    }

    /// Ends every connection's session, for a node whose client transports were closed
    /// all at once (socketioxide then calls no disconnect handler).
    pub fn end_all_sessions(&self) {
        for member in self.members.snapshot() {
            self.members.remove(member.socket.id);
            member.gone.notify_one();
        }
    }

    /// Waits until every connection task has closed its session.
    pub async fn wait_for_sessions(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn on_connect(&self, socket: SocketRef, auth: Option<Value>) {
        let queue = Arc::new(EventQueue::default());
        let gone = Arc::new(Notify::new());
        // Only clients that announce a protocol version get more than the legacy strings.
        let auth = auth.and_then(|auth| serde_json::from_value::<ClientAuth>(auth).ok());
        let feed = match &auth {
            None => Feed::Legacy,
            // Held back from the start: its backlog is read next, by its task.
            Some(_) => Feed::Structured(Mutex::new(Cursor { held: Some(Vec::new()), ..Cursor::default() })),
        };
        let user = match auth.as_ref().and_then(|auth| auth.key.as_deref()) {
            Some(key) if UserId::valid_key(key) => UserId::from_key(key),
            Some(_) => {
                tracing::debug!(sid = %socket.id, "client key ignored: not 16-64 characters of A-Z a-z 0-9 _ -");
                UserId::of_connection(&socket.id.to_string())
            }
            None => UserId::of_connection(&socket.id.to_string()),
        };
        let labels = ClientLabels {
            transport: match socket.transport_type() {
                TransportType::Websocket => "websocket",
                TransportType::Polling => "polling",
            },
            protocol: if auth.is_some() { "chatroom" } else { "legacy" },
        };
        self.metrics.clients.get_or_create(&labels).inc();
        self.connected.fetch_add(1, Ordering::Relaxed);
        let member = Arc::new(Member {
            socket: socket.clone(),
            feed,
            user,
            name: Mutex::new(None),
            gone: gone.clone(),
            metrics: self.metrics.clone(),
            labels,
        });
        self.members.insert(member.clone());
        match auth {
            None => member.reply(welcome()),
            Some(auth) => {
                let hello = Hello { node: self.node.to_string() };
                if let Err(err) = socket.emit(HELLO, &hello) {
                    tracing::debug!(sid = %socket.id, %err, "hello not sent: the client is gone");
                }
                self.metrics.event_in("join");
                let _ = queue.push(Inbound::Join { after: auth.after, name: auth.name });
            }
        }
        let structured = matches!(member.feed, Feed::Structured(_));
        self.install_handlers(
            &socket,
            Inbox { queue: queue.clone(), structured, limits: Arc::new(self.limits.for_connection()) },
            gone.clone(),
        );
        self.tasks.spawn(serve_connection(member, self.chat.clone(), queue, gone, self.connected.clone()));
    }

    fn install_handlers(&self, socket: &SocketRef, inbox: Inbox, gone: Arc<Notify>) {
        socket.on(SET_USERNAME, {
            let (inbox, metrics) = (inbox.clone(), self.metrics.clone());
            move |socket: SocketRef, TryData(data): TryData<Value>| {
                metrics.event_in(SET_USERNAME);
                inbox.admit(&socket, &metrics, inbox.limits.check_rename(), Inbound::SetUsername(data.ok()));
                async {}
            }
        });
        let metrics = self.metrics.clone();
        socket.on(MESSAGE, move |socket: SocketRef, TryData(data): TryData<Value>| {
            metrics.event_in(MESSAGE);
            inbox.admit(&socket, &metrics, inbox.limits.check_message(), Inbound::Message(data.ok()));
            async {}
        });
        let members = self.members.clone();
        socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
            tracing::debug!(sid = %socket.id, %reason, "client disconnected");
            members.remove(socket.id);
            gone.notify_one();
            async {}
        });
    }

    /// Reads the room's bus from its current end and writes every event, in order, to
    /// every member of this node. Runs for the life of the node.
    pub async fn deliver_room_events(self) {
        let bus = self.chat.bus().clone();
        let mut after = read_tail(&self.chat).await;
        let mut failing = false;
        loop {
            match bus.read_after(after, DELIVERY_BATCH).await {
                Ok(batch) => {
                    if std::mem::take(&mut failing) {
                        self.metrics.bus_reconnects.inc();
                    }
                    let now_ms = now_ms();
                    // Once a batch: whoever joins meanwhile gets these from its backlog.
                    let members = self.members.snapshot();
                    for delivered in batch {
                        let lag = Duration::from_millis(now_ms.saturating_sub(delivered.position.ms));
                        Metrics::observe(&self.metrics.delivery_seconds, lag);
                        let legacy = delivered.event.legacy_text();
                        let line = room_line(&delivered);
                        for member in &members {
                            member.deliver(&delivered, legacy.as_deref(), &line);
                        }
                        after = delivered.position;
                    }
                    self.delivered.send_replace(after);
                }
                Err(BackendError::Trimmed { after: missed_from, oldest }) => {
                    tracing::error!(%missed_from, %oldest, "delivery fell behind the bus; events in between were lost to this node's clients");
                    after = read_tail(&self.chat).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot read the bus; retrying");
                    self.metrics.backend_error("bus_read");
                    failing = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn welcome() -> Notice {
    Notice::Welcome { text: WELCOME.to_owned() }
}

/// Milliseconds since the Unix epoch, the clock of room positions.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where a connection's handlers put its events, after its rate limits.
#[derive(Clone)]
struct Inbox {
    queue: Arc<EventQueue>,
    structured: bool,
    limits: Arc<ConnectionLimits>,
}

impl Inbox {
    /// Queues an event its limits allow; refuses one over them, and disconnects a flood.
    fn admit(&self, socket: &SocketRef, metrics: &Metrics, verdict: Verdict, event: Inbound) {
        match verdict {
            Verdict::Allowed => {}
            Verdict::Refused(refusal) => return refuse_now(socket, self.structured, metrics, &refusal),
            Verdict::Flooding => {
                if self.limits.cut_off() {
                    tracing::warn!(sid = %socket.id, "client keeps sending while refused: disconnecting it");
                    metrics.refused("flood_disconnect");
                    // A moment later, so that the refusals already sent reach it first;
                    // what it sends meanwhile is dropped unanswered.
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(FLOOD_DISCONNECT_DELAY).await;
                        let _ = socket.disconnect();
                    });
                }
                return;
            }
        }
        match self.queue.push(event) {
            Ok(()) => {}
            Err(NotQueued::Full) => {
                tracing::warn!(sid = %socket.id, "client sends faster than it is served; event refused");
                refuse_now(socket, self.structured, metrics, &Refusal::Busy);
            }
            // The connection task has finished: the socket is closing.
            Err(NotQueued::Closed) => {}
        }
    }
}

/// Handles one connection's events in arrival order, then closes its session.
async fn serve_connection(
    member: Arc<Member>,
    chat: Arc<ChatService>,
    queue: Arc<EventQueue>,
    gone: Arc<Notify>,
    connected: Arc<AtomicUsize>,
) {
    let sid = member.socket.id.to_string();
    match chat.open_session(&sid, &member.user).await {
        // The user is online already (another tab, or back within its grace period).
        Ok(Some(name)) => drop(member.set_name(Some(name))),
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(%sid, %err, "could not record the session");
            member.metrics.backend_error("session");
        }
    }
    loop {
        tokio::select! {
            biased;
            event = queue.next() => handle(&member, &chat, event).await,
            () = gone.notified() => break,
        }
    }
    // Events that arrived before the disconnect still count, and come before the leave.
    for event in queue.close() {
        handle(&member, &chat, event).await;
    }
    if let Err(err) = chat.close_session(&sid, &member.user).await {
        tracing::error!(%sid, %err, "could not close the session cleanly");
        member.metrics.backend_error("session");
    }
    member.metrics.clients.get_or_create(&member.labels).dec();
    connected.fetch_sub(1, Ordering::Relaxed);
}

async fn handle(member: &Member, chat: &ChatService, event: Inbound) {
    match event {
        Inbound::Join { after, name } => {
            let (kind, backlog, resumed_after) = match chat.backlog(after.as_deref()).await {
                Ok(found) => found,
                Err(err) => {
                    // The client is told it may have missed events, rather than left guessing.
                    tracing::warn!(sid = %member.socket.id, %err, "cannot read the backlog");
                    member.metrics.backend_error("backlog");
                    (BacklogKind::Reset, Vec::new(), None)
                }
            };
            // Read after the backlog, so the list reflects every event the backlog holds.
            let online = chat.online().await.inspect_err(|err| {
                tracing::warn!(sid = %member.socket.id, %err, "cannot read who is online");
                member.metrics.backend_error("presence");
            });
            member.catch_up(kind, backlog, resumed_after, online.ok());
            if after.is_none() {
                member.reply(welcome());
            }
            // The name the user already has wins over the one the client presents.
            match (member.name(), name) {
                (Some(current), _) => member.reply(name_set(&current)),
                (None, Some(name)) => set_username(member, chat, Some(Value::String(name))).await,
                (None, None) => {}
            }
        }
        Inbound::SetUsername(raw) => set_username(member, chat, raw).await,
        Inbound::Message(raw) => {
            let started = std::time::Instant::now();
            match chat.post(member.name().as_ref(), raw.as_ref()).await {
                Ok(_) => Metrics::observe(&member.metrics.publish_seconds, started.elapsed()),
                Err(refusal) => {
                    if refusal == Refusal::Unavailable {
                        member.metrics.backend_error("bus_publish");
                    }
                    member.refuse(&refusal);
                }
            }
        }
    }
}

async fn set_username(member: &Member, chat: &ChatService, raw: Option<Value>) {
    // Taken on trust while it is claimed, so that delivering the claim's own announcement
    // does not tell this client twice; put back if refused.
    let wanted = raw.as_ref().and_then(Value::as_str).and_then(|name| Username::parse(name).ok());
    let had = if wanted.is_some() { member.set_name(wanted) } else { member.name() };
    match chat.set_username(&member.socket.id.to_string(), &member.user, raw.as_ref()).await {
        Ok(name) => {
            member.set_name(Some(name.clone()));
            member.reply(name_set(&name));
        }
        Err(refusal) => {
            member.set_name(had);
            member.refuse(&refusal);
        }
    }
}

async fn read_tail(chat: &ChatService) -> Position {
    loop {
        match chat.bus().tail().await {
            Ok(position) => return position,
            Err(err) => {
                tracing::warn!(%err, "cannot find the end of the bus; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

//! Socket.IO wiring: the event contract on top of [`ChatService`].
//!
//! - [`inbox`]: each handler only queues its event, in arrival order, after the limits;
//! - [`connection`]: one task per connection handles that queue in order;
//! - [`hub`]: the rooms with members on this node, one task each reading the room's bus
//!   and writing each of its events to the room's members;
//! - [`member`]: a connection as delivery sees it, with the backlog/live seam per room;
//! - [`outbox`]: the one way anything is written to a client.
//!
//! Room events reach clients only through their room's bus, so every client sees each
//! room's one order. Legacy clients are in the lobby and get the legacy strings; chatroom
//! clients get structured lines, and first a room's backlog (history, or what they
//! missed) with no gap and no duplicate at the seam. Version 1 clients are in the lobby;
//! version 2 clients join and leave rooms, and their payloads name the room.

mod connection;
mod hub;
mod inbox;
mod member;
mod outbox;
mod polling;

pub use polling::{Pacers, watch_polls};

use crate::addresses::{AddressPolicy, ClientAddr};
use crate::auth::{Access, Gate};
use crate::backend::moderation::Order;
use crate::backend::{SessionId, UserId};
use crate::chat::ChatService;
use crate::limits::{ConnectionLimits, RateLimits, Verdict};
use crate::metrics::{ClientLabels, Metrics};
use crate::moderation::Moderator;
use app::protocol::{
    After, ClientAuth, HISTORY, Hello, HistoryRequest, JOIN, JoinRoom, LEAVE, LeaveRoom, MAX_OLDER_LINES, MESSAGE,
    Notice, Position, Presented, REFRESH, ROOMS, Refresh, Refusal, RoomName, SET_USERNAME, Say,
};
use connection::Connection;
use hub::Hub;
use inbox::{EventQueue, Inbound, Inbox};
use member::{Member, Speaks};
use outbox::Outbox;
use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketIo, TransportType};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How often presence is swept (beats, grace periods over, dead nodes' users).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Every how many sweeps the rate limits forget users and addresses that went quiet.
const FORGET_QUIET_EVERY: u64 = 10;
/// Every how many sweeps the rooms with members here are reported (kept, counted).
const REPORT_ROOMS_EVERY: u64 = 5;
/// The most rooms a room list holds.
const MAX_LISTED_ROOMS: usize = 200;
/// The rooms one connection may be in at once, unless configured otherwise.
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 20;

/// What every connection's handlers share.
#[derive(Clone)]
pub struct Realtime {
    chat: Arc<ChatService>,
    node: Arc<str>,
    hub: Arc<Hub>,
    /// The connection tasks, so that shutdown can wait for their sessions to close.
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
    limits: RateLimits,
    /// How many connections this node holds, in all and per source address.
    connected: Arc<AtomicUsize>,
    addresses: Arc<AddressPolicy>,
    pacers: Arc<Pacers>,
    max_rooms: usize,
    moderator: Arc<Moderator>,
    gate: Arc<Gate>,
}

impl Realtime {
    /// Handlers over `chat`, on the node named `node`.
    pub fn new(
        chat: Arc<ChatService>,
        node: &str,
        metrics: Arc<Metrics>,
        limits: RateLimits,
        addresses: Arc<AddressPolicy>,
        pacers: Arc<Pacers>,
        moderator: Arc<Moderator>,
    ) -> Self {
        Self {
            hub: Arc::new(Hub::new(chat.clone(), metrics.clone())),
            chat,
            node: node.into(),
            tasks: TaskTracker::new(),
            metrics,
            limits,
            connected: Arc::new(AtomicUsize::new(0)),
            addresses,
            pacers,
            max_rooms: DEFAULT_MAX_ROOMS_PER_CONNECTION,
            moderator,
            gate: Arc::new(Gate::open()),
        }
    }

    /// The same handlers letting in only whom `gate` admits.
    pub fn with_gate(self, gate: Arc<Gate>) -> Self {
        Self { gate, ..self }
    }

    /// The same handlers letting one connection be in at most `max` rooms at once.
    pub fn with_max_rooms(self, max: usize) -> Self {
        Self { max_rooms: max.max(1), ..self }
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

    /// Delivers the lobby to this node for its whole life (legacy clients are in it the
    /// moment they connect); other rooms are delivered while they have members here.
    pub fn deliver_lobby(&self) {
        self.hub.keep(&RoomName::lobby());
    }

    /// Stops delivering every room (the node is gone).
    pub fn stop_delivery(&self) {
        self.hub.stop();
    }

    /// Sweeps presence every second for the life of the node (see
    /// [`ChatService::sweep`]), and tells the clients whose name was taken meanwhile.
    pub async fn sweep_presence(self) {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0u64.. {
            ticks.tick().await;
            if tick % FORGET_QUIET_EVERY == 0 {
                self.limits.forget_quiet();
            }
            self.pacers.check_upgrades();
            if tick % REPORT_ROOMS_EVERY == 0
                && let Err(err) = self.chat.report_rooms(&self.hub.rooms_to_report()).await
            {
                tracing::warn!(%err, "cannot report this node's rooms; retrying at the next report");
                self.metrics.backend_error("presence");
            }
            match self.chat.sweep().await {
                Ok(swept) => {
                    for member in swept.lost.iter().filter_map(|sid| self.hub.member(sid)) {
                        member.lose_name();
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot sweep presence; retrying at the next tick");
                    self.metrics.backend_error("presence");
                }
            }
        }
    }

    /// Carries out the operators' orders for the life of the node: closes the
    /// connections of a kicked or banned user here, puts a mute or ban of a keyless
    /// user on its connections' addresses, and takes a user out of a private room it
    /// was taken off.
    pub async fn follow_orders(self) {
        let mut orders = self.moderator.store().orders();
        loop {
            let order = match orders.recv().await {
                Ok(order) => order,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "orders were missed: the node was too busy to read them");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let (user, then, close) = match order {
                Order::Kick { user, then } => (user, then, true),
                Order::Mark { user, then } => (user, Some(then), false),
                Order::Revoke { room, user } => {
                    // Refused from now on here, before the store is read again.
                    self.moderator.forget_member(&room, &user);
                    for member in self.hub.snapshot().into_iter().filter(|member| member.user == user) {
                        member.recheck(&room);
                    }
                    continue;
                }
                Order::Refresh => continue,
            };
            for member in self.hub.snapshot().into_iter().filter(|member| member.user == user) {
                if let Some(then) = then.filter(|_| !member.user.can_return()) {
                    let name = member.name().map(|name| name.to_string()).unwrap_or_default();
                    self.moderator.carry_over(then, &name, member.addr).await;
                }
                if close {
                    tracing::info!(sid = %member.sid, "closing a connection on an operator's order");
                    member.outbox.disconnect();
                }
            }
        }
    }

    /// How far this node's delivery of the lobby is behind its newest event (`None`
    /// when the bus does not answer).
    pub async fn delivery_lag(&self) -> Option<Duration> {
        self.hub.lag(&RoomName::lobby()).await
    }

    /// Waits until every room event published so far has been delivered to this node's
    /// members, or `within` passed; returns whether it was.
    pub async fn wait_delivered(&self, within: Duration) -> bool {
        self.hub.wait_delivered(within).await
    }

    /// Ends every connection's session, for a node whose client transports were closed
    /// all at once (socketioxide then calls no disconnect handler).
    pub fn end_all_sessions(&self) {
        for member in self.hub.snapshot() {
            self.hub.forget(member.outbox.id());
            member.gone.notify_one();
        }
    }

    /// Waits until every connection task has closed its session.
    pub async fn wait_for_sessions(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn on_connect(&self, socket: SocketRef, auth: Option<Value>) {
        let sid = SessionId::new(socket.id.to_string());
        let addr = ClientAddr::of(&socket.req_parts().extensions).unwrap_or(ClientAddr::UNKNOWN);
        let token = token_of(auth.as_ref(), socket.req_parts().uri.query());
        // Only clients that announce a protocol version get more than the legacy strings.
        let auth = auth.and_then(|auth| serde_json::from_value::<ClientAuth>(auth).ok());
        let access = match self.gate.admit(token.as_deref()) {
            Ok(access) => access,
            Err(denied) => {
                tracing::info!(%sid, reason = %denied, "a connection's token was refused");
                let refusal = Refusal::NotAllowed { reason: denied.to_string() };
                return self.turn_away(&socket, auth.is_some(), &refusal);
            }
        };
        let user = match (&access, auth.as_ref().and_then(|auth| auth.key.as_ref())) {
            (Access::Signed(grant), _) => UserId::from_subject(grant.subject.as_str()),
            (_, Some(Presented::Valid(key))) => UserId::from_key(key),
            (_, Some(Presented::Invalid(_))) => {
                tracing::debug!(%sid, "client key ignored: not 16-64 characters of A-Z a-z 0-9 _ -");
                UserId::of_connection(&sid)
            }
            (_, None) => UserId::of_connection(&sid),
        };
        if let Some(refusal) = self.moderator.refuses_user(&user) {
            // Banned: told why, and let go before it is anywhere.
            return self.turn_away(&socket, auth.is_some(), &refusal);
        }
        let speaks = match &auth {
            None => Speaks::Legacy,
            Some(auth) if auth.has_rooms() => Speaks::V2,
            Some(_) => Speaks::V1,
        };
        let labels = ClientLabels {
            transport: match socket.transport_type() {
                TransportType::Websocket => "websocket",
                TransportType::Polling => "polling",
            },
            protocol: match speaks {
                Speaks::Legacy => "legacy",
                Speaks::V1 | Speaks::V2 => "chatroom",
            },
        };
        self.metrics.clients.get_or_create(&labels).inc();
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.addresses.opened(addr);
        let limits = Arc::new(self.limits.for_connection(user.clone(), addr));
        if socket.transport_type() == TransportType::Polling {
            self.pacers.start(socket.id);
        }
        let outbox = Outbox::new(socket.clone(), auth.is_some(), self.metrics.clone(), &self.pacers);
        let queue = Arc::new(EventQueue::default());
        let member = Arc::new(Member::new(outbox.clone(), sid.clone(), speaks, user, labels, queue.clone(), addr));
        self.hub.insert(member.clone());
        if speaks != Speaks::V2 {
            // In the lobby from the start; a chatroom client's live events are held until
            // its backlog, read next, is sent.
            drop(self.hub.enter(&RoomName::lobby(), &member));
        }
        let fixed_name = access.fixed_name().map(ToString::to_string);
        match auth {
            None => {
                outbox.reply(&Notice::welcome());
                if fixed_name.is_some() {
                    let _ = queue.push(Inbound::TakeName(fixed_name));
                }
            }
            Some(auth) => {
                outbox.hello(&Hello { node: self.node.to_string(), limits: Some(self.chat.limits()) });
                if let Access::Signed(grant) = &access {
                    outbox.reply(&Notice::SignedIn { name: grant.name.clone(), expires: grant.expires });
                }
                self.metrics.event_in("join");
                // A name the token fixes is the one taken, whatever the client presents.
                let auth = ClientAuth { name: fixed_name.or(auth.name), ..auth };
                for event in self.opening_events(auth, &member) {
                    // The queue is new and open, and these are few: they fit.
                    let _ = queue.push(event);
                }
            }
        }
        self.install_handlers(&socket, Inbox::new(queue.clone(), limits.clone()), &member);
        let connection = Connection {
            member,
            sid,
            addr,
            queue,
            limits,
            chat: self.chat.clone(),
            hub: self.hub.clone(),
            max_rooms: self.max_rooms,
            max_listed: MAX_LISTED_ROOMS,
            metrics: self.metrics.clone(),
            connected: self.connected.clone(),
            addresses: self.addresses.clone(),
            moderator: self.moderator.clone(),
            gate: self.gate.clone(),
            access: parking_lot::Mutex::new(access),
        };
        self.tasks.spawn(connection.serve());
    }

    /// Tells a connection why it may not stay, and closes it before it is anywhere (no
    /// handler hears what it sends meanwhile).
    fn turn_away(&self, socket: &SocketRef, structured: bool, refusal: &Refusal) {
        let outbox = Outbox::new(socket.clone(), structured, self.metrics.clone(), &self.pacers);
        outbox.refuse(refusal);
        outbox.disconnect_soon();
    }

    /// What a chatroom client's CONNECT auth asks for, in order: version 1 joins the
    /// lobby and then takes its name; version 2 takes its name, then joins each room it
    /// presents (refused past the per-connection bound).
    fn opening_events(&self, auth: ClientAuth, member: &Member) -> Vec<Inbound> {
        let ClientAuth { after, name, .. } = auth;
        if member.speaks == Speaks::V1 {
            let after = match after {
                Some(After::One(after)) => Some(after),
                // Version 1 presents one position; anything else cannot be resumed from.
                Some(After::PerRoom(_)) => Some(Presented::Invalid(String::new())),
                None => None,
            };
            return vec![Inbound::Join { room: RoomName::lobby(), after }, Inbound::TakeName(name)];
        }
        let mut events = vec![Inbound::TakeName(name)];
        let rooms = match after {
            Some(After::PerRoom(rooms)) => rooms,
            Some(After::One(after)) => [(app::protocol::LOBBY.to_owned(), Some(after))].into(),
            None => Default::default(),
        };
        for (raw, after) in rooms {
            match RoomName::parse(&raw) {
                Ok(room) if events.len() > self.max_rooms => {
                    member.outbox.refuse_in(Some(&room), &Refusal::TooManyRooms { max: self.max_rooms });
                }
                Ok(room) => events.push(Inbound::Join { room, after }),
                Err(refusal) => member.outbox.refuse(&refusal),
            }
        }
        events
    }

    /// Installs `event`'s handler on `socket`: it counts the event, reads its argument
    /// with `read` (an input that is not valid is refused to its sender at once), and
    /// queues what it read within the limit `read` picked. The handler gets the socket as
    /// an argument: holding it here would keep it alive.
    fn on(
        &self,
        socket: &SocketRef,
        inbox: &Inbox,
        structured: bool,
        event: &'static str,
        read: impl Fn(Option<Value>, &ConnectionLimits) -> Result<Admitted, Refusal> + Clone + Send + Sync + 'static,
    ) {
        let (inbox, metrics, pacers) = (inbox.clone(), self.metrics.clone(), self.pacers.clone());
        socket.on(event, move |socket: SocketRef, TryData(data): TryData<Value>| {
            metrics.event_in(event);
            let outbox = Outbox::new(socket, structured, metrics.clone(), &pacers);
            match read(data.ok(), inbox.limits()) {
                Ok(Admitted { room, verdict, event }) => inbox.admit(&outbox, room.as_ref(), verdict, event),
                Err(refusal) => outbox.refuse(&refusal),
            }
            async {}
        });
    }

    fn install_handlers(&self, socket: &SocketRef, inbox: Inbox, member: &Member) {
        let (speaks, structured) = (member.speaks, member.outbox.is_structured());
        self.on(socket, &inbox, structured, SET_USERNAME, |data, limits| {
            Ok(Admitted { room: None, verdict: limits.check_rename(), event: Inbound::SetUsername(data) })
        });
        self.on(socket, &inbox, structured, MESSAGE, move |data, limits| {
            let (room, raw) = message_for(speaks, data)?;
            let label = (speaks == Speaks::V2).then(|| room.clone());
            Ok(Admitted { room: label, verdict: limits.check_message(), event: Inbound::Message { room, raw } })
        });
        if speaks != Speaks::Legacy {
            self.on(socket, &inbox, structured, HISTORY, move |data, limits| {
                let (room, before, limit) = history_request(speaks, data)?;
                let label = (speaks == Speaks::V2).then(|| room.clone());
                Ok(Admitted {
                    room: label,
                    verdict: limits.check_history(),
                    event: Inbound::Older { room, before, limit },
                })
            });
        }
        self.on(socket, &inbox, structured, REFRESH, |data, limits| {
            let refresh: Refresh = data
                .and_then(|data| serde_json::from_value(data).ok())
                .ok_or_else(|| Refusal::NotAllowed { reason: crate::auth::Denied::Malformed.to_string() })?;
            Ok(Admitted { room: None, verdict: limits.check_refresh(), event: Inbound::Refresh(refresh.token) })
        });
        if speaks == Speaks::V2 {
            self.on(socket, &inbox, structured, JOIN, |data, limits| {
                let join: JoinRoom = argument(data)?;
                let room = RoomName::parse(&join.room)?;
                let event = Inbound::Join { room: room.clone(), after: join.after };
                Ok(Admitted { room: Some(room), verdict: limits.check_room_change(), event })
            });
            self.on(socket, &inbox, structured, LEAVE, |data, limits| {
                let leave: LeaveRoom = argument(data)?;
                let room = RoomName::parse(&leave.room)?;
                let event = Inbound::Leave(room.clone());
                Ok(Admitted { room: Some(room), verdict: limits.check_room_change(), event })
            });
            // A read of the whole list: it draws from the same bucket as lines.
            self.on(socket, &inbox, structured, ROOMS, |_, limits| {
                Ok(Admitted { room: None, verdict: limits.check_message(), event: Inbound::ListRooms })
            });
        }
        let (hub, gone, pacers) = (self.hub.clone(), member.gone.clone(), self.pacers.clone());
        socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
            tracing::debug!(sid = %socket.id, %reason, "client disconnected");
            hub.forget(socket.id);
            pacers.stop(socket.id);
            gone.notify_one();
            async {}
        });
    }
}

/// The connection token a client presents: `token` in its CONNECT auth (any client), else
/// the `token` query parameter of its handshake (legacy clients that cannot send auth).
fn token_of(auth: Option<&Value>, query: Option<&str>) -> Option<String> {
    if let Some(token) = auth.and_then(|auth| auth.get("token")) {
        // Present but not a string: no valid token, so refused as one.
        return Some(token.as_str().unwrap_or_default().to_owned());
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(name, _)| name == "token").map(|(_, token)| token)
}

/// What a handler queues for its connection's task, and within which limit.
struct Admitted {
    /// The room it is about, named in a refusal (version 2).
    room: Option<RoomName>,
    /// What the rate limits say.
    verdict: Verdict,
    /// The event for the task.
    event: Inbound,
}

/// Reads an event's argument (`join`, `leave`); anything else is not a room.
fn argument<T: serde::de::DeserializeOwned>(data: Option<Value>) -> Result<T, Refusal> {
    data.and_then(|data| serde_json::from_value(data).ok()).ok_or(Refusal::RoomNotText)
}

/// The room, position and limit of a `history` request: version 2 names the room,
/// earlier versions read the lobby.
fn history_request(speaks: Speaks, data: Option<Value>) -> Result<(RoomName, Position, usize), Refusal> {
    let not_valid = Refusal::HistoryNotValid { max: MAX_OLDER_LINES };
    let request: HistoryRequest =
        data.and_then(|data| serde_json::from_value(data).ok()).ok_or_else(|| not_valid.clone())?;
    if !(1..=MAX_OLDER_LINES).contains(&request.limit) {
        return Err(not_valid);
    }
    let room = match (speaks, request.room) {
        (Speaks::V2, Some(room)) => RoomName::parse(&room)?,
        (Speaks::V2, None) => return Err(Refusal::RoomNotText),
        _ => RoomName::lobby(),
    };
    Ok((room, request.before, request.limit))
}

/// The room and the text of a `message`: the lobby for a bare string (and for every
/// client before version 2), else the room of a `{room, text}` object.
fn message_for(speaks: Speaks, data: Option<Value>) -> Result<(RoomName, Option<Value>), Refusal> {
    match data {
        Some(Value::Object(fields)) if speaks == Speaks::V2 => {
            let say: Say = serde_json::from_value(Value::Object(fields)).map_err(|_| Refusal::MessageNotText)?;
            Ok((RoomName::parse(&say.room)?, Some(Value::String(say.text))))
        }
        other => Ok((RoomName::lobby(), other)),
    }
}

//! Socket.IO wiring: the event contract on top of [`ChatService`].
//!
//! - [`inbox`]: each handler only queues its event, in arrival order, after the limits;
//! - [`connection`]: one task per connection handles that queue in order;
//! - [`hub`]: one task per node reads the bus and writes each room event to every member;
//! - [`member`]: a connection as delivery sees it, with the backlog/live seam;
//! - [`outbox`]: the one way anything is written to a client.
//!
//! Room events reach clients only through the bus, so every client sees the bus's one
//! order. Legacy clients get the legacy strings; chatroom clients get structured lines,
//! and first their backlog (history, or what they missed) with no gap and no duplicate
//! at the seam.

mod connection;
mod hub;
mod inbox;
mod member;
mod outbox;
mod polling;

pub use polling::{Pacers, watch_polls};

use crate::addresses::{AddressPolicy, ClientAddr};
use crate::backend::{SessionId, UserId};
use crate::chat::ChatService;
use crate::limits::RateLimits;
use crate::metrics::{ClientLabels, Metrics};
use app::protocol::{ClientAuth, Hello, MESSAGE, Notice, Presented, SET_USERNAME};
use connection::Connection;
use hub::Hub;
use inbox::{EventQueue, Inbound, Inbox};
use member::{Cursor, Feed, Member};
use outbox::Outbox;
use parking_lot::Mutex;
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
    ) -> Self {
        Self {
            chat,
            node: node.into(),
            hub: Arc::new(Hub::new()),
            tasks: TaskTracker::new(),
            metrics,
            limits,
            connected: Arc::new(AtomicUsize::new(0)),
            addresses,
            pacers,
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

    /// Reads the room's bus and delivers every event to this node's members, for the
    /// life of the node.
    pub async fn deliver_room_events(self) {
        self.hub.deliver(&self.chat, &self.metrics).await;
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

    /// Waits until every room event published so far has been delivered to this node's
    /// members, or `within` passed; returns whether it was.
    pub async fn wait_delivered(&self, within: Duration) -> bool {
        let Ok(tail) = self.chat.bus().tail().await else { return false };
        self.hub.wait_delivered(tail, within).await
    }

    /// Ends every connection's session, for a node whose client transports were closed
    /// all at once (socketioxide then calls no disconnect handler).
    pub fn end_all_sessions(&self) {
        for member in self.hub.snapshot() {
            self.hub.remove(member.outbox.id());
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
        // Only clients that announce a protocol version get more than the legacy strings.
        let auth = auth.and_then(|auth| serde_json::from_value::<ClientAuth>(auth).ok());
        let user = match auth.as_ref().and_then(|auth| auth.key.as_ref()) {
            Some(Presented::Valid(key)) => UserId::from_key(key),
            Some(Presented::Invalid(_)) => {
                tracing::debug!(%sid, "client key ignored: not 16-64 characters of A-Z a-z 0-9 _ -");
                UserId::of_connection(&sid)
            }
            None => UserId::of_connection(&sid),
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
        self.addresses.opened(addr);
        let limits = Arc::new(self.limits.for_connection(user.clone(), addr));
        if socket.transport_type() == TransportType::Polling {
            self.pacers.start(socket.id);
        }
        let outbox = Outbox::new(socket.clone(), auth.is_some(), self.metrics.clone(), &self.pacers);
        // A chatroom client's live events are held from the start: its backlog is read next.
        let feed = if auth.is_some() { Feed::Structured(Mutex::new(Cursor::joining())) } else { Feed::Legacy };
        let queue = Arc::new(EventQueue::default());
        let member = Arc::new(Member::new(outbox.clone(), sid.clone(), feed, user, labels, queue.clone()));
        self.hub.insert(member.clone());
        match auth {
            None => outbox.reply(&Notice::welcome()),
            Some(auth) => {
                outbox.hello(&Hello { node: self.node.to_string() });
                self.metrics.event_in("join");
                // The queue is new and open: this first event always fits.
                let _ = queue.push(Inbound::Join { after: auth.after, name: auth.name });
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
            metrics: self.metrics.clone(),
            connected: self.connected.clone(),
            addresses: self.addresses.clone(),
        };
        self.tasks.spawn(connection.serve());
    }

    fn install_handlers(&self, socket: &SocketRef, inbox: Inbox, member: &Member) {
        // The handlers get the socket as an argument: holding it here would keep it alive.
        let structured = member.outbox.is_structured();
        socket.on(SET_USERNAME, {
            let (inbox, metrics, pacers) = (inbox.clone(), self.metrics.clone(), self.pacers.clone());
            move |socket: SocketRef, TryData(data): TryData<Value>| {
                metrics.event_in(SET_USERNAME);
                let outbox = Outbox::new(socket, structured, metrics.clone(), &pacers);
                inbox.admit(&outbox, inbox.limits().check_rename(), Inbound::SetUsername(data.ok()));
                async {}
            }
        });
        let (metrics, pacers) = (self.metrics.clone(), self.pacers.clone());
        socket.on(MESSAGE, move |socket: SocketRef, TryData(data): TryData<Value>| {
            metrics.event_in(MESSAGE);
            let outbox = Outbox::new(socket, structured, metrics.clone(), &pacers);
            inbox.admit(&outbox, inbox.limits().check_message(), Inbound::Message(data.ok()));
            async {}
        });
        let (hub, gone, pacers) = (self.hub.clone(), member.gone.clone(), self.pacers.clone());
        socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
            tracing::debug!(sid = %socket.id, %reason, "client disconnected");
            hub.remove(socket.id);
            pacers.stop(socket.id);
            gone.notify_one();
            async {}
        });
    }
}

//! Socket.IO wiring: the legacy event contract on top of [`ChatService`].
//!
//! socketioxide runs every event handler in a task of its own, so two messages from one
//! client could be handled out of order. Here each handler only queues the event, in
//! the order it arrived, and one task per connection handles the queue in that order.
//! Room events reach clients only through the bus: [`deliver_room_events`] reads it and
//! writes each event to every local client, so every client sees the bus's one order.

use crate::backend::{BackendError, EventBus, Position};
use crate::chat::ChatService;
use app::protocol::{ClientAuth, HELLO, Hello, MESSAGE, SET_USERNAME, WELCOME, username_set};
use app::validation::{Refusal, Username};
use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;

/// Events from one client waiting to be handled.
const INBOX_CAPACITY: usize = 1_024;
/// Room events delivered per read of the bus.
const DELIVERY_BATCH: usize = 256;

/// An event from a client, queued for its connection's task.
#[derive(Debug)]
enum Inbound {
    SetUsername(Option<Value>),
    Message(Option<Value>),
}

/// What every connection's handlers share.
#[derive(Clone)]
pub struct Realtime {
    chat: Arc<ChatService>,
    node: Arc<str>,
    /// The connection tasks, so that shutdown can wait for their sessions to close.
    tasks: TaskTracker,
}

impl Realtime {
    /// Handlers over `chat`, on the node named `node`.
    pub fn new(chat: Arc<ChatService>, node: &str) -> Self {
        Self { chat, node: node.into(), tasks: TaskTracker::new() }
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

    /// Waits until every connection task has closed its session.
    pub async fn wait_for_sessions(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn on_connect(&self, socket: SocketRef, auth: Option<Value>) {
        let (inbox, queue) = mpsc::channel(INBOX_CAPACITY);
        let gone = Arc::new(Notify::new());
        reply(&socket, WELCOME);
        // Only clients that announce a protocol version get more than the legacy strings.
        let auth = auth.and_then(|auth| serde_json::from_value::<ClientAuth>(auth).ok());
        if auth.is_some() {
            let hello = Hello { node: self.node.to_string() };
            if let Err(err) = socket.emit(HELLO, &hello) {
                tracing::debug!(sid = %socket.id, %err, "hello not sent: the client is gone");
            }
        }
        install_handlers(&socket, inbox, gone.clone());
        self.tasks.spawn(serve_connection(socket, self.chat.clone(), queue, gone));
    }
}

fn install_handlers(socket: &SocketRef, inbox: mpsc::Sender<Inbound>, gone: Arc<Notify>) {
    socket.on(SET_USERNAME, {
        let inbox = inbox.clone();
        move |socket: SocketRef, TryData(data): TryData<Value>| {
            enqueue(&socket, &inbox, Inbound::SetUsername(data.ok()));
            async {}
        }
    });
    socket.on(MESSAGE, move |socket: SocketRef, TryData(data): TryData<Value>| {
        enqueue(&socket, &inbox, Inbound::Message(data.ok()));
        async {}
    });
    socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
        tracing::debug!(sid = %socket.id, %reason, "client disconnected");
        gone.notify_one();
        async {}
    });
}

fn enqueue(socket: &SocketRef, inbox: &mpsc::Sender<Inbound>, event: Inbound) {
    match inbox.try_send(event) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(sid = %socket.id, "client sends faster than it is served; event refused");
            reply(socket, &Refusal::Busy.to_string());
        }
        // The connection task has finished: the socket is closing.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// Handles one connection's events in arrival order, then closes its session.
async fn serve_connection(
    socket: SocketRef,
    chat: Arc<ChatService>,
    mut queue: mpsc::Receiver<Inbound>,
    gone: Arc<Notify>,
) {
    let sid = socket.id.to_string();
    if let Err(err) = chat.open_session(&sid).await {
        tracing::warn!(%sid, %err, "could not record the session");
    }
    // The username lives here, so a chat line needs no store read.
    let mut username: Option<Username> = None;
    loop {
        tokio::select! {
            biased;
            Some(event) = queue.recv() => handle(&socket, &chat, &mut username, event).await,
            () = gone.notified() => break,
        }
    }
    // Events that arrived before the disconnect still count, and come before the leave.
    while let Ok(event) = queue.try_recv() {
        handle(&socket, &chat, &mut username, event).await;
    }
    if let Err(err) = chat.close_session(&sid, username.as_ref()).await {
        tracing::error!(%sid, %err, "could not close the session cleanly");
    }
}

async fn handle(socket: &SocketRef, chat: &ChatService, username: &mut Option<Username>, event: Inbound) {
    match event {
        Inbound::SetUsername(raw) => match chat.set_username(&socket.id.to_string(), raw.as_ref()).await {
            Ok(name) => {
                reply(socket, &username_set(name.as_str()));
                *username = Some(name);
            }
            Err(refusal) => reply(socket, &refusal.to_string()),
        },
        Inbound::Message(raw) => {
            if let Err(refusal) = chat.post(username.as_ref(), raw.as_ref()).await {
                reply(socket, &refusal.to_string());
            }
        }
    }
}

/// Sends a `message` string to one client.
fn reply(socket: &SocketRef, text: &str) {
    if let Err(err) = socket.emit(MESSAGE, text) {
        tracing::debug!(sid = %socket.id, %err, "reply not sent: the client is gone");
    }
}

/// Reads the room's bus from its current end and writes every event, in order, to every
/// client of this node. Runs for the life of the node.
pub async fn deliver_room_events(io: SocketIo, bus: Arc<dyn EventBus>) {
    let mut after = read_tail(bus.as_ref()).await;
    loop {
        match bus.read_after(after, DELIVERY_BATCH).await {
            Ok(batch) => {
                for delivered in batch {
                    broadcast_local(&io, &delivered.event.legacy_text());
                    after = delivered.position;
                }
            }
            Err(BackendError::Trimmed { after: missed_from, oldest }) => {
                tracing::error!(%missed_from, %oldest, "delivery fell behind the bus; events in between were lost to this node's clients");
                after = read_tail(bus.as_ref()).await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the bus; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn read_tail(bus: &dyn EventBus) -> Position {
    loop {
        match bus.tail().await {
            Ok(position) => return position,
            Err(err) => {
                tracing::warn!(%err, "cannot find the end of the bus; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Writes one `message` string to every client connected to this node.
fn broadcast_local(io: &SocketIo, text: &str) {
    let Some(namespace) = io.of("/") else { return };
    for socket in namespace.sockets() {
        match socket.emit(MESSAGE, text) {
            Ok(()) => {}
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                // Skipping a line for this client would leave a silent hole in its chat:
                // disconnect it instead, so it knows and can come back.
                tracing::warn!(sid = %socket.id, "client too slow, its queue is full: disconnecting it");
                let _ = socket.disconnect();
            }
            Err(SendError::Socket(SocketError::Closed)) => {}
            Err(err) => {
                tracing::warn!(sid = %socket.id, %err, "a room event was not written to a client")
            }
        }
    }
}

//! The chat page: username form, message log, message form and the connection state.

// Only the browser build feeds lines and states in; the server renders the empty page.
#![cfg_attr(not(feature = "hydrate"), allow(dead_code))]

use crate::protocol::{
    Backlog, BacklogKind, ClientAuth, ClientEvent, Notice, PROTOCOL_VERSION, Position, Presence, RoomEvent, RoomLine,
    ServerEvent,
};
use crate::validation::{DEFAULT_MAX_MESSAGE_CHARS, MessageText, Refusal, Username};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;

/// How many lines the page keeps; older ones scroll away for good.
const MAX_LINES: usize = 500;

/// The state of the link to the server, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// First connection attempt under way.
    Connecting,
    /// Joined: messages can be sent.
    Online,
    /// The link dropped; trying again with backoff.
    Reconnecting,
}

impl ConnState {
    /// Machine-readable name (the `data-state` attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Online => "online",
            ConnState::Reconnecting => "reconnecting",
        }
    }

    /// What the person reads.
    pub fn label(self) -> &'static str {
        match self {
            ConnState::Connecting => "Connecting…",
            ConnState::Online => "Online",
            ConnState::Reconnecting => "Reconnecting…",
        }
    }
}

/// What a line in the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// Someone's chat line.
    Chat,
    /// A room notice (someone joined, left or changed name).
    Room,
    /// Something for this page alone (welcome, confirmations).
    Own,
}

/// One line in the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    id: u64,
    kind: LineKind,
    /// The text ("ann: hi", "ann joined the chatroom.").
    body: String,
    /// The server's time of a room event, as the reader's clock shows it.
    time: Option<String>,
    /// From the history sent on joining, not seen live.
    history: bool,
}

/// Everything the page's handlers share.
#[derive(Clone, Copy)]
struct Chat {
    state: RwSignal<ConnState>,
    lines: RwSignal<Vec<Line>>,
    next_line_id: StoredValue<u64>,
    /// The name the server accepted; presented again when reconnecting.
    username: RwSignal<Option<Username>>,
    /// A name this page asked for and the server has not answered yet.
    pending_name: StoredValue<Option<String>>,
    /// The position of the newest room event shown: a reconnect resumes after it.
    last_pos: StoredValue<Option<String>>,
    /// The node serving this connection, from its `hello`.
    node: RwSignal<Option<String>>,
    /// The names online, sorted.
    online: RwSignal<Vec<String>>,
    /// The position `online` reflects: only room events after it change the list.
    online_at: StoredValue<Position>,
    /// A name presented again on reconnecting, not answered yet.
    resuming_name: StoredValue<Option<String>>,
    /// This browser's client key: its tabs and reconnects are one user.
    key: StoredValue<Option<String>>,
    name_hint: RwSignal<Option<String>>,
    message_hint: RwSignal<Option<String>>,
    outbox: StoredValue<UnboundedSender<ClientEvent>>,
}

impl Chat {
    fn new() -> (Self, UnboundedReceiver<ClientEvent>) {
        let (tx, rx) = unbounded();
        let chat = Self {
            state: RwSignal::new(ConnState::Connecting),
            lines: RwSignal::new(Vec::new()),
            next_line_id: StoredValue::new(0),
            username: RwSignal::new(None),
            pending_name: StoredValue::new(None),
            last_pos: StoredValue::new(None),
            node: RwSignal::new(None),
            online: RwSignal::new(Vec::new()),
            online_at: StoredValue::new(Position::default()),
            resuming_name: StoredValue::new(None),
            key: StoredValue::new(None),
            name_hint: RwSignal::new(None),
            message_hint: RwSignal::new(None),
            outbox: StoredValue::new(tx),
        };
        (chat, rx)
    }

    /// Queues an event for the server; false when there is no live connection.
    fn send(&self, event: ClientEvent) -> bool {
        self.state.get_untracked() == ConnState::Online && self.outbox.with_value(|tx| tx.unbounded_send(event).is_ok())
    }

    /// The CONNECT auth of the next connection: who we are and what we saw last.
    fn auth(&self) -> ClientAuth {
        let name = self.username.get_untracked().map(|name| name.to_string());
        self.resuming_name.set_value(name.clone());
        ClientAuth { v: PROTOCOL_VERSION, after: self.last_pos.get_value(), name, key: self.key.get_value() }
    }

    fn new_line(&self, kind: LineKind, body: String, time: Option<String>, history: bool) -> Line {
        let id = self.next_line_id.get_value();
        self.next_line_id.set_value(id + 1);
        Line { id, kind, body, time, history }
    }

    fn room_line(&self, line: RoomLine, history: bool) -> Line {
        if line.pos.parse::<Position>().is_ok_and(|pos| pos > self.online_at.get_value()) {
            self.follow_presence(&line.event);
        }
        // Lines arrive in the room's order, so the newest is the one to resume after.
        self.last_pos.set_value(Some(line.pos));
        let kind = match line.event {
            RoomEvent::Chat { .. } => LineKind::Chat,
            RoomEvent::Joined { .. } | RoomEvent::Renamed { .. } | RoomEvent::Left { .. } => LineKind::Room,
        };
        self.new_line(kind, line.event.text(), Some(clock(line.ts)), history)
    }

    /// Keeps the list of who is online in step with a room event newer than the list.
    fn follow_presence(&self, event: &RoomEvent) {
        let (gone, came) = match event {
            RoomEvent::Chat { .. } => return,
            RoomEvent::Joined { author } => (None, Some(author)),
            RoomEvent::Renamed { author, from } => (Some(from), Some(author)),
            RoomEvent::Left { author } => (Some(author), None),
        };
        self.online.update(|online| {
            if let Some(gone) = gone {
                online.retain(|name| name != gone);
            }
            if let Some(came) = came
                && let Err(at) = online.binary_search(came)
            {
                online.insert(at, came.clone());
            }
        });
    }

    fn push(&self, new: Vec<Line>, replace: bool) {
        self.lines.update(|lines| {
            if replace {
                lines.clear();
            }
            lines.extend(new);
            if lines.len() > MAX_LINES {
                lines.drain(..lines.len() - MAX_LINES);
            }
        });
    }

    fn push_own(&self, text: String) {
        let line = self.new_line(LineKind::Own, text, None, false);
        self.push(vec![line], false);
    }

    fn on_state(&self, state: ConnState) {
        self.state.set(state);
        if state != ConnState::Online {
            self.node.set(None);
        }
    }

    fn on_event(&self, event: ServerEvent) {
        match event {
            ServerEvent::Hello(hello) => self.node.set(Some(hello.node)),
            // The server greets fresh joins only, not resumed connections.
            ServerEvent::Notice(Notice::Welcome { text }) => self.push_own(text),
            ServerEvent::Notice(Notice::NameSet { name, text }) => {
                self.resuming_name.set_value(None);
                let asked = self.pending_name.get_value().as_deref() == Some(name.as_str());
                if let Ok(name) = Username::parse(&name) {
                    self.username.set(Some(name));
                }
                // A name presented again after a reconnect needs no confirmation line.
                if asked {
                    self.pending_name.set_value(None);
                    self.name_hint.set(None);
                    self.message_hint.set(None);
                    self.push_own(text);
                }
            }
            ServerEvent::Notice(Notice::Refused { text }) => {
                // The name presented on reconnecting was taken meanwhile: ask for another.
                if self.resuming_name.get_value().is_some() {
                    self.resuming_name.set_value(None);
                    self.username.set(None);
                    self.name_hint.set(Some(text));
                } else if self.pending_name.get_value().is_some() {
                    self.pending_name.set_value(None);
                    self.name_hint.set(Some(text));
                } else {
                    self.message_hint.set(Some(text));
                }
            }
            ServerEvent::Backlog(Backlog { kind, lines }) => {
                let history = kind != BacklogKind::Resume;
                let mut new: Vec<Line> = Vec::with_capacity(lines.len() + 1);
                if kind == BacklogKind::Reset {
                    new.push(self.new_line(LineKind::Own, MISSED.to_owned(), None, false));
                }
                new.extend(lines.into_iter().map(|line| self.room_line(line, history)));
                // After a gap the old lines cannot be continued: start over from the history.
                self.push(new, kind == BacklogKind::Reset);
            }
            ServerEvent::Line(line) => {
                let line = self.room_line(line, false);
                self.push(vec![line], false);
            }
            ServerEvent::Presence(Presence { at, mut users }) => {
                users.sort();
                self.online_at.set_value(at.parse().unwrap_or_default());
                self.online.set(users);
            }
            ServerEvent::Message(text) => self.push_own(text),
        }
    }
}

/// Shown when a reconnect came too late to catch up on everything missed.
const MISSED: &str = "You were away too long to catch up on everything: here is the recent history.";

/// `HH:MM` of a server time, on the reader's clock.
fn clock(ts_ms: u64) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts_ms as f64));
        format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let minutes = ts_ms / 60_000;
        format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
    }
}

const NOT_CONNECTED: &str = "Not connected: wait until the chat is online.";

/// The chatroom page.
#[component]
pub fn ChatPage() -> impl IntoView {
    let (chat, outbox_rx) = Chat::new();
    let name_draft = RwSignal::new(String::new());
    let message_draft = RwSignal::new(String::new());
    let (name_hint, message_hint) = (chat.name_hint, chat.message_hint);
    let log_ref = NodeRef::<html::Div>::new();

    // Effects run only in the browser: this starts the connection after hydration.
    let outbox_rx = StoredValue::new(Some(outbox_rx));
    Effect::new(move |_| {
        if let Some(rx) = outbox_rx.try_update_value(Option::take).flatten() {
            start_connection(chat, rx);
        }
    });

    // Keep the newest line in view.
    Effect::new(move |_| {
        chat.lines.track();
        if let Some(log) = log_ref.get() {
            log.set_scroll_top(log.scroll_height());
        }
    });

    let set_name = move |ev: SubmitEvent| {
        ev.prevent_default();
        match Username::parse(&name_draft.get_untracked()) {
            Err(refusal) => name_hint.set(Some(refusal.to_string())),
            Ok(name) => {
                chat.pending_name.set_value(Some(name.to_string()));
                if chat.send(ClientEvent::SetUsername(name.to_string())) {
                    name_hint.set(None);
                } else {
                    chat.pending_name.set_value(None);
                    name_hint.set(Some(NOT_CONNECTED.to_owned()));
                }
            }
        }
    };

    let send_message = move |ev: SubmitEvent| {
        ev.prevent_default();
        if chat.username.get_untracked().is_none() {
            message_hint.set(Some(Refusal::NoUsername.to_string()));
            return;
        }
        let text = match MessageText::parse(&message_draft.get_untracked(), DEFAULT_MAX_MESSAGE_CHARS) {
            Ok(text) => text,
            Err(refusal) => {
                message_hint.set(Some(refusal.to_string()));
                return;
            }
        };
        if chat.send(ClientEvent::Message(text.into_string())) {
            message_draft.set(String::new());
            message_hint.set(None);
        } else {
            message_hint.set(Some(NOT_CONNECTED.to_owned()));
        }
    };

    let offline = move || chat.state.get() != ConnState::Online;

    view! {
        <h1>"Online Chatroom"</h1>
        <div class="chat-container">
            <p id="status" class="status" data-state=move || chat.state.get().as_str() aria-live="polite">
                <span id="status-label">{move || chat.state.get().label()}</span>
                <span id="node">
                    {move || chat.node.get().map(|node| format!(" · connected to {node}"))}
                </span>
            </p>
            <form class="user-container" on:submit=set_name>
                <input
                    type="text"
                    id="username"
                    autocomplete="off"
                    placeholder="Enter a username"
                    maxlength="64"
                    bind:value=name_draft
                />
                <button type="submit" id="set-username" disabled=offline>
                    "Set as Username"
                </button>
            </form>
            <p id="username-hint" class="hint" role="alert">
                {move || name_hint.get()}
            </p>
            <section id="presence" aria-label="Who is online">
                <h2>
                    "Online "<span id="online-count">{move || chat.online.with(Vec::len)}</span>
                </h2>
                <ul id="online">
                    <For each=move || chat.online.get() key=|name| name.clone() let:name>
                        <li class:me=move || {
                            chat.username.with(|me| me.as_ref().is_some_and(|me| me.as_str() == name))
                        }>{name.clone()}</li>
                    </For>
                </ul>
            </section>
            <div id="messages" role="log" aria-live="polite" node_ref=log_ref>
                <For each=move || chat.lines.get() key=|line| line.id children=render_line />
            </div>
            <form class="message-container" on:submit=send_message>
                <input
                    type="text"
                    id="myMessage"
                    autocomplete="off"
                    placeholder="Enter a message..."
                    bind:value=message_draft
                />
                <button type="submit" id="send" disabled=offline>
                    "Send"
                </button>
            </form>
            <p id="message-hint" class="hint" role="alert">
                {move || message_hint.get()}
            </p>
        </div>
    }
}

/// A log line: its time (room events), and its text, always as text.
fn render_line(line: Line) -> impl IntoView {
    let kind = match line.kind {
        LineKind::Chat => "chat",
        LineKind::Room => "room",
        LineKind::Own => "own",
    };
    let history = if line.history { " history" } else { "" };
    view! {
        <div class=format!("line {kind}{history}")>
            {line.time.map(|time| view! { <time class="time">{time}</time> })}
            <span class="body">{line.body}</span>
        </div>
    }
}

#[cfg(feature = "hydrate")]
fn start_connection(chat: Chat, outbox: UnboundedReceiver<ClientEvent>) {
    chat.key.set_value(Some(crate::client::client_key()));
    crate::client::spawn(
        crate::client::socket_url(),
        move || chat.auth(),
        outbox,
        move |state| chat.on_state(state),
        move |event| chat.on_event(event),
    );
}

#[cfg(not(feature = "hydrate"))]
fn start_connection(_chat: Chat, _outbox: UnboundedReceiver<ClientEvent>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_stable_names() {
        assert_eq!(ConnState::Online.as_str(), "online");
        assert_eq!(ConnState::Reconnecting.label(), "Reconnecting…");
    }
}

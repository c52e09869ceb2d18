//! The chat page: username form, message log, message form and the connection state.

// Only the browser build feeds lines and states in; the server renders the empty page.
#![cfg_attr(not(feature = "hydrate"), allow(dead_code))]

use crate::protocol::{ClientEvent, ServerEvent};
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

/// One line in the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    id: u64,
    text: String,
}

/// Everything the page's handlers share.
#[derive(Clone, Copy)]
struct Chat {
    state: RwSignal<ConnState>,
    lines: RwSignal<Vec<Line>>,
    next_line_id: StoredValue<u64>,
    /// The name the server accepted from this page; sent again after a reconnect.
    username: RwSignal<Option<Username>>,
    /// The node serving this connection, from its `hello`.
    node: RwSignal<Option<String>>,
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
            node: RwSignal::new(None),
            outbox: StoredValue::new(tx),
        };
        (chat, rx)
    }

    /// Queues an event for the server; false when there is no live connection.
    fn send(&self, event: ClientEvent) -> bool {
        self.state.get_untracked() == ConnState::Online && self.outbox.with_value(|tx| tx.unbounded_send(event).is_ok())
    }

    fn push_line(&self, text: String) {
        let id = self.next_line_id.get_value();
        self.next_line_id.set_value(id + 1);
        self.lines.update(|lines| {
            lines.push(Line { id, text });
            if lines.len() > MAX_LINES {
                lines.drain(..lines.len() - MAX_LINES);
            }
        });
    }

    fn on_state(&self, state: ConnState) {
        self.state.set(state);
        if state != ConnState::Online {
            self.node.set(None);
        }
        // A new connection is a new server session: tell it who we are again.
        if state == ConnState::Online
            && let Some(name) = self.username.get_untracked()
        {
            self.send(ClientEvent::SetUsername(name.to_string()));
        }
    }

    fn on_event(&self, event: ServerEvent) {
        match event {
            ServerEvent::Message(text) => self.push_line(text),
            ServerEvent::Hello(hello) => self.node.set(Some(hello.node)),
        }
    }
}

const NOT_CONNECTED: &str = "Not connected: wait until the chat is online.";

/// The chatroom page.
#[component]
pub fn ChatPage() -> impl IntoView {
    let (chat, outbox_rx) = Chat::new();
    let name_draft = RwSignal::new(String::new());
    let message_draft = RwSignal::new(String::new());
    let name_hint = RwSignal::new(None::<String>);
    let message_hint = RwSignal::new(None::<String>);
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
                if chat.send(ClientEvent::SetUsername(name.to_string())) {
                    chat.username.set(Some(name));
                    name_hint.set(None);
                    message_hint.set(None);
                } else {
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
            <div id="messages" role="log" aria-live="polite" node_ref=log_ref>
                <For each=move || chat.lines.get() key=|line| line.id let:line>
                    <div class="line">{line.text}</div>
                </For>
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

#[cfg(feature = "hydrate")]
fn start_connection(chat: Chat, outbox: UnboundedReceiver<ClientEvent>) {
    crate::client::spawn(
        crate::client::socket_url(),
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

//! The chat page's view: username form, message log, who is online, message form and
//! the connection state. What the events do to the page is in [`crate::store`].

use crate::protocol::session::ConnState;
use crate::store::{Chat, Line, LineKind};
use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;

/// What the person reads for a link state.
fn state_label(state: ConnState) -> &'static str {
    match state {
        ConnState::Connecting => "Connecting…",
        ConnState::Online => "Online",
        ConnState::Reconnecting => "Reconnecting…",
    }
}

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
        chat.ask_for_name(&name_draft.get_untracked());
    };

    let send_message = move |ev: SubmitEvent| {
        ev.prevent_default();
        if chat.send_line(&message_draft.get_untracked()) {
            message_draft.set(String::new());
        }
    };

    let offline = move || chat.state.get() != ConnState::Online;

    view! {
        <h1>"Online Chatroom"</h1>
        <div class="chat-container">
            <p id="status" class="status" data-state=move || chat.state.get().as_str() aria-live="polite">
                <span id="status-label">{move || state_label(chat.state.get())}</span>
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
fn start_connection(chat: Chat, outbox: futures::channel::mpsc::UnboundedReceiver<crate::protocol::ClientEvent>) {
    chat.set_key(crate::client::client_key());
    crate::client::spawn(
        crate::client::socket_url(),
        move || chat.auth(),
        outbox,
        move |state| chat.on_state(state),
        move |event| chat.on_event(event),
    );
}

#[cfg(not(feature = "hydrate"))]
fn start_connection(_chat: Chat, _outbox: futures::channel::mpsc::UnboundedReceiver<crate::protocol::ClientEvent>) {}

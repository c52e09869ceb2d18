//! The chat page's view: the rooms (the list with who is in each and what is unread, a
//! field to open one), username form, the room's log and who is in it, message form and
//! the connection state. What the events do to the page is in [`crate::store`].
//!
//! `/` opens the lobby and `/r/{room}` a room; switching rooms changes the address
//! without reloading the page, and each room comes back where it was scrolled.

use crate::protocol::RoomName;
use crate::protocol::session::ConnState;
use crate::store::{Chat, Line, LineKind, path_of_room};
use crate::text::{Segment, author_class, segments};
use leptos::ev::{MouseEvent, SubmitEvent};
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

/// A room in the room list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListedRoom {
    room: RoomName,
    /// Users in it, when the server listed it.
    online: Option<usize>,
    /// Unread lines, for a room the page is in.
    unread: Option<usize>,
}

/// The rooms the page is in (in the order it joined them), then the other rooms in use.
fn room_list(chat: Chat) -> Vec<ListedRoom> {
    let directory = chat.directory.get();
    let online = |room: &RoomName| directory.iter().find(|d| d.room == *room).map(|d| d.online);
    let mut list: Vec<ListedRoom> = chat
        .tabs
        .get()
        .into_iter()
        .map(|tab| ListedRoom { online: online(&tab.room), unread: Some(tab.unread), room: tab.room })
        .collect();
    for entry in &directory {
        if !list.iter().any(|listed| listed.room == entry.room) {
            list.push(ListedRoom { room: entry.room.clone(), online: Some(entry.online), unread: None });
        }
    }
    list
}

/// The chatroom page.
#[component]
pub fn ChatPage() -> impl IntoView {
    let (chat, outbox_rx) = Chat::new(initial_room());
    let name_draft = RwSignal::new(String::new());
    let message_draft = RwSignal::new(String::new());
    let room_draft = RwSignal::new(String::new());
    let (name_hint, message_hint) = (chat.name_hint, chat.message_hint);
    let log_ref = NodeRef::<html::Div>::new();
    let scrolled = move || log_ref.get_untracked().map(|log| log.scroll_top());

    // Effects run only in the browser: this starts the connection after hydration.
    let outbox_rx = StoredValue::new(Some(outbox_rx));
    Effect::new(move |_| {
        if let Some(rx) = outbox_rx.try_update_value(Option::take).flatten() {
            start_connection(chat, rx);
        }
    });

    // Keep the newest line in view; a room put on screen again comes back where it was.
    Effect::new(move |_| {
        chat.lines.track();
        let restore = chat.scroll_to.get();
        if let Some(log) = log_ref.get() {
            log.set_scroll_top(restore.unwrap_or_else(|| log.scroll_height()));
        }
        if restore.is_some() {
            // Untracked: clearing it must not run this effect again (to the end of the log).
            chat.scroll_to.update_untracked(|restore| *restore = None);
        }
    });

    // The address follows the room on screen, without reloading the page.
    Effect::new(move |_| show_address_of(&chat.current.get()));

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

    let open_room = move |ev: SubmitEvent| {
        ev.prevent_default();
        if chat.open_room_named(&room_draft.get_untracked(), scrolled()).is_some() {
            room_draft.set(String::new());
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
            <nav id="rooms" aria-label="Rooms">
                <ul>
                    {move || {
                        chat.current.track();
                        room_list(chat)
                            .into_iter()
                            .map(|listed| render_room(chat, listed, scrolled))
                            .collect_view()
                    }}
                </ul>
                <form id="open-room" on:submit=open_room>
                    <label for="room-name">"Open a room"</label>
                    <input
                        type="text"
                        id="room-name"
                        autocomplete="off"
                        placeholder="room-name"
                        maxlength="32"
                        bind:value=room_draft
                    />
                    <button type="submit" id="open-room-button" disabled=offline>
                        "Open"
                    </button>
                </form>
            </nav>
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
            <h2 id="room-title">{move || format!("#{}", chat.current.get())}</h2>
            <section id="presence" aria-label="Who is in the room">
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

/// A room of the room list: a link that puts it on screen, who is in it, what is unread,
/// and a way to leave it for a room the page is in (but the one on screen).
fn render_room(chat: Chat, listed: ListedRoom, scrolled: impl Fn() -> Option<i32> + Copy + 'static) -> impl IntoView {
    let ListedRoom { room, online, unread } = listed;
    let current = room == chat.current.get_untracked();
    let (to_open, to_leave) = (room.clone(), room.clone());
    let open = move |ev: MouseEvent| {
        ev.prevent_default();
        chat.open_room(&to_open, scrolled());
    };
    let leave = move |_: MouseEvent| chat.leave_room(&to_leave);
    let joined = unread.is_some();
    view! {
        <li class="room" class:current=current class:joined=joined data-room=room.to_string()>
            <a href=path_of_room(&room) on:click=open aria-current=current.then_some("page")>
                {format!("#{room}")}
            </a>
            {online.map(|n| view! { <span class="room-online" title="online now">{n}</span> })}
            {unread
                .filter(|n| *n > 0)
                .map(|n| view! { <span class="unread" aria-label=format!("{n} unread")>{n}</span> })}
            {(joined && !current)
                .then(|| {
                    view! {
                        <button type="button" class="leave" on:click=leave aria-label=format!("Leave {room}")>
                            "×"
                        </button>
                    }
                })}
        </li>
    }
}

/// A log line: its time (room events), its author (chat lines, in the author's colour)
/// and its text, always as text but for http(s) links. Each kind is styled apart: chat,
/// room notices, this page's notices, history, and the user's own lines.
fn render_line(line: Line) -> impl IntoView {
    let kind = match line.kind {
        LineKind::Chat => "chat",
        LineKind::Room => "room",
        LineKind::Own => "own",
    };
    let class =
        format!("line {kind}{}{}", if line.history { " history" } else { "" }, if line.mine { " mine" } else { "" });
    view! {
        <div class=class>
            {line.time.map(|time| view! { <time class="time" datetime=time.iso>{time.shown}</time> })}
            <span class="body">
                {line.author.map(|author| {
                    let colour = format!("author {}", author_class(&author));
                    view! {
                        <span class=colour>{author}</span>
                        <span class="sep">": "</span>
                    }
                })}
                <span class="text">{render_text(&line.text)}</span>
            </span>
        </div>
    }
}

/// A line's text: http(s) addresses as links that open in a new tab, the rest as text.
fn render_text(text: &str) -> impl IntoView + use<> {
    segments(text)
        .into_iter()
        .map(|segment| match segment {
            Segment::Text(text) => text.into_any(),
            Segment::Link(href) => {
                let shown = href.clone();
                view! {
                    <a href=href target="_blank" rel="noopener noreferrer nofollow">
                        {shown}
                    </a>
                }
                .into_any()
            }
        })
        .collect_view()
}

/// The room the page opens on, from its address: the same on the server (the request)
/// and in the browser (the location), so that hydration finds what was rendered.
fn initial_room() -> RoomName {
    #[cfg(feature = "ssr")]
    {
        use_context::<http::request::Parts>()
            .map_or_else(RoomName::lobby, |parts| crate::store::room_of_path(parts.uri.path()))
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        crate::client::current_path().map_or_else(RoomName::lobby, |path| crate::store::room_of_path(&path))
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        RoomName::lobby()
    }
}

#[cfg(feature = "hydrate")]
fn show_address_of(room: &RoomName) {
    crate::client::show_path(&path_of_room(room));
}

#[cfg(not(feature = "hydrate"))]
fn show_address_of(_room: &RoomName) {}

#[cfg(feature = "hydrate")]
fn start_connection(chat: Chat, outbox: futures::channel::mpsc::UnboundedReceiver<crate::protocol::ClientEvent>) {
    chat.set_key(crate::client::client_key());
    // Back and forward move between rooms as the address says.
    crate::client::on_path_change(move |path| chat.open_room(&crate::store::room_of_path(&path), None));
    crate::client::every(std::time::Duration::from_secs(10), move || chat.ask_for_rooms());
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

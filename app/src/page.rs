//! The chat page's view: the rooms (the list with who is in each and what is unread, a
//! field to open one), username form, the room's log and who is in it, message form and
//! the connection state. What the events do to the page is in [`crate::store`].
//!
//! `/` opens the lobby and `/r/{room}` a room; switching rooms changes the address
//! without reloading the page, and each room comes back where it was scrolled.

use crate::protocol::MAX_ROOM_CHARS;
use crate::protocol::RoomName;
use crate::protocol::session::ConnState;
use crate::store::{Chat, Earlier, Line, LineKind, path_of_room};
use crate::text::{Segment, author_class, segments};
use leptos::ev::{MouseEvent, SubmitEvent};
use leptos::html;
use leptos::prelude::*;
use leptos_meta::Title;

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

/// The page's title, before the unread count while hidden.
const TITLE: &str = "Online Chatroom";

/// How close to the end of the log (px) still counts as at the end.
const AT_END_PX: i32 = 24;
/// How close to the top of the log (px) asks for older lines.
const NEAR_TOP_PX: i32 = 80;

/// The chatroom page.
#[component]
pub fn ChatPage() -> impl IntoView {
    let (chat, outbox_rx) = Chat::new(initial_room());
    let name_draft = RwSignal::new(String::new());
    let message_draft = RwSignal::new(String::new());
    let room_draft = RwSignal::new(String::new());
    let (name_hint, message_hint) = (chat.name_hint, chat.message_hint);
    let log_ref = NodeRef::<html::Div>::new();
    let message_ref = NodeRef::<html::Input>::new();
    let scrolled = move || log_ref.get_untracked().map(|log| log.scroll_top());
    // Narrow screens: the room list and the people list open on demand.
    let (rooms_open, people_open) = (RwSignal::new(false), RwSignal::new(false));
    let notifications = RwSignal::new(Notifications::Unknown);
    // Where the reader is: at the end of the log (new lines keep it there), or reading
    // back (new lines wait behind a button). `seen` is the last line read at the end.
    let reading =
        StoredValue::new(Reading { at_end: true, from_end: 0, first: None, room: chat.current.get_untracked() });
    let seen = RwSignal::new(None::<u64>);
    let focus_message = StoredValue::new(false);

    // Effects run only in the browser: this starts the connection after hydration.
    let outbox_rx = StoredValue::new(Some(outbox_rx));
    Effect::new(move |_| {
        if let Some(rx) = outbox_rx.try_update_value(Option::take).flatten() {
            start_connection(chat, rx);
            if let Some(name) = remembered_name() {
                name_draft.set(name);
            }
            notifications.set(Notifications::of_browser());
        }
    });

    // New lines: follow them at the end of the log, keep the place while reading back,
    // keep the place too when older lines come in above, and a room put on screen again
    // comes back where it was.
    Effect::new(move |_| {
        let (first, last) = chat.lines.with(|lines| (lines.first().map(|l| l.id), lines.last().map(|l| l.id)));
        let room = chat.current.get();
        let restore = chat.scroll_to.get();
        let Some(log) = log_ref.get() else { return };
        let before = reading.get_value();
        if let Some(top) = restore {
            log.set_scroll_top(top);
            // Untracked: clearing it must not run this effect again (to the end of the log).
            chat.scroll_to.update_untracked(|restore| *restore = None);
        } else if before.room != room || before.at_end {
            log.set_scroll_top(log.scroll_height());
            seen.set(last);
        } else if before.first != first {
            // Older lines came in above: the lines read stay where they were.
            log.set_scroll_top(log.scroll_height() - before.from_end);
        }
        reading.set_value(Reading::of(&log, first, room));
    });

    let on_scroll = move |_| {
        let Some(log) = log_ref.get_untracked() else { return };
        let first = chat.lines.with_untracked(|lines| lines.first().map(|l| l.id));
        let now = Reading::of(&log, first, chat.current.get_untracked());
        if now.at_end {
            seen.set(chat.lines.with_untracked(|lines| lines.last().map(|l| l.id)));
        }
        reading.set_value(now);
        if log.scroll_top() < NEAR_TOP_PX {
            chat.ask_for_older();
        }
    };
    let unseen = Memo::new(move |_| {
        let seen = seen.get();
        chat.lines.with(|lines| {
            let from = seen.and_then(|id| lines.iter().position(|l| l.id == id)).map_or(lines.len(), |at| at + 1);
            lines[from..].iter().filter(|line| line.kind == LineKind::Chat && !line.mine).count()
        })
    });
    let to_end = move |_: MouseEvent| {
        if let Some(log) = log_ref.get_untracked() {
            log.set_scroll_top(log.scroll_height());
        }
    };

    // The title counts what came while the page was hidden.
    Effect::new(move |_| on_visibility(chat));
    Effect::new(move |_| {
        if let Some(line) = chat.mentioned.get() {
            notify_mention(&line);
        }
    });

    // A name set: kept for the next visit, and the message field is next.
    Effect::new(move |_| {
        let Some(name) = chat.username.get() else { return };
        keep_name(name.as_str());
        if focus_message.get_value() {
            focus_message.set_value(false);
            if let Some(input) = message_ref.get_untracked() {
                let _ = input.focus();
            }
        }
    });

    // The address follows the room on screen, without reloading the page.
    Effect::new(move |_| show_address_of(&chat.current.get()));

    let set_name = move |ev: SubmitEvent| {
        ev.prevent_default();
        focus_message.set_value(true);
        chat.ask_for_name(&name_draft.get_untracked());
    };

    let send_message = move |ev: SubmitEvent| {
        ev.prevent_default();
        if chat.send_line(&message_draft.get_untracked()) {
            message_draft.set(String::new());
            // Your own line brings you to the end.
            reading.update_value(|reading| reading.at_end = true);
        }
    };

    let open_room = move |ev: SubmitEvent| {
        ev.prevent_default();
        if chat.open_room_named(&room_draft.get_untracked(), scrolled()).is_some() {
            room_draft.set(String::new());
            rooms_open.set(false);
        }
    };

    let offline = move || chat.state.get() != ConnState::Online;
    let name_max = move || chat.limits.get().name_chars;
    let message_max = move || chat.limits.get().message_chars;

    view! {
        <Title text=move || chat.away.get().title(TITLE) />
        <div class="app" class:rooms-open=rooms_open class:people-open=people_open>
            <header class="topbar">
                <button
                    type="button"
                    id="toggle-rooms"
                    class="toggle"
                    aria-controls="rooms"
                    aria-expanded=move || rooms_open.get().to_string()
                    on:click=move |_| rooms_open.update(|open| *open = !*open)
                >
                    "Rooms"
                </button>
                <h1>{TITLE}</h1>
                <p id="status" class="status" data-state=move || chat.state.get().as_str() aria-live="polite">
                    <span id="status-label">{move || state_label(chat.state.get())}</span>
                    <span id="node">{move || chat.node.get().map(|node| format!(" · connected to {node}"))}</span>
                </p>
                <button
                    type="button"
                    id="toggle-people"
                    class="toggle"
                    aria-controls="presence"
                    aria-expanded=move || people_open.get().to_string()
                    on:click=move |_| people_open.update(|open| *open = !*open)
                >
                    "People "
                    <span class="count">{move || chat.online.with(Vec::len)}</span>
                </button>
            </header>
            <nav id="rooms" aria-label="Rooms">
                <h2>"Rooms"</h2>
                <ul>
                    {move || {
                        chat.current.track();
                        room_list(chat)
                            .into_iter()
                            .map(|listed| render_room(chat, listed, scrolled, rooms_open))
                            .collect_view()
                    }}
                </ul>
                <form id="open-room" on:submit=open_room>
                    <label for="room-name">"Open a room"</label>
                    <div class="row">
                        <input
                            type="text"
                            id="room-name"
                            autocomplete="off"
                            placeholder="room-name"
                            maxlength=MAX_ROOM_CHARS
                            bind:value=room_draft
                        />
                        <button type="submit" id="open-room-button" disabled=offline>
                            "Open"
                        </button>
                    </div>
                </form>
                {move || {
                    (notifications.get() == Notifications::Askable)
                        .then(|| {
                            view! {
                                <button
                                    type="button"
                                    id="ask-notifications"
                                    class="secondary"
                                    on:click=move |_| ask_notifications(notifications)
                                >
                                    "Notify me of mentions"
                                </button>
                            }
                        })
                }}
            </nav>
            <main id="chat">
                <h2 id="room-title">{move || format!("#{}", chat.current.get())}</h2>
                <div class="log-area">
                <div
                    id="messages"
                    role="log"
                    aria-live="polite"
                    aria-label=move || format!("Messages in #{}", chat.current.get())
                    tabindex="0"
                    node_ref=log_ref
                    on:scroll=on_scroll
                >
                    <p class="earlier" id="earlier">
                        {move || match chat.earlier.get() {
                            Earlier::More => {
                                view! {
                                    <button
                                        type="button"
                                        id="load-older"
                                        class="link"
                                        on:click=move |_| {
                                            chat.ask_for_older();
                                        }
                                    >
                                        "Load older messages"
                                    </button>
                                }
                                    .into_any()
                            }
                            Earlier::Loading => "Loading older messages…".into_any(),
                            Earlier::Beginning => {
                                format!("This is the beginning of #{}.", chat.current.get()).into_any()
                            }
                        }}
                    </p>
                    <For
                        each=move || chat.lines.get()
                        // A line is drawn again when a day starts at it or it is deleted.
                        key=|line| (line.id, line.day_start, line.kind == LineKind::Deleted)
                        children=render_line
                    />
                </div>
                <button
                    type="button"
                    id="new-lines"
                    class="new-lines"
                    hidden=move || unseen.get() == 0
                    on:click=to_end
                >
                    {move || match unseen.get() {
                        1 => "1 new message ↓".to_owned(),
                        n => format!("{n} new messages ↓"),
                    }}
                </button>
                </div>
                <div class="composer">
                    <Show
                        when=move || chat.signed_in_as.with(Option::is_none)
                        fallback=move || {
                            view! {
                                <p id="signed-in" class="signed-in">
                                    "Signed in as "
                                    <strong>{move || chat.signed_in_as.get().map(|name| name.to_string())}</strong>
                                </p>
                            }
                        }
                    >
                        <form class="user-container" on:submit=set_name>
                            <label for="username" class="visually-hidden">
                                "Your name"
                            </label>
                            <input
                                type="text"
                                id="username"
                                autocomplete="nickname"
                                placeholder="Enter a username"
                                maxlength=name_max
                                bind:value=name_draft
                            />
                            {move || counter("username-count", name_draft.with(|d| d.chars().count()), name_max())}
                            <button type="submit" id="set-username" disabled=offline>
                                "Set as Username"
                            </button>
                        </form>
                    </Show>
                    <p id="username-hint" class="hint" role="alert">
                        {move || name_hint.get()}
                    </p>
                    <form class="message-container" on:submit=send_message>
                        <label for="myMessage" class="visually-hidden">
                            "Message"
                        </label>
                        <input
                            type="text"
                            id="myMessage"
                            autocomplete="off"
                            placeholder="Enter a message..."
                            maxlength=message_max
                            node_ref=message_ref
                            bind:value=message_draft
                        />
                        {move || counter("message-count", message_draft.with(|d| d.chars().count()), message_max())}
                        <button type="submit" id="send" disabled=offline>
                            "Send"
                        </button>
                    </form>
                    <p id="message-hint" class="hint" role="alert">
                        {move || message_hint.get()}
                    </p>
                </div>
            </main>
            <aside id="presence" aria-label="People in the room">
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
            </aside>
        </div>
    }
}

/// Where the reader stands in the log, as of the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading {
    /// At the end of the log (new lines keep it there).
    at_end: bool,
    /// How far the top of the view is from the end of the log (px): kept when older
    /// lines come in above.
    from_end: i32,
    /// The first line of the log then.
    first: Option<u64>,
    /// The room on screen then.
    room: RoomName,
}

impl Reading {
    fn of(log: &leptos::web_sys::HtmlDivElement, first: Option<u64>, room: RoomName) -> Self {
        let (top, height) = (log.scroll_top(), log.scroll_height());
        Self { at_end: height - top - log.client_height() <= AT_END_PX, from_end: height - top, first, room }
    }
}

/// A field's counter: shown once the text takes most of what the field takes.
fn counter(id: &'static str, used: usize, max: usize) -> Option<impl IntoView + use<>> {
    (used * 10 >= max * 8).then(|| {
        let class = if used >= max { "counter full" } else { "counter" };
        view! {
            <span id=id class=class aria-live="polite">
                {format!("{used}/{max}")}
            </span>
        }
    })
}

/// Whether desktop notifications of mentions can be, or are, on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notifications {
    /// Not known yet (before hydration), or not offered by this browser.
    Unknown,
    /// The browser offers them: a button asks.
    Askable,
    /// The person allowed them.
    #[cfg_attr(not(feature = "hydrate"), expect(dead_code, reason = "only the browser learns the answer"))]
    On,
}

impl Notifications {
    #[cfg(feature = "hydrate")]
    fn of_browser() -> Self {
        if crate::client::notifications_allowed() {
            Notifications::On
        } else if crate::client::notifications_available() {
            Notifications::Askable
        } else {
            Notifications::Unknown
        }
    }

    #[cfg(not(feature = "hydrate"))]
    fn of_browser() -> Self {
        Notifications::Unknown
    }
}

#[cfg(feature = "hydrate")]
fn ask_notifications(state: RwSignal<Notifications>) {
    crate::client::ask_for_notifications(move |granted| {
        state.set(if granted { Notifications::On } else { Notifications::Unknown });
    });
}

#[cfg(not(feature = "hydrate"))]
fn ask_notifications(_state: RwSignal<Notifications>) {}

#[cfg(feature = "hydrate")]
fn notify_mention(line: &Line) {
    if crate::client::page_hidden() {
        crate::client::notify(&format!("{} mentioned you", line.author.as_deref().unwrap_or("someone")), &line.text);
    }
}

#[cfg(not(feature = "hydrate"))]
fn notify_mention(_line: &Line) {}

#[cfg(feature = "hydrate")]
fn on_visibility(chat: Chat) {
    chat.set_hidden(crate::client::page_hidden());
    crate::client::on_visibility_change(move |hidden| chat.set_hidden(hidden));
}

#[cfg(not(feature = "hydrate"))]
fn on_visibility(_chat: Chat) {}

#[cfg(feature = "hydrate")]
fn remembered_name() -> Option<String> {
    crate::client::remembered_name()
}

#[cfg(not(feature = "hydrate"))]
fn remembered_name() -> Option<String> {
    None
}

#[cfg(feature = "hydrate")]
fn keep_name(name: &str) {
    crate::client::remember_name(name);
}

#[cfg(not(feature = "hydrate"))]
fn keep_name(_name: &str) {}

/// A room of the room list: a link that puts it on screen, who is in it, what is unread,
/// and a way to leave it for a room the page is in (but the one on screen).
fn render_room(
    chat: Chat,
    listed: ListedRoom,
    scrolled: impl Fn() -> Option<i32> + Copy + 'static,
    rooms_open: RwSignal<bool>,
) -> impl IntoView {
    let ListedRoom { room, online, unread } = listed;
    let current = room == chat.current.get_untracked();
    let (to_open, to_leave) = (room.clone(), room.clone());
    let open = move |ev: MouseEvent| {
        ev.prevent_default();
        chat.open_room(&to_open, scrolled());
        rooms_open.set(false);
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
        LineKind::Deleted => "deleted",
    };
    let flags = [(line.history, " history"), (line.mine, " mine"), (line.mention, " mention")];
    let class = flags.iter().filter(|(on, _)| *on).fold(format!("line {kind}"), |class, (_, flag)| class + flag);
    let day = line.time.as_ref().filter(|_| line.day_start).map(|time| {
        let label = crate::clock::day_label(time.ms, crate::clock::now_ms());
        view! {
            <div class="day" role="separator" aria-label=label.clone()>
                <span>{label.clone()}</span>
            </div>
        }
    });
    view! {
        {day}
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
        crate::client::token_url(),
        move || chat.auth(),
        outbox,
        move |state| chat.on_state(state),
        move |event| chat.on_event(event),
    );
}

#[cfg(not(feature = "hydrate"))]
fn start_connection(_chat: Chat, _outbox: futures::channel::mpsc::UnboundedReceiver<crate::protocol::ClientEvent>) {}

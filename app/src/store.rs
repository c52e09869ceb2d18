//! The page's state and how server events change it: the rooms the page is in (each
//! with its log, who is in it, the position to resume from, and what was not read yet),
//! the room on screen, the room list, and the name (accepted, asked for, or presented
//! again after a reconnect). Plain reactive signals without a view, so it is tested
//! natively.
//!
//! Invariant: a room's `last_pos` is the position of the newest event of it shown, and
//! its lines come in its order, so a reconnect that presents it misses nothing and
//! repeats nothing there. The room on screen keeps its log and list in the `lines` and
//! `online` signals; the others keep theirs in `rooms` until they are shown.

use crate::clock::{self, DayKey};
use crate::protocol::session::ConnState;
use crate::protocol::{
    After, Backlog, BacklogKind, ClientAuth, ClientEvent, ClientKey, DEFAULT_MAX_MESSAGE_CHARS, DELETED,
    HistoryRequest, JoinRoom, LeaveRoom, Limits, MAX_NAME_CHARS, MessageText, Notice, Older, Position, PresenceList,
    Presented, Refusal, RoomCount, RoomEvent, RoomLine, RoomList, RoomName, Say, ServerEvent, Username,
};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use leptos::prelude::*;
use std::collections::BTreeMap;

/// How many lines the page keeps per room; older ones scroll away (and can be loaded
/// again from the server).
const MAX_LINES: usize = 2_000;

/// How many older lines one request asks for.
pub const OLDER_PAGE: usize = 50;

/// Where `before` stands when the page has no line of a room yet: after any position.
const AFTER_EVERYTHING: Position = Position { ms: u64::MAX, seq: u64::MAX };

/// Shown when the server cannot continue a room's log from where it was (the page was
/// away too long, or the chat lost messages): it starts over from the recent history.
pub const MISSED: &str = "You may have missed messages: here is the recent history.";

/// Shown when something is typed while there is no connection.
pub const NOT_CONNECTED: &str = "Not connected: wait until the chat is online.";

/// The room a page path opens: `/r/{room}`, and the lobby for `/` (and for a path whose
/// room is not a room name).
pub fn room_of_path(path: &str) -> RoomName {
    path.strip_prefix("/r/")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|name| RoomName::parse(name).ok())
        .unwrap_or_else(RoomName::lobby)
}

/// The page path of a room: `/` for the lobby, `/r/{room}` for the others.
pub fn path_of_room(room: &RoomName) -> String {
    if room.is_lobby() { "/".to_owned() } else { format!("/r/{room}") }
}

/// What a line in the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Someone's chat line.
    Chat,
    /// A room notice (someone joined, left or changed name).
    Room,
    /// Something for this page alone (welcome, confirmations).
    Own,
    /// A chat line an operator deleted: only its time is left.
    Deleted,
}

/// One line in a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Unique within the page, for the view's keyed list.
    pub id: u64,
    /// What it is.
    pub kind: LineKind,
    /// Who wrote it, for a chat line.
    pub author: Option<String>,
    /// What it says ("hi" of a chat line; "ann joined the chatroom." of a notice).
    pub text: String,
    /// When the server took a room event.
    pub time: Option<LineTime>,
    /// From the history sent on joining, not seen live.
    pub history: bool,
    /// A chat line of this page's user.
    pub mine: bool,
    /// A chat line of someone else that names this page's user.
    pub mention: bool,
    /// Its position in the room's order, for a room event.
    pub pos: Option<Position>,
    /// The first line of its day in the log (a room event whose day differs from the
    /// room event before it): a day separator goes before it.
    pub day_start: bool,
}

impl Line {
    /// The line as one text ("ann: hi").
    pub fn body(&self) -> String {
        match &self.author {
            Some(author) => format!("{author}: {}", self.text),
            None => self.text.clone(),
        }
    }
}

/// A room event's time: as the reader's clock shows it, and as ISO 8601 UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTime {
    /// The time of day in the reader's locale and clock format.
    pub shown: String,
    /// For the `datetime` attribute.
    pub iso: String,
    /// Server time, ms since the Unix epoch.
    pub ms: u64,
    /// The reader's calendar day.
    pub day: DayKey,
}

/// How far back a room's log can still be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Earlier {
    /// Older lines may be there: ask.
    #[default]
    More,
    /// Asked; the answer has not come yet.
    Loading,
    /// The log reaches the room's beginning.
    Beginning,
}

/// What came while the page was hidden (another tab, a minimised window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Away {
    /// Whether the page is hidden now.
    pub hidden: bool,
    /// Chat lines of others that came meanwhile, in every room the page is in.
    pub unread: usize,
    /// How many of them name this page's user.
    pub mentions: usize,
}

impl Away {
    /// The page's title: the unread count first while there is one.
    pub fn title(&self, title: &str) -> String {
        if self.unread == 0 { title.to_owned() } else { format!("({}) {title}", self.unread) }
    }
}

/// A room the page is in, as the room list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTab {
    /// The room.
    pub room: RoomName,
    /// Chat lines that came while another room was on screen.
    pub unread: usize,
}

/// What the page keeps of a room.
#[derive(Debug, Default)]
struct RoomData {
    /// Its log, while another room is on screen.
    lines: Vec<Line>,
    /// Who is in it, sorted, while another room is on screen.
    online: Vec<String>,
    /// The position `online` reflects: only events after it change the list.
    online_at: Position,
    /// The position of its newest event shown: a reconnect resumes after it.
    last_pos: Option<Position>,
    /// Where its log was scrolled when another room was put on screen.
    scroll: Option<i32>,
    /// Whether the server sent its backlog: the page is in it.
    confirmed: bool,
    /// How far back its log can be loaded, while another room is on screen.
    earlier: Earlier,
}

/// Everything the page's view and handlers share.
#[derive(Clone, Copy)]
pub struct Chat {
    /// The link's state.
    pub state: RwSignal<ConnState>,
    /// The room on screen.
    pub current: RwSignal<RoomName>,
    /// Its log, oldest first.
    pub lines: RwSignal<Vec<Line>>,
    /// Who is in it, sorted.
    pub online: RwSignal<Vec<String>>,
    /// The rooms the page is in, in the order it joined them, with their unread lines.
    pub tabs: RwSignal<Vec<RoomTab>>,
    /// The rooms in use, with how many are in each (asked from the server now and then).
    pub directory: RwSignal<Vec<RoomCount>>,
    /// Where to scroll the log after another room was put on screen (`None`: to the end).
    pub scroll_to: RwSignal<Option<i32>>,
    /// How far back the log on screen can be loaded.
    pub earlier: RwSignal<Earlier>,
    /// What came while the page was hidden.
    pub away: RwSignal<Away>,
    /// The newest line that named this page's user while the page was hidden.
    pub mentioned: RwSignal<Option<Line>>,
    /// The longest name and line the server takes (from its `hello`).
    pub limits: RwSignal<Limits>,
    rooms: StoredValue<BTreeMap<RoomName, RoomData>>,
    next_line_id: StoredValue<u64>,
    /// The name the server accepted; presented again when reconnecting.
    pub username: RwSignal<Option<Username>>,
    /// The name the person's sign-in fixes (from the connection token), if any: the page
    /// then shows it instead of the name field.
    pub signed_in_as: RwSignal<Option<Username>>,
    /// A name this page asked for and the server has not answered yet.
    pending_name: StoredValue<Option<Username>>,
    /// The node serving this connection, from its `hello`.
    pub node: RwSignal<Option<String>>,
    /// A name presented again on reconnecting, not answered yet.
    resuming_name: StoredValue<Option<Username>>,
    /// This browser's client key: its tabs and reconnects are one user.
    key: StoredValue<Option<ClientKey>>,
    /// Why the last name asked for was not taken.
    pub name_hint: RwSignal<Option<String>>,
    /// Why the last line was not sent, or the last room not opened.
    pub message_hint: RwSignal<Option<String>>,
    outbox: StoredValue<UnboundedSender<ClientEvent>>,
}

impl Chat {
    /// A fresh store showing `room`, and the receiving end of what it asks to send.
    pub fn new(room: RoomName) -> (Self, UnboundedReceiver<ClientEvent>) {
        let (tx, rx) = unbounded();
        let mut rooms = BTreeMap::new();
        rooms.insert(room.clone(), RoomData::default());
        let chat = Self {
            state: RwSignal::new(ConnState::Connecting),
            current: RwSignal::new(room.clone()),
            lines: RwSignal::new(Vec::new()),
            online: RwSignal::new(Vec::new()),
            tabs: RwSignal::new(vec![RoomTab { room, unread: 0 }]),
            directory: RwSignal::new(Vec::new()),
            scroll_to: RwSignal::new(None),
            earlier: RwSignal::new(Earlier::More),
            away: RwSignal::new(Away::default()),
            mentioned: RwSignal::new(None),
            limits: RwSignal::new(Limits { name_chars: MAX_NAME_CHARS, message_chars: DEFAULT_MAX_MESSAGE_CHARS }),
            rooms: StoredValue::new(rooms),
            next_line_id: StoredValue::new(0),
            username: RwSignal::new(None),
            signed_in_as: RwSignal::new(None),
            pending_name: StoredValue::new(None),
            node: RwSignal::new(None),
            resuming_name: StoredValue::new(None),
            key: StoredValue::new(None),
            name_hint: RwSignal::new(None),
            message_hint: RwSignal::new(None),
            outbox: StoredValue::new(tx),
        };
        (chat, rx)
    }

    /// Sets the client key the next connections present.
    pub fn set_key(&self, key: ClientKey) {
        self.key.set_value(Some(key));
    }

    /// Queues an event for the server; false when there is no live connection.
    fn send(&self, event: ClientEvent) -> bool {
        self.state.get_untracked() == ConnState::Online && self.outbox.with_value(|tx| tx.unbounded_send(event).is_ok())
    }

    /// The person asks for the name in `draft`: checked here first, then sent.
    pub fn ask_for_name(&self, draft: &str) {
        match Username::parse(draft) {
            Err(refusal) => self.name_hint.set(Some(refusal.to_string())),
            Ok(name) => {
                self.pending_name.set_value(Some(name.clone()));
                if self.send(ClientEvent::SetUsername(name.to_string())) {
                    self.name_hint.set(None);
                } else {
                    self.pending_name.set_value(None);
                    self.name_hint.set(Some(NOT_CONNECTED.to_owned()));
                }
            }
        }
    }

    /// The person sends the line in `draft` to the room on screen; true when it went out
    /// (clear the field).
    pub fn send_line(&self, draft: &str) -> bool {
        if self.username.get_untracked().is_none() {
            self.message_hint.set(Some(Refusal::NoUsername.to_string()));
            return false;
        }
        let text = match MessageText::parse(draft, self.limits.get_untracked().message_chars) {
            Ok(text) => text,
            Err(refusal) => {
                self.message_hint.set(Some(refusal.to_string()));
                return false;
            }
        };
        let room = self.current.get_untracked().to_string();
        if self.send(ClientEvent::Say(Say { room, text: text.into_string() })) {
            self.message_hint.set(None);
            true
        } else {
            self.message_hint.set(Some(NOT_CONNECTED.to_owned()));
            false
        }
    }

    /// Asks the server for the room list.
    pub fn ask_for_rooms(&self) {
        self.send(ClientEvent::ListRooms);
    }

    /// Puts `raw` (a room name the person typed) on screen, joining it if the page is
    /// not in it; `scroll` is where the room on screen was scrolled. Returns the room,
    /// or shows why the name is not one.
    pub fn open_room_named(&self, raw: &str, scroll: Option<i32>) -> Option<RoomName> {
        match RoomName::parse(raw) {
            Ok(room) => {
                self.open_room(&room, scroll);
                self.message_hint.set(None);
                Some(room)
            }
            Err(refusal) => {
                self.message_hint.set(Some(refusal.to_string()));
                None
            }
        }
    }

    /// Puts `room` on screen, joining it if the page is not in it; `scroll` is where the
    /// room on screen was scrolled (it comes back there).
    pub fn open_room(&self, room: &RoomName, scroll: Option<i32>) {
        let shown = self.current.get_untracked();
        if *room == shown {
            return;
        }
        let lines = self.lines.try_update(std::mem::take).unwrap_or_default();
        let online = self.online.try_update(std::mem::take).unwrap_or_default();
        let earlier = self.earlier.get_untracked();
        let (joining, restore) = self
            .rooms
            .try_update_value(|rooms| {
                let left = rooms.entry(shown.clone()).or_default();
                (left.lines, left.online, left.scroll, left.earlier) = (lines, online, scroll, earlier);
                let joining = !rooms.contains_key(room);
                let next = rooms.entry(room.clone()).or_default();
                self.lines.set(std::mem::take(&mut next.lines));
                self.online.set(std::mem::take(&mut next.online));
                self.earlier.set(next.earlier);
                (joining, next.scroll)
            })
            .unwrap_or((true, None));
        self.scroll_to.set(restore);
        self.current.set(room.clone());
        self.tabs.update(|tabs| match tabs.iter_mut().find(|tab| tab.room == *room) {
            Some(tab) => tab.unread = 0,
            None => tabs.push(RoomTab { room: room.clone(), unread: 0 }),
        });
        if joining {
            self.send(ClientEvent::Join(JoinRoom { room: room.to_string(), after: None }));
        }
    }

    /// The person leaves `room`: no more of its lines; the lobby is shown if it was on
    /// screen (the page is always in some room).
    pub fn leave_room(&self, room: &RoomName) {
        if self.current.get_untracked() == *room {
            let fallback = self.other_room(room);
            if fallback == *room {
                return;
            }
            self.open_room(&fallback, None);
        }
        self.forget_room(room);
        self.send(ClientEvent::Leave(LeaveRoom { room: room.to_string() }));
    }

    /// The room to show instead of `room`: the first other room the page is in, else
    /// the lobby.
    fn other_room(&self, room: &RoomName) -> RoomName {
        self.tabs
            .get_untracked()
            .into_iter()
            .map(|tab| tab.room)
            .find(|other| other != room)
            .unwrap_or_else(RoomName::lobby)
    }

    fn forget_room(&self, room: &RoomName) {
        self.rooms.update_value(|rooms| drop(rooms.remove(room)));
        self.tabs.update(|tabs| tabs.retain(|tab| tab.room != *room));
    }

    /// The CONNECT auth of the next connection: who we are, the rooms we are in and what
    /// we saw last in each.
    pub fn auth(&self) -> ClientAuth {
        let name = self.username.get_untracked();
        self.resuming_name.set_value(name.clone());
        let after = self.rooms.with_value(|rooms| {
            rooms.iter().map(|(room, data)| (room.to_string(), data.last_pos.map(Presented::Valid))).collect()
        });
        ClientAuth {
            after: Some(After::PerRoom(after)),
            name: name.map(|name| name.to_string()),
            key: self.key.get_value().map(Presented::Valid),
            ..ClientAuth::new()
        }
    }

    fn new_line(&self, kind: LineKind, text: String) -> Line {
        let id = self.next_line_id.get_value();
        self.next_line_id.set_value(id + 1);
        Line {
            id,
            kind,
            author: None,
            text,
            time: None,
            history: false,
            mine: false,
            mention: false,
            pos: None,
            day_start: false,
        }
    }

    /// Asks for the lines of the room on screen before the oldest it shows; false when
    /// there is nothing to ask (its beginning is shown, or an answer is awaited).
    pub fn ask_for_older(&self) -> bool {
        if self.earlier.get_untracked() != Earlier::More {
            return false;
        }
        let before = self.lines.with_untracked(|lines| lines.iter().find_map(|line| line.pos));
        let room = self.current.get_untracked();
        let request = HistoryRequest {
            room: Some(room.to_string()),
            before: before.unwrap_or(AFTER_EVERYTHING),
            limit: OLDER_PAGE,
        };
        let asked = self.send(ClientEvent::History(request));
        if asked {
            self.earlier.set(Earlier::Loading);
        }
        asked
    }

    /// The answer to [`Self::ask_for_older`]: its lines go before the oldest shown.
    fn on_older(&self, older: Older) {
        let room = Self::room_of(older.room);
        if !self.is_in(&room) {
            return;
        }
        let oldest = self.log_of(&room, |lines| lines.iter().find_map(|line| line.pos));
        let lines: Vec<Line> = older
            .lines
            .into_iter()
            // Only what is older than the log: an answer that crossed a reset adds nothing.
            .filter(|line| oldest.is_none_or(|oldest| line.pos < oldest))
            // What they deleted is not among them.
            .filter(|line| !matches!(line.event, RoomEvent::Deleted { .. }))
            .map(|line| self.shown_line(line, true))
            .collect();
        let earlier = if older.complete { Earlier::Beginning } else { Earlier::More };
        let prepend = |log: &mut Vec<Line>| {
            log.splice(0..0, lines);
            mark_days(log);
        };
        if room == self.current.get_untracked() {
            self.lines.update(prepend);
            self.earlier.set(earlier);
        } else {
            self.rooms.update_value(|rooms| {
                let data = rooms.entry(room.clone()).or_default();
                prepend(&mut data.lines);
                data.earlier = earlier;
            });
        }
    }

    /// Reads the log of `room`, wherever it is kept.
    fn log_of<T>(&self, room: &RoomName, read: impl FnOnce(&Vec<Line>) -> T) -> T {
        if *room == self.current.get_untracked() {
            self.lines.with_untracked(read)
        } else {
            self.rooms.with_value(|rooms| read(rooms.get(room).map(|data| &data.lines).unwrap_or(&Vec::new())))
        }
    }

    /// The page was hidden or shown again; shown, nothing counts as unread any more.
    pub fn set_hidden(&self, hidden: bool) {
        self.away.set(if hidden { Away { hidden, ..self.away.get_untracked() } } else { Away::default() });
    }

    /// The room an event is about: the lobby when it names none.
    fn room_of(room: Option<RoomName>) -> RoomName {
        room.unwrap_or_else(RoomName::lobby)
    }

    /// A room event as a line of `room`'s log; `None` for a deletion, which changes the
    /// line it deletes instead.
    fn room_line(&self, room: &RoomName, line: RoomLine, history: bool) -> Option<Line> {
        let newer = self.rooms.with_value(|rooms| rooms.get(room).is_some_and(|data| line.pos > data.online_at));
        if newer {
            self.follow_presence(room, &line.event);
        }
        // Lines arrive in the room's order, so the newest is the one to resume after.
        self.rooms.update_value(|rooms| rooms.entry(room.clone()).or_default().last_pos = Some(line.pos));
        if let RoomEvent::Deleted { line: deleted } = line.event {
            self.show_deleted(room, deleted);
            return None;
        }
        Some(self.shown_line(line, history))
    }

    /// Shows the line of `room` at `position` as deleted, if the log has it.
    fn show_deleted(&self, room: &RoomName, position: Position) {
        let delete = |lines: &mut Vec<Line>| {
            if let Some(line) = lines.iter_mut().find(|line| line.pos == Some(position)) {
                (line.kind, line.author, line.text, line.mention) =
                    (LineKind::Deleted, None, DELETED.to_owned(), false);
            }
        };
        if *room == self.current.get_untracked() {
            self.lines.update(delete);
        } else {
            self.rooms.update_value(|rooms| {
                if let Some(data) = rooms.get_mut(room) {
                    delete(&mut data.lines);
                }
            });
        }
    }

    /// A room event as a line of the log.
    fn shown_line(&self, line: RoomLine, history: bool) -> Line {
        let time = LineTime {
            shown: clock::time_of_day(line.ts),
            iso: crate::text::iso_time(line.ts),
            ms: line.ts,
            day: clock::day_of(line.ts),
        };
        let mut shown = match line.event {
            RoomEvent::Chat { author, text } => {
                let me = self.username.get_untracked();
                let mine = me.as_ref().is_some_and(|me| me.as_str() == author);
                let mention = !mine && me.as_ref().is_some_and(|me| crate::text::mentions(&text, me.as_str()));
                Line { author: Some(author), mine, mention, ..self.new_line(LineKind::Chat, text) }
            }
            other => self.new_line(LineKind::Room, other.text()),
        };
        (shown.time, shown.history, shown.pos) = (Some(time), history, Some(line.pos));
        shown
    }

    /// Keeps the list of who is in `room` in step with an event newer than the list.
    fn follow_presence(&self, room: &RoomName, event: &RoomEvent) {
        let (gone, came) = match event {
            RoomEvent::Chat { .. } | RoomEvent::Deleted { .. } => return,
            RoomEvent::Joined { author } => (None, Some(author)),
            RoomEvent::Renamed { author, from } => (Some(from), Some(author)),
            RoomEvent::Left { author } => (Some(author), None),
        };
        self.update_online(room, |online| {
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

    /// Changes who is in `room`, wherever its list is kept.
    fn update_online(&self, room: &RoomName, change: impl FnOnce(&mut Vec<String>)) {
        if *room == self.current.get_untracked() {
            self.online.update(change);
        } else {
            self.rooms.update_value(|rooms| change(&mut rooms.entry(room.clone()).or_default().online));
        }
    }

    /// Adds lines to `room`'s log (after emptying it when `replace`); those not on screen
    /// count as unread, chat lines seen live only.
    fn push(&self, room: &RoomName, new: Vec<Line>, replace: bool) {
        let live = |line: &&Line| line.kind == LineKind::Chat && !line.history;
        if self.away.get_untracked().hidden {
            let others: Vec<&Line> = new.iter().filter(live).filter(|line| !line.mine).collect();
            let mentions = others.iter().filter(|line| line.mention).count();
            if !others.is_empty() {
                self.away.update(|away| {
                    (away.unread, away.mentions) = (away.unread + others.len(), away.mentions + mentions);
                });
            }
            if let Some(mention) = others.iter().rev().find(|line| line.mention) {
                self.mentioned.set(Some((*mention).clone()));
            }
        }
        let unread = new.iter().filter(live).count();
        // Returns whether lines were dropped from the front: older ones can be loaded again.
        let add = |lines: &mut Vec<Line>| {
            if replace {
                lines.clear();
            }
            lines.extend(new);
            let trimmed = lines.len() > MAX_LINES;
            if trimmed {
                lines.drain(..lines.len() - MAX_LINES);
            }
            mark_days(lines);
            trimmed || replace
        };
        if *room == self.current.get_untracked() {
            if self.lines.try_update(add).unwrap_or(false) {
                self.earlier.set(Earlier::More);
            }
            return;
        }
        self.rooms.update_value(|rooms| {
            let data = rooms.entry(room.clone()).or_default();
            if add(&mut data.lines) {
                data.earlier = Earlier::More;
            }
        });
        if unread > 0 {
            self.tabs.update(|tabs| {
                if let Some(tab) = tabs.iter_mut().find(|tab| tab.room == *room) {
                    tab.unread += unread;
                }
            });
        }
    }

    /// A line for this page alone, in `room` (the room on screen when `None`).
    fn push_own(&self, room: Option<RoomName>, text: String) {
        let room = room.unwrap_or_else(|| self.current.get_untracked());
        let line = self.new_line(LineKind::Own, text);
        self.push(&room, vec![line], false);
    }

    /// Whether the page is in `room` (it asked to join it, or was in it).
    fn is_in(&self, room: &RoomName) -> bool {
        self.rooms.with_value(|rooms| rooms.contains_key(room))
    }

    /// The link changed state.
    pub fn on_state(&self, state: ConnState) {
        self.state.set(state);
        if state == ConnState::Online {
            self.ask_for_rooms();
        } else {
            self.node.set(None);
        }
    }

    /// An event from the server.
    pub fn on_event(&self, event: ServerEvent) {
        match event {
            ServerEvent::Hello(hello) => {
                // A new connection: signed in only if its `signed_in` follows.
                self.signed_in_as.set(None);
                self.node.set(Some(hello.node));
                if let Some(limits) = hello.limits {
                    self.limits.set(limits);
                }
            }
            ServerEvent::Older(older) => self.on_older(older),
            // The server greets fresh joins only, not resumed connections.
            ServerEvent::Notice(Notice::Welcome { room, text }) => self.push_own(Some(Self::room_of(room)), text),
            ServerEvent::Notice(Notice::NameSet { name, text }) => {
                self.resuming_name.set_value(None);
                let asked = self.pending_name.get_value().as_ref() == Some(&name);
                self.username.set(Some(name));
                // A name presented again after a reconnect needs no confirmation line.
                if asked {
                    self.pending_name.set_value(None);
                    self.name_hint.set(None);
                    self.message_hint.set(None);
                    self.push_own(None, text);
                    // The room list's counts now hold this user too.
                    self.ask_for_rooms();
                }
            }
            ServerEvent::Notice(Notice::NameLost { text, .. }) => {
                // Someone took the name while this client was cut off: ask for another.
                self.resuming_name.set_value(None);
                self.pending_name.set_value(None);
                self.username.set(None);
                self.name_hint.set(Some(text.clone()));
                self.push_own(None, text);
            }
            ServerEvent::Notice(Notice::Refused { room, text }) => {
                // Perhaps the `history` request awaited (too fast, unavailable): it may be
                // asked again, and one asked twice is answered twice harmlessly.
                if self.earlier.get_untracked() == Earlier::Loading {
                    self.earlier.set(Earlier::More);
                }
                self.on_refused(room, text);
            }
            ServerEvent::Notice(Notice::SignedIn { name, .. }) => self.signed_in_as.set(name),
            ServerEvent::Notice(Notice::RoomLeft { room }) => {
                if self.is_in(&room) && self.current.get_untracked() != room {
                    self.forget_room(&room);
                }
            }
            ServerEvent::Backlog(Backlog { room, kind, lines }) => {
                let room = Self::room_of(room);
                if !self.is_in(&room) {
                    return;
                }
                self.rooms.update_value(|rooms| rooms.entry(room.clone()).or_default().confirmed = true);
                let history = kind != BacklogKind::Resume;
                let mut new: Vec<Line> = Vec::with_capacity(lines.len() + 1);
                if kind == BacklogKind::Reset {
                    new.push(self.new_line(LineKind::Own, MISSED.to_owned()));
                }
                new.extend(lines.into_iter().filter_map(|line| self.room_line(&room, line, history)));
                // After a gap the old lines cannot be continued: start over from the history.
                self.push(&room, new, kind == BacklogKind::Reset);
            }
            ServerEvent::Line(line) => {
                let room = Self::room_of(line.room.clone());
                if self.is_in(&room)
                    && let Some(line) = self.room_line(&room, line, false)
                {
                    self.push(&room, vec![line], false);
                }
            }
            ServerEvent::Presence(PresenceList { room, at, mut users }) => {
                let room = Self::room_of(room);
                if !self.is_in(&room) {
                    return;
                }
                users.sort();
                self.rooms.update_value(|rooms| rooms.entry(room.clone()).or_default().online_at = at);
                self.update_online(&room, |online| *online = users);
            }
            ServerEvent::Rooms(RoomList { rooms }) => self.directory.set(rooms),
            ServerEvent::Message(text) => self.push_own(None, text),
        }
    }

    fn on_refused(&self, room: Option<RoomName>, text: String) {
        // A room the page asked to join and was refused: it is not in it.
        if let Some(room) = room.as_ref()
            && self.rooms.with_value(|rooms| rooms.get(room).is_some_and(|data| !data.confirmed))
        {
            if self.current.get_untracked() == *room {
                self.open_room(&self.other_room(room), None);
            }
            self.forget_room(room);
            self.message_hint.set(Some(text));
            return;
        }
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
}

/// Marks the first line of each day among the room events of `lines`.
fn mark_days(lines: &mut [Line]) {
    let mut previous: Option<DayKey> = None;
    for line in lines {
        let day = line.time.as_ref().map(|time| time.day);
        line.day_start = day.is_some() && day != previous;
        if day.is_some() {
            previous = day;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Hello, PROTOCOL_VERSION};

    /// A reactive owner for a test's signals; they live as long as it does.
    fn reactive() -> Owner {
        let owner = Owner::new_root(None);
        owner.set();
        owner
    }

    /// A store showing the lobby whose link is online, with the events it sends.
    fn online() -> (Chat, UnboundedReceiver<ClientEvent>) {
        let (chat, mut rx) = Chat::new(RoomName::lobby());
        chat.on_state(ConnState::Online);
        assert_eq!(rx.try_recv().ok(), Some(ClientEvent::ListRooms), "asks for the room list when online");
        (chat, rx)
    }

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    fn room(raw: &str) -> RoomName {
        RoomName::parse(raw).unwrap()
    }

    fn line_in(room_name: &str, pos: &str, event: RoomEvent) -> RoomLine {
        RoomLine { room: Some(room(room_name)), pos: pos.parse().unwrap(), ts: 0, event }
    }

    fn line(pos: &str, event: RoomEvent) -> RoomLine {
        line_in("lobby", pos, event)
    }

    fn backlog(room_name: &str, kind: BacklogKind, lines: Vec<RoomLine>) -> ServerEvent {
        ServerEvent::Backlog(Backlog { room: Some(room(room_name)), kind, lines })
    }

    fn chat_line(text: &str) -> RoomEvent {
        RoomEvent::Chat { author: "bob".into(), text: text.into() }
    }

    fn bodies(chat: &Chat) -> Vec<String> {
        chat.lines.get_untracked().iter().map(Line::body).collect()
    }

    #[test]
    fn paths_name_their_room() {
        assert_eq!(room_of_path("/"), RoomName::lobby());
        assert_eq!(room_of_path("/r/ops"), room("ops"));
        assert_eq!(room_of_path("/r/ops/"), room("ops"));
        assert_eq!(room_of_path("/r/Not%20One"), RoomName::lobby());
        assert_eq!(room_of_path("/elsewhere"), RoomName::lobby());
        assert_eq!((path_of_room(&RoomName::lobby()), path_of_room(&room("ops"))), ("/".into(), "/r/ops".into()));
    }

    #[test]
    fn a_name_asked_for_is_pending_until_the_server_answers() {
        let _owner = reactive();
        let (chat, mut sent) = online();
        chat.ask_for_name("  ann ");
        assert_eq!(sent.try_recv().ok(), Some(ClientEvent::SetUsername("ann".into())));
        assert_eq!(chat.username.get_untracked(), None, "not before the server says so");
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        assert_eq!(chat.username.get_untracked(), Some(name("ann")));
        assert_eq!(bodies(&chat), ["Your username is set to ann"]);
        assert_eq!(chat.name_hint.get_untracked(), None);

        // A refusal of the next name keeps the one it has and says why next to the field.
        chat.ask_for_name("bob");
        chat.on_event(ServerEvent::Notice(Notice::Refused { room: None, text: "taken".into() }));
        assert_eq!(chat.username.get_untracked(), Some(name("ann")));
        assert_eq!(chat.name_hint.get_untracked().as_deref(), Some("taken"));
        assert_eq!(chat.message_hint.get_untracked(), None);
        // With nothing pending, a refusal is about a line.
        chat.on_event(ServerEvent::Notice(Notice::Refused { room: None, text: "too fast".into() }));
        assert_eq!(chat.message_hint.get_untracked().as_deref(), Some("too fast"));
    }

    #[test]
    fn nothing_is_sent_without_a_connection_or_a_name() {
        let _owner = reactive();
        let (chat, mut sent) = Chat::new(RoomName::lobby());
        chat.ask_for_name("");
        assert_eq!(chat.name_hint.get_untracked(), Some(Refusal::EmptyName.to_string()));
        chat.ask_for_name("ann");
        assert_eq!(chat.name_hint.get_untracked().as_deref(), Some(NOT_CONNECTED));
        assert!(!chat.send_line("hi"));
        assert_eq!(chat.message_hint.get_untracked(), Some(Refusal::NoUsername.to_string()));
        chat.on_state(ConnState::Online);
        assert_eq!(sent.try_recv().ok(), Some(ClientEvent::ListRooms));
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        assert!(!chat.send_line("   "));
        assert_eq!(chat.message_hint.get_untracked(), Some(Refusal::EmptyMessage.to_string()));
        assert!(chat.send_line("hi"));
        assert_eq!(sent.try_recv().ok(), Some(ClientEvent::Say(Say { room: "lobby".into(), text: "hi".into() })));
        assert!(sent.try_recv().is_err(), "nothing else went out");
    }

    #[test]
    fn a_reconnect_presents_the_name_and_each_rooms_position_and_resumes_quietly() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.set_key("0123456789abcdef".parse().unwrap());
        chat.ask_for_name("ann");
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        chat.on_event(backlog("lobby", BacklogKind::History, vec![]));
        chat.on_event(ServerEvent::Line(line("5-1", chat_line("hi"))));
        chat.open_room(&room("ops"), None);

        let auth = chat.auth();
        assert_eq!(auth.v, PROTOCOL_VERSION);
        let Some(After::PerRoom(after)) = auth.after else { panic!("a position per room") };
        assert_eq!(after["lobby"], Some(Presented::Valid(Position { ms: 5, seq: 1 })));
        assert_eq!(after["ops"], None, "ops: nothing seen yet");
        assert_eq!(auth.name.as_deref(), Some("ann"));
        assert!(auth.key.is_some());
        chat.open_room(&RoomName::lobby(), None);
        let before = bodies(&chat);
        chat.on_event(ServerEvent::Hello(Hello { node: "n2".into(), limits: None }));
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        chat.on_event(backlog("lobby", BacklogKind::Resume, vec![]));
        assert_eq!(bodies(&chat), before, "no confirmation line for a name presented again");
        assert_eq!(chat.node.get_untracked().as_deref(), Some("n2"));
    }

    #[test]
    fn rooms_keep_their_own_logs_lists_and_unread_lines() {
        let _owner = reactive();
        let (chat, mut sent) = online();
        chat.on_event(backlog("lobby", BacklogKind::History, vec![line("1-0", chat_line("in the lobby"))]));
        chat.open_room(&room("ops"), Some(120));
        assert_eq!(sent.try_recv().ok(), Some(ClientEvent::Join(JoinRoom { room: "ops".into(), after: None })));
        assert_eq!(chat.scroll_to.get_untracked(), None, "a new room starts at its end");
        chat.on_event(backlog("ops", BacklogKind::History, vec![line_in("ops", "2-0", chat_line("in ops"))]));
        chat.on_event(ServerEvent::Presence(PresenceList {
            room: Some(room("ops")),
            at: "2-0".parse().unwrap(),
            users: vec!["bob".into()],
        }));
        assert_eq!(bodies(&chat), ["bob: in ops"]);
        assert_eq!(chat.online.get_untracked(), ["bob"]);
        // Lines of the lobby while ops is on screen: unread there, not in ops's log.
        chat.on_event(ServerEvent::Line(line("3-0", chat_line("one"))));
        chat.on_event(ServerEvent::Line(line("4-0", RoomEvent::Joined { author: "cy".into() })));
        chat.on_event(ServerEvent::Line(line("5-0", chat_line("two"))));
        assert_eq!(bodies(&chat), ["bob: in ops"]);
        let unread = |chat: &Chat, name: &str| {
            chat.tabs.get_untracked().iter().find(|t| t.room.as_str() == name).map(|t| t.unread)
        };
        assert_eq!(unread(&chat, "lobby"), Some(2), "chat lines only");
        // Back to the lobby: its log, where it was scrolled, nothing unread.
        chat.open_room(&RoomName::lobby(), Some(40));
        assert_eq!(bodies(&chat), ["bob: in the lobby", "bob: one", "cy joined the chatroom.", "bob: two"]);
        assert_eq!(chat.scroll_to.get_untracked(), Some(120));
        assert_eq!(unread(&chat, "lobby"), Some(0));
        assert!(sent.try_recv().is_err(), "the lobby was joined already");
        // Leaving ops: it is gone from the tabs and the server is told.
        chat.leave_room(&room("ops"));
        assert_eq!(sent.try_recv().ok(), Some(ClientEvent::Leave(LeaveRoom { room: "ops".into() })));
        assert_eq!(chat.tabs.get_untracked().iter().map(|t| t.room.to_string()).collect::<Vec<_>>(), ["lobby"]);
        chat.on_event(ServerEvent::Line(line_in("ops", "6-0", chat_line("after leaving"))));
        assert!(!bodies(&chat).iter().any(|body| body.contains("after leaving")));
    }

    #[test]
    fn a_room_the_server_refuses_is_given_up_with_its_reason() {
        let _owner = reactive();
        let (chat, _sent) = online();
        assert_eq!(chat.open_room_named("Bad Room", None), None);
        assert_eq!(chat.message_hint.get_untracked(), Some(Refusal::RoomNameNotPlain.to_string()));
        chat.open_room_named("full", None);
        assert_eq!(chat.current.get_untracked(), room("full"));
        let why = "No new room can be opened: the chat holds as many as it may (3).";
        chat.on_event(ServerEvent::Notice(Notice::Refused { room: Some(room("full")), text: why.into() }));
        assert_eq!(chat.current.get_untracked(), RoomName::lobby(), "back where it was");
        assert_eq!(chat.message_hint.get_untracked().as_deref(), Some(why));
        assert_eq!(chat.tabs.get_untracked().len(), 1);
    }

    #[test]
    fn a_name_taken_while_away_is_given_up_and_asked_for_again() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.ask_for_name("ann");
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        let _ = chat.auth();
        chat.on_event(ServerEvent::Notice(Notice::Refused {
            room: None,
            text: "Username \"ann\" is already taken.".into(),
        }));
        assert_eq!(chat.username.get_untracked(), None);
        assert_eq!(chat.name_hint.get_untracked().as_deref(), Some("Username \"ann\" is already taken."));
        assert_eq!(chat.message_hint.get_untracked(), None);
    }

    #[test]
    fn a_name_lost_while_cut_off_is_given_up_and_asked_for_again() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.ask_for_name("ann");
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        chat.on_event(ServerEvent::Notice(Notice::name_lost(&name("ann"))));
        assert_eq!(chat.username.get_untracked(), None);
        let text = "Your username ann was taken while you were away. Choose another one.";
        assert_eq!(chat.name_hint.get_untracked().as_deref(), Some(text));
        assert_eq!(bodies(&chat).last().map(String::as_str), Some(text));
        assert!(!chat.send_line("hi"), "no line without a name");
    }

    #[test]
    fn a_reset_starts_the_log_over_and_presence_follows_newer_lines_only() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.on_event(ServerEvent::Message("old".into()));
        let joined = |author: &str| RoomEvent::Joined { author: author.into() };
        chat.on_event(backlog(
            "lobby",
            BacklogKind::Reset,
            vec![line("1-0", joined("ann")), line("2-0", joined("bob"))],
        ));
        assert_eq!(bodies(&chat), [MISSED, "ann joined the chatroom.", "bob joined the chatroom."]);
        assert!(chat.lines.get_untracked()[1].history);
        // The list reflects up to 2-0: the backlog's joins are in it already, later ones change it.
        chat.on_event(ServerEvent::Presence(PresenceList {
            room: Some(RoomName::lobby()),
            at: "2-0".parse().unwrap(),
            users: vec!["bob".into(), "ann".into()],
        }));
        assert_eq!(chat.online.get_untracked(), ["ann", "bob"]);
        chat.on_event(ServerEvent::Line(line("3-0", RoomEvent::Renamed { author: "cy".into(), from: "ann".into() })));
        chat.on_event(ServerEvent::Line(line("4-0", RoomEvent::Left { author: "bob".into() })));
        assert_eq!(chat.online.get_untracked(), ["cy"]);
        let Some(After::PerRoom(after)) = chat.auth().after else { panic!("per room") };
        assert_eq!(after["lobby"], Some(Presented::Valid(Position { ms: 4, seq: 0 })));
    }

    fn line_at(pos: &str, ts: u64, text: &str) -> RoomLine {
        RoomLine { room: Some(RoomName::lobby()), pos: pos.parse().unwrap(), ts, event: chat_line(text) }
    }

    #[test]
    fn older_lines_go_before_the_log_until_the_beginning() {
        let _owner = reactive();
        let (chat, mut sent) = online();
        chat.on_event(backlog("lobby", BacklogKind::History, vec![line("10-0", chat_line("ten"))]));
        assert!(chat.ask_for_older());
        let Ok(ClientEvent::History(request)) = sent.try_recv() else { panic!("a history request") };
        assert_eq!(
            (request.room.as_deref(), request.before, request.limit),
            (Some("lobby"), "10-0".parse().unwrap(), OLDER_PAGE)
        );
        assert_eq!(chat.earlier.get_untracked(), Earlier::Loading);
        assert!(!chat.ask_for_older(), "one request at a time");
        chat.on_event(ServerEvent::Older(Older {
            room: Some(RoomName::lobby()),
            lines: vec![
                line("8-0", chat_line("eight")),
                line("9-0", chat_line("nine")),
                line("10-0", chat_line("dup")),
            ],
            complete: false,
        }));
        assert_eq!(bodies(&chat), ["bob: eight", "bob: nine", "bob: ten"], "before the log, nothing twice");
        assert!(chat.lines.get_untracked()[0].history);
        assert_eq!(chat.earlier.get_untracked(), Earlier::More);
        // A refused request may be asked again.
        assert!(chat.ask_for_older());
        chat.on_event(ServerEvent::Notice(Notice::refused(Some(&RoomName::lobby()), &Refusal::HistoryTooFast)));
        assert_eq!(chat.earlier.get_untracked(), Earlier::More);
        assert!(chat.ask_for_older());
        chat.on_event(ServerEvent::Older(Older { room: Some(RoomName::lobby()), lines: vec![], complete: true }));
        assert_eq!(chat.earlier.get_untracked(), Earlier::Beginning);
        assert!(!chat.ask_for_older(), "nothing older to ask for");
        // The resume position stays the newest line's.
        let Some(After::PerRoom(after)) = chat.auth().after else { panic!("per room") };
        assert_eq!(after["lobby"], Some(Presented::Valid(Position { ms: 10, seq: 0 })));
    }

    #[test]
    fn each_day_starts_with_a_separator() {
        let _owner = reactive();
        let (chat, _sent) = online();
        let day = 86_400_000;
        chat.on_event(backlog(
            "lobby",
            BacklogKind::History,
            vec![line_at("1-0", 5 * day + 10, "a"), line_at("2-0", 5 * day + 20, "b"), line_at("3-0", 6 * day, "c")],
        ));
        chat.on_event(ServerEvent::Message("own line".into()));
        chat.on_event(ServerEvent::Line(line_at("4-0", 6 * day + 5, "d")));
        let starts: Vec<bool> = chat.lines.get_untracked().iter().map(|line| line.day_start).collect();
        assert_eq!(starts, [true, false, true, false, false]);
    }

    #[test]
    fn lines_that_come_while_hidden_count_in_the_title_and_mentions_are_marked() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.ask_for_name("ann");
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        chat.on_event(backlog("lobby", BacklogKind::History, vec![]));
        chat.set_hidden(true);
        chat.on_event(ServerEvent::Line(line("1-0", chat_line("hello all"))));
        chat.on_event(ServerEvent::Line(line("2-0", chat_line("@ann look"))));
        chat.on_event(ServerEvent::Line(line("3-0", RoomEvent::Chat { author: "ann".into(), text: "mine".into() })));
        chat.on_event(ServerEvent::Line(line("4-0", RoomEvent::Joined { author: "cy".into() })));
        let away = chat.away.get_untracked();
        assert_eq!((away.unread, away.mentions), (2, 1), "others' chat lines only");
        assert_eq!(away.title("Online Chatroom"), "(2) Online Chatroom");
        let marked: Vec<String> =
            chat.lines.get_untracked().into_iter().filter(|line| line.mention).map(|line| line.text).collect();
        assert_eq!(marked, ["@ann look"]);
        assert_eq!(chat.mentioned.get_untracked().map(|line| line.text), Some("@ann look".into()));
        chat.set_hidden(false);
        assert_eq!(chat.away.get_untracked().title("Online Chatroom"), "Online Chatroom");
    }

    #[test]
    fn the_servers_limits_hold_in_the_composer() {
        let _owner = reactive();
        let (chat, _sent) = online();
        let limits = Limits { name_chars: 32, message_chars: 10 };
        chat.on_event(ServerEvent::Hello(Hello { node: "n1".into(), limits: Some(limits) }));
        assert_eq!(chat.limits.get_untracked(), limits);
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        assert!(!chat.send_line("more than ten"));
        assert_eq!(chat.message_hint.get_untracked(), Some(Refusal::MessageTooLong { max: 10 }.to_string()));
    }

    #[test]
    fn a_deleted_line_shows_as_deleted() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.on_event(backlog(
            "lobby",
            BacklogKind::History,
            vec![line("1-0", chat_line("spam")), line("2-0", chat_line("ok"))],
        ));
        chat.on_event(ServerEvent::Line(line("3-0", RoomEvent::Deleted { line: "1-0".parse().unwrap() })));
        assert_eq!(bodies(&chat), [DELETED, "bob: ok"], "in place, without its author; the deletion adds no line");
        assert_eq!(chat.lines.get_untracked()[0].kind, LineKind::Deleted);
        let Some(After::PerRoom(after)) = chat.auth().after else { panic!("per room") };
        assert_eq!(after["lobby"], Some(Presented::Valid(Position { ms: 3, seq: 0 })), "resumes after the deletion");
    }

    #[test]
    fn a_sign_in_holds_for_its_connection_only() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.on_event(ServerEvent::Hello(Hello { node: "n1".into(), limits: None }));
        chat.on_event(ServerEvent::Notice(Notice::SignedIn { name: Some(name("Ada")), expires: 1 }));
        assert_eq!(chat.signed_in_as.get_untracked(), Some(name("Ada")));
        // Connected again without a token (its fetch failed): the name field is back.
        chat.on_event(ServerEvent::Hello(Hello { node: "n2".into(), limits: None }));
        assert_eq!(chat.signed_in_as.get_untracked(), None);
    }
}

//! The page's state and how server events change it: the log, the name (accepted,
//! asked for, or presented again after a reconnect), who is online, and the position to
//! resume from. Plain reactive signals without a view, so it is tested natively.
//!
//! Invariant: `last_pos` is the position of the newest room event shown, and lines come
//! in the room's order, so a reconnect that presents it misses nothing and repeats nothing.

use crate::protocol::session::ConnState;
use crate::protocol::{
    After, Backlog, BacklogKind, ClientAuth, ClientEvent, ClientKey, DEFAULT_MAX_MESSAGE_CHARS, MessageText, Notice,
    Position, PresenceList, Presented, Refusal, RoomEvent, RoomLine, ServerEvent, Username,
};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use leptos::prelude::*;

/// How many lines the page keeps; older ones scroll away for good.
const MAX_LINES: usize = 500;

/// Shown when the server cannot continue the log from where it was (the page was away
/// too long, or the chat lost messages): it starts over from the recent history.
pub const MISSED: &str = "You may have missed messages: here is the recent history.";

/// Shown when something is typed while there is no connection.
pub const NOT_CONNECTED: &str = "Not connected: wait until the chat is online.";

/// What a line in the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Someone's chat line.
    Chat,
    /// A room notice (someone joined, left or changed name).
    Room,
    /// Something for this page alone (welcome, confirmations).
    Own,
}

/// One line in the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Unique within the page, for the view's keyed list.
    pub id: u64,
    /// What it is.
    pub kind: LineKind,
    /// The text ("ann: hi", "ann joined the chatroom.").
    pub body: String,
    /// The server's time of a room event, as the reader's clock shows it.
    pub time: Option<String>,
    /// From the history sent on joining, not seen live.
    pub history: bool,
}

/// Everything the page's view and handlers share.
#[derive(Clone, Copy)]
pub struct Chat {
    /// The link's state.
    pub state: RwSignal<ConnState>,
    /// The log, oldest first.
    pub lines: RwSignal<Vec<Line>>,
    next_line_id: StoredValue<u64>,
    /// The name the server accepted; presented again when reconnecting.
    pub username: RwSignal<Option<Username>>,
    /// A name this page asked for and the server has not answered yet.
    pending_name: StoredValue<Option<Username>>,
    /// The position of the newest room event shown: a reconnect resumes after it.
    last_pos: StoredValue<Option<Position>>,
    /// The node serving this connection, from its `hello`.
    pub node: RwSignal<Option<String>>,
    /// The names online, sorted.
    pub online: RwSignal<Vec<String>>,
    /// The position `online` reflects: only room events after it change the list.
    online_at: StoredValue<Position>,
    /// A name presented again on reconnecting, not answered yet.
    resuming_name: StoredValue<Option<Username>>,
    /// This browser's client key: its tabs and reconnects are one user.
    key: StoredValue<Option<ClientKey>>,
    /// Why the last name asked for was not taken.
    pub name_hint: RwSignal<Option<String>>,
    /// Why the last line was not sent.
    pub message_hint: RwSignal<Option<String>>,
    outbox: StoredValue<UnboundedSender<ClientEvent>>,
}

impl Chat {
    /// A fresh store, and the receiving end of what it asks to send.
    pub fn new() -> (Self, UnboundedReceiver<ClientEvent>) {
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

    /// The person sends the line in `draft`; true when it went out (clear the field).
    pub fn send_line(&self, draft: &str) -> bool {
        if self.username.get_untracked().is_none() {
            self.message_hint.set(Some(Refusal::NoUsername.to_string()));
            return false;
        }
        let text = match MessageText::parse(draft, DEFAULT_MAX_MESSAGE_CHARS) {
            Ok(text) => text,
            Err(refusal) => {
                self.message_hint.set(Some(refusal.to_string()));
                return false;
            }
        };
        if self.send(ClientEvent::Message(text.into_string())) {
            self.message_hint.set(None);
            true
        } else {
            self.message_hint.set(Some(NOT_CONNECTED.to_owned()));
            false
        }
    }

    /// The CONNECT auth of the next connection: who we are and what we saw last.
    pub fn auth(&self) -> ClientAuth {
        let name = self.username.get_untracked();
        self.resuming_name.set_value(name.clone());
        ClientAuth {
            after: self.last_pos.get_value().map(|pos| After::One(Presented::Valid(pos))),
            name: name.map(|name| name.to_string()),
            key: self.key.get_value().map(Presented::Valid),
            ..ClientAuth::v1()
        }
    }

    fn new_line(&self, kind: LineKind, body: String, time: Option<String>, history: bool) -> Line {
        let id = self.next_line_id.get_value();
        self.next_line_id.set_value(id + 1);
        Line { id, kind, body, time, history }
    }

    fn room_line(&self, line: RoomLine, history: bool) -> Line {
        if line.pos > self.online_at.get_value() {
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

    /// The link changed state.
    pub fn on_state(&self, state: ConnState) {
        self.state.set(state);
        if state != ConnState::Online {
            self.node.set(None);
        }
    }

    /// An event from the server.
    pub fn on_event(&self, event: ServerEvent) {
        match event {
            ServerEvent::Hello(hello) => self.node.set(Some(hello.node)),
            // The server greets fresh joins only, not resumed connections.
            ServerEvent::Notice(Notice::Welcome { text, .. }) => self.push_own(text),
            ServerEvent::Notice(Notice::NameSet { name, text }) => {
                self.resuming_name.set_value(None);
                let asked = self.pending_name.get_value().as_ref() == Some(&name);
                self.username.set(Some(name));
                // A name presented again after a reconnect needs no confirmation line.
                if asked {
                    self.pending_name.set_value(None);
                    self.name_hint.set(None);
                    self.message_hint.set(None);
                    self.push_own(text);
                }
            }
            ServerEvent::Notice(Notice::NameLost { text, .. }) => {
                // Someone took the name while this client was cut off: ask for another.
                self.resuming_name.set_value(None);
                self.pending_name.set_value(None);
                self.username.set(None);
                self.name_hint.set(Some(text.clone()));
                self.push_own(text);
            }
            ServerEvent::Notice(Notice::Refused { text, .. }) => {
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
            ServerEvent::Backlog(Backlog { kind, lines, .. }) => {
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
            ServerEvent::Presence(PresenceList { at, mut users, .. }) => {
                users.sort();
                self.online_at.set_value(at);
                self.online.set(users);
            }
            ServerEvent::Message(text) => self.push_own(text),
            // The page speaks version 1 and is in the lobby only: it never leaves a room.
            ServerEvent::Notice(Notice::RoomLeft { .. }) | ServerEvent::Rooms(_) => {}
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Hello, PROTOCOL_V1};

    /// A reactive owner for a test's signals; they live as long as it does.
    fn reactive() -> Owner {
        let owner = Owner::new_root(None);
        owner.set();
        owner
    }

    /// A store whose link is online, with the events it sends.
    fn online() -> (Chat, UnboundedReceiver<ClientEvent>) {
        let (chat, rx) = Chat::new();
        chat.on_state(ConnState::Online);
        (chat, rx)
    }

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    fn line(pos: &str, event: RoomEvent) -> RoomLine {
        RoomLine { room: None, pos: pos.parse().unwrap(), ts: 0, event }
    }

    fn bodies(chat: &Chat) -> Vec<String> {
        chat.lines.get_untracked().into_iter().map(|line| line.body).collect()
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
        let (chat, mut sent) = Chat::new();
        chat.ask_for_name("");
        assert_eq!(chat.name_hint.get_untracked(), Some(Refusal::EmptyName.to_string()));
        chat.ask_for_name("ann");
        assert_eq!(chat.name_hint.get_untracked().as_deref(), Some(NOT_CONNECTED));
        assert!(!chat.send_line("hi"));
        assert_eq!(chat.message_hint.get_untracked(), Some(Refusal::NoUsername.to_string()));
        chat.on_state(ConnState::Online);
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        assert!(!chat.send_line("   "));
        assert_eq!(chat.message_hint.get_untracked(), Some(Refusal::EmptyMessage.to_string()));
        assert!(chat.send_line("hi"));
        assert_eq!(sent.try_recv().ok(), Some(ClientEvent::Message("hi".into())));
        assert!(sent.try_recv().is_err(), "nothing else went out");
    }

    #[test]
    fn a_reconnect_presents_the_name_and_position_and_resumes_quietly() {
        let _owner = reactive();
        let (chat, _sent) = online();
        chat.set_key("0123456789abcdef".parse().unwrap());
        chat.ask_for_name("ann");
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        chat.on_event(ServerEvent::Line(line("5-1", RoomEvent::Chat { author: "bob".into(), text: "hi".into() })));

        let auth = chat.auth();
        assert_eq!(auth.v, PROTOCOL_V1);
        assert_eq!(auth.after, Some(After::One(Presented::Valid(Position { ms: 5, seq: 1 }))));
        assert_eq!(auth.name.as_deref(), Some("ann"));
        assert!(auth.key.is_some());
        let before = bodies(&chat);
        chat.on_event(ServerEvent::Hello(Hello { node: "n2".into() }));
        chat.on_event(ServerEvent::Backlog(Backlog { room: None, kind: BacklogKind::Resume, lines: vec![] }));
        chat.on_event(ServerEvent::Notice(Notice::name_set(&name("ann"))));
        assert_eq!(bodies(&chat), before, "no confirmation line for a name presented again");
        assert_eq!(chat.node.get_untracked().as_deref(), Some("n2"));
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
        chat.on_event(ServerEvent::Backlog(Backlog {
            room: None,
            kind: BacklogKind::Reset,
            lines: vec![line("1-0", joined("ann")), line("2-0", joined("bob"))],
        }));
        assert_eq!(bodies(&chat), [MISSED, "ann joined the chatroom.", "bob joined the chatroom."]);
        assert!(chat.lines.get_untracked()[1].history);
        // The list reflects up to 2-0: the backlog's joins are in it already, later ones change it.
        chat.on_event(ServerEvent::Presence(PresenceList {
            room: None,
            at: "2-0".parse().unwrap(),
            users: vec!["bob".into(), "ann".into()],
        }));
        assert_eq!(chat.online.get_untracked(), ["ann", "bob"]);
        chat.on_event(ServerEvent::Line(line("3-0", RoomEvent::Renamed { author: "cy".into(), from: "ann".into() })));
        chat.on_event(ServerEvent::Line(line("4-0", RoomEvent::Left { author: "bob".into() })));
        assert_eq!(chat.online.get_untracked(), ["cy"]);
        assert_eq!(chat.auth().after, Some(After::One(Presented::Valid(Position { ms: 4, seq: 0 }))));
    }
}

//! The arguments of the events: what a chatroom client presents on connecting, the room
//! events everyone sees in one order, and what one client is told alone.

use super::ids::{ClientKey, Position, Presented};
use super::rules::{RoomName, Username};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol version this build's chatroom clients announce: rooms.
pub const PROTOCOL_VERSION: u32 = 2;
/// The first structured protocol: one room (the lobby), payloads without a `room`.
pub const PROTOCOL_V1: u32 = 1;

/// What a client shows in place of a line an operator deleted.
pub const DELETED: &str = "message deleted";

/// Sent to a client alone when it connects.
pub const WELCOME: &str = "Welcome to the chatroom!";

/// The reply to a client whose username was stored.
pub fn username_set(name: &str) -> String {
    format!("Your username is set to {name}")
}

/// What a client is told when another user took its name while it was cut off from the
/// room (its node was taken for dead, or Redis lost its data).
pub fn username_lost(name: &str) -> String {
    format!("Your username {name} was taken while you were away. Choose another one.")
}

/// What a chatroom client puts in its Socket.IO CONNECT auth payload. A client that sends
/// none is a legacy client and receives only the legacy `message` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuth {
    /// The protocol version the client speaks.
    pub v: u32,
    /// Where the client stands: resume after it. A position that is not one is answered
    /// with a `reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
    /// The name the client had: it is set again on the new connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The browser's random client key: connections with the same key are one user
    /// (one name, one entry in the presence list), and a user that comes back within
    /// the grace period was never gone. One that is not a key is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Presented<ClientKey>>,
    /// A connection token (a JWT the application's backend signed): its `sub` is the
    /// user instead of `key`, and its `name`, when set, the user's fixed name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl ClientAuth {
    /// A chatroom client's auth of this protocol version with nothing else presented.
    pub fn new() -> Self {
        Self { v: PROTOCOL_VERSION, after: None, name: None, key: None, token: None }
    }

    /// A version 1 client's auth (one room, payloads without a `room`).
    pub fn v1() -> Self {
        Self { v: PROTOCOL_V1, ..Self::new() }
    }

    /// Whether the client speaks the rooms protocol (version 2 or later).
    pub fn has_rooms(&self) -> bool {
        self.v >= PROTOCOL_VERSION
    }
}

/// Where a client stood when its connection dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum After {
    /// Version 1: the position of the last room event it saw.
    One(Presented<Position>),
    /// Version 2: the rooms it was in, each with the position of the last event it saw
    /// there (`null` when it saw none: it joins with the history). It is in these rooms
    /// again as soon as it is connected.
    PerRoom(BTreeMap<String, Option<Presented<Position>>>),
}

/// A version 2 client's `join`: be in a room, and get its backlog and who is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRoom {
    /// The room (it is opened if nobody was in it yet).
    pub room: String,
    /// The position of the last event the client saw in it: resume after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Presented<Position>>,
}

/// A version 2 client's `leave`: no more events of this room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRoom {
    /// The room.
    pub room: String,
}

/// The rooms in use, for a version 2 client that asked (`rooms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    /// The rooms, most people online first, then by name.
    pub rooms: Vec<RoomCount>,
}

/// One room of a [`RoomList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCount {
    /// The room.
    pub room: RoomName,
    /// How many users are in it (as of a few seconds ago at most).
    pub online: usize,
}

/// A version 2 client's chat line, for one of the rooms it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Say {
    /// The room.
    pub room: String,
    /// The line.
    pub text: String,
}

impl Default for ClientAuth {
    fn default() -> Self {
        Self::new()
    }
}

/// Who is online, as of a position: room events after `at` (joined, left, renamed)
/// change the list; those up to `at` are already in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceList {
    /// The room (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    /// The position of the newest room event the list reflects.
    pub at: Position,
    /// The names of the online users, sorted.
    pub users: Vec<String>,
}

/// A room event with its place in the room's one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLine {
    /// The room (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    /// The room-wide position (`millis-seq`): resume after it.
    pub pos: Position,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: RoomEvent,
}

/// What a [`Backlog`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacklogKind {
    /// The recent history, for a client that joins.
    History,
    /// Every event after the position the client presented, none left out.
    Resume,
    /// The presented position is older than the history the room keeps (or not a
    /// position): events were missed, and this is the recent history instead.
    Reset,
}

impl BacklogKind {
    /// A short stable name (metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            BacklogKind::History => "history",
            BacklogKind::Resume => "resume",
            BacklogKind::Reset => "reset",
        }
    }
}

/// Room events sent on connecting, before any live [`RoomLine`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// The room (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    /// Which kind of backlog this is.
    pub kind: BacklogKind,
    /// The events, oldest first.
    pub lines: Vec<RoomLine>,
}

/// A message to one chatroom client alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Sent on connecting (version 1), or on joining a room fresh (version 2).
    Welcome {
        /// The room joined (version 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomName>,
        /// The greeting.
        text: String,
    },
    /// The client's username was stored.
    NameSet {
        /// The name as stored (trimmed).
        name: Username,
        /// The legacy confirmation text.
        text: String,
    },
    /// An input of the client's was refused.
    Refused {
        /// The room it was about, if any (version 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomName>,
        /// Why, as the legacy text.
        text: String,
    },
    /// The client left a room (version 2): no more events of it follow.
    RoomLeft {
        /// The room.
        room: RoomName,
    },
    /// The client's connection token was accepted (on connecting, or a `refresh`): who
    /// it is signed in as, until when.
    SignedIn {
        /// The name its token fixes, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Username>,
        /// When the token expires, in seconds since the Unix epoch: send a `refresh`
        /// before, or the connection is closed then.
        expires: u64,
    },
    /// Another user took the client's name while it was cut off from the room: it has
    /// no name until it sets one.
    NameLost {
        /// The name it had.
        name: Username,
        /// The legacy text.
        text: String,
    },
}

impl Notice {
    /// The greeting on connecting.
    pub fn welcome() -> Self {
        Notice::Welcome { room: None, text: WELCOME.to_owned() }
    }

    /// The refusal of an input, about `room` if any.
    pub fn refused(room: Option<&RoomName>, refusal: &super::Refusal) -> Self {
        Notice::Refused { room: room.cloned(), text: refusal.to_string() }
    }

    /// The same notice about `room` (for version 2 clients; others get it as it is).
    pub fn in_room(self, room: Option<&RoomName>) -> Self {
        match self {
            Notice::Welcome { text, .. } => Notice::Welcome { room: room.cloned(), text },
            Notice::Refused { text, .. } => Notice::Refused { room: room.cloned(), text },
            other => other,
        }
    }

    /// The confirmation that the client's name is `name`.
    pub fn name_set(name: &Username) -> Self {
        Notice::NameSet { name: name.clone(), text: username_set(name.as_str()) }
    }

    /// The notice that the client's name `name` was taken while it was away.
    pub fn name_lost(name: &Username) -> Self {
        Notice::NameLost { name: name.clone(), text: username_lost(name.as_str()) }
    }

    /// The text a legacy client gets for the same answer.
    pub fn text(&self) -> &str {
        match self {
            Notice::Welcome { text, .. }
            | Notice::NameSet { text, .. }
            | Notice::Refused { text, .. }
            | Notice::NameLost { text, .. } => text,
            Notice::RoomLeft { .. } | Notice::SignedIn { .. } => "",
        }
    }
}

/// The `hello` event's payload: which node serves this connection, and the limits of
/// what a client may send there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's name.
    pub node: String,
    /// The limits the client's fields should enforce (absent from servers before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// The longest name and line a server takes, in characters (as `hello` tells them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The longest username.
    pub name_chars: usize,
    /// The longest chat line.
    pub message_chars: usize,
}

/// A `refresh`: the client's fresh connection token, for the same user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    /// The token.
    pub token: String,
}

/// The most lines one `history` request may ask for.
pub const MAX_OLDER_LINES: usize = 100;

/// A chatroom client's `history`: the lines of a room it is in that came before a
/// position, newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The room (version 2; version 1 reads the lobby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The position of the oldest line the client has: the answer holds lines before it.
    pub before: Position,
    /// How many lines at most, 1 to [`MAX_OLDER_LINES`].
    pub limit: usize,
}

/// The answer to a `history` request: the room's lines just before the asked position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Older {
    /// The room (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    /// The lines, oldest first: fewer than asked when the packet would pass its bound.
    pub lines: Vec<RoomLine>,
    /// Whether these reach the room's beginning (as far as the room keeps it): nothing
    /// older is left to ask for.
    pub complete: bool,
}

/// Something everyone in the room sees, in the room's one order. Authors stay plain text
/// here: a stored event is shown as it was written, even if the name rules change later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A chat line.
    Chat {
        /// Who wrote it.
        author: String,
        /// What they wrote, unaltered.
        text: String,
    },
    /// A user took a name and so appeared in the presence list.
    Joined {
        /// Who joined.
        author: String,
    },
    /// A user changed its name.
    Renamed {
        /// The new name.
        author: String,
        /// The name it had.
        from: String,
    },
    /// A named user left: its last connection closed (after the grace period for
    /// chatroom clients with a key).
    Left {
        /// Who left.
        author: String,
    },
    /// An operator deleted a line: it is gone from the room's history, and a client
    /// that shows it shows "message deleted" instead.
    Deleted {
        /// The position of the deleted line.
        line: Position,
    },
}

impl RoomEvent {
    /// The line a person reads for this event.
    pub fn text(&self) -> String {
        match self {
            RoomEvent::Chat { author, text } => format!("{author}: {text}"),
            RoomEvent::Joined { author } => format!("{author} joined the chatroom."),
            RoomEvent::Renamed { author, from } => format!("{from} is now known as {author}."),
            RoomEvent::Left { author } => format!("{author} left the chatroom."),
            RoomEvent::Deleted { .. } => DELETED.to_owned(),
        }
    }

    /// The string a legacy client receives for this event; it receives none for the
    /// events the replaced service did not announce (joins and renames).
    pub fn legacy_text(&self) -> Option<String> {
        match self {
            RoomEvent::Chat { .. } | RoomEvent::Left { .. } => Some(self.text()),
            // Legacy clients showed the line already; the replaced service never deleted.
            RoomEvent::Joined { .. } | RoomEvent::Renamed { .. } | RoomEvent::Deleted { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_has_the_documented_shape() {
        assert_eq!(serde_json::to_string(&ClientAuth::v1()).unwrap(), r#"{"v":1}"#);
        assert_eq!(serde_json::to_string(&ClientAuth::new()).unwrap(), r#"{"v":2}"#);
        let auth: ClientAuth =
            serde_json::from_str(r#"{"v":1,"after":"5-1","name":"ann","key":"0123456789abcdef"}"#).unwrap();
        assert_eq!(auth.after, Some(After::One(Presented::Valid(Position { ms: 5, seq: 1 }))));
        assert!(!auth.has_rooms());
        assert_eq!(auth.name.as_deref(), Some("ann"));
        assert_eq!(auth.key.as_ref().and_then(Presented::valid).map(ClientKey::as_str), Some("0123456789abcdef"));
        // A bad field is kept apart; the rest of the payload still counts.
        let auth: ClientAuth = serde_json::from_str(r#"{"v":1,"after":"x","key":"k1"}"#).unwrap();
        assert_eq!(
            (auth.after, auth.key),
            (Some(After::One(Presented::Invalid("x".into()))), Some(Presented::Invalid("k1".into())))
        );
        // Version 2: a position per room, null for a room joined without one.
        let auth: ClientAuth = serde_json::from_str(r#"{"v":2,"after":{"lobby":"5-1","ops":null}}"#).unwrap();
        assert!(auth.has_rooms());
        let Some(After::PerRoom(rooms)) = auth.after else { panic!("per room") };
        assert_eq!(rooms["lobby"], Some(Presented::Valid(Position { ms: 5, seq: 1 })));
        assert_eq!(rooms["ops"], None);
    }

    #[test]
    fn version_2_payloads_name_their_room() {
        let ops = RoomName::parse("ops").unwrap();
        let line = RoomLine {
            room: Some(ops.clone()),
            pos: Position { ms: 5, seq: 0 },
            ts: 5,
            event: RoomEvent::Left { author: "ann".into() },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"room":"ops","pos":"5-0","ts":5,"kind":"left","author":"ann"}"#
        );
        let refused = Notice::refused(Some(&ops), &super::super::Refusal::NoUsername);
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"kind":"refused","room":"ops","text":"Failed to send the message. Specify a username first."}"#
        );
        assert_eq!(
            serde_json::to_string(&Notice::RoomLeft { room: ops }).unwrap(),
            r#"{"kind":"room_left","room":"ops"}"#
        );
        let join: JoinRoom = serde_json::from_str(r#"{"room":"ops","after":"5-0"}"#).unwrap();
        assert_eq!(join.after, Some(Presented::Valid(Position { ms: 5, seq: 0 })));
    }

    #[test]
    fn room_events_render_the_legacy_strings() {
        let chat = RoomEvent::Chat { author: "ann".into(), text: "hello: world".into() };
        assert_eq!(chat.legacy_text().as_deref(), Some("ann: hello: world"));
        let left = RoomEvent::Left { author: "ann".into() };
        assert_eq!(left.legacy_text().as_deref(), Some("ann left the chatroom."));
        // The replaced service announced neither joins nor renames.
        let joined = RoomEvent::Joined { author: "ann".into() };
        assert_eq!((joined.legacy_text(), joined.text().as_str()), (None, "ann joined the chatroom."));
        let renamed = RoomEvent::Renamed { author: "bob".into(), from: "ann".into() };
        assert_eq!((renamed.legacy_text(), renamed.text().as_str()), (None, "ann is now known as bob."));
        assert_eq!(username_set("ann"), "Your username is set to ann");
        let lost = Notice::name_lost(&Username::parse("ann").unwrap());
        assert_eq!(lost.text(), "Your username ann was taken while you were away. Choose another one.");
        assert_eq!(
            serde_json::to_string(&lost).unwrap(),
            r#"{"kind":"name_lost","name":"ann","text":"Your username ann was taken while you were away. Choose another one."}"#
        );
    }

    #[test]
    fn room_events_round_trip() {
        for ev in [
            RoomEvent::Chat { author: "a".into(), text: "b".into() },
            RoomEvent::Joined { author: "a".into() },
            RoomEvent::Renamed { author: "b".into(), from: "a".into() },
            RoomEvent::Left { author: "a".into() },
        ] {
            let json = serde_json::to_string(&ev).unwrap();
            assert_eq!(serde_json::from_str::<RoomEvent>(&json).unwrap(), ev);
        }
        let json = serde_json::to_string(&RoomEvent::Renamed { author: "bob".into(), from: "ann".into() }).unwrap();
        assert_eq!(json, r#"{"kind":"renamed","author":"bob","from":"ann"}"#);
    }
}

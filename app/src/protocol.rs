//! The chat's event contract (see `../shared/PROTOCOL.md`), as serde types used by the
//! server and the browser client alike.
//!
//! A Socket.IO event travels as a JSON array `["name", arg, ...]`; [`ClientEvent`] and
//! [`ServerEvent`] serialize to and from exactly that array, so the browser codec and the
//! tests can put them on the wire as they are.

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Event name of a chat line from a client and of every server-to-client string.
pub const MESSAGE: &str = "message";
/// Event name a client uses to choose its username.
pub const SET_USERNAME: &str = "set_username";

/// Event name of the greeting a chatroom client gets after the welcome.
pub const HELLO: &str = "hello";
/// The protocol version this build's chatroom clients announce.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a chatroom client puts in its Socket.IO CONNECT auth payload. A client that sends
/// none is a legacy client and receives only the legacy `message` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuth {
    /// The protocol version the client speaks.
    pub v: u32,
    /// The position of the last room event the client saw: resume after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The name the client had: it is set again on the new connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The browser's random client key: connections with the same key are one user
    /// (one name, one entry in the presence list), and a user that comes back within
    /// the grace period was never gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Whether `key` has the shape of a client key: 16 to 64 characters of `A-Z a-z 0-9 _ -`
/// (random, and safe to store and log).
pub fn is_client_key(key: &str) -> bool {
    (16..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A room-wide position in the one order of room events, written like a Redis
/// stream id (`millis-seq`) so that both backends and the browser share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A position that is not `millis-seq`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not a position (expected MILLIS-SEQ): {0:?}")]
pub struct BadPosition(String);

impl FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.to_owned());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Position { ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

/// Event name of one live room event for chatroom clients ([`RoomLine`]).
pub const LINE: &str = "line";
/// Event name of the room events a chatroom client missed or joins with ([`Backlog`]).
pub const BACKLOG: &str = "backlog";
/// Event name of what the server tells one chatroom client alone ([`Notice`]).
pub const NOTICE: &str = "notice";
/// Event name of the list of online users a chatroom client gets after its backlog ([`Presence`]).
pub const PRESENCE: &str = "presence";

/// Who is online, as of a position: room events after `at` (joined, left, renamed)
/// change the list; those up to `at` are already in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The position of the newest room event the list reflects.
    pub at: String,
    /// The names of the online users, sorted.
    pub users: Vec<String>,
}

/// A room event with its place in the room's one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLine {
    /// The room-wide position (`millis-seq`): resume after it.
    pub pos: String,
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

/// Room events sent on connecting, before any live [`RoomLine`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Which kind of backlog this is.
    pub kind: BacklogKind,
    /// The events, oldest first.
    pub lines: Vec<RoomLine>,
}

/// A message to one chatroom client alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Sent on connecting.
    Welcome {
        /// The greeting.
        text: String,
    },
    /// The client's username was stored.
    NameSet {
        /// The name as stored (trimmed).
        name: String,
        /// The legacy confirmation text.
        text: String,
    },
    /// An input of the client's was refused.
    Refused {
        /// Why, as the legacy text.
        text: String,
    },
}

/// The `hello` event's payload: which node serves this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's name.
    pub node: String,
}

/// Sent to a client alone when it connects.
pub const WELCOME: &str = "Welcome to the chatroom!";

/// The reply to a client whose username was stored.
pub fn username_set(name: &str) -> String {
    format!("Your username is set to {name}")
}

impl Notice {
    /// The text a legacy client gets for the same answer.
    pub fn text(&self) -> &str {
        match self {
            Notice::Welcome { text } | Notice::NameSet { text, .. } | Notice::Refused { text } => text,
        }
    }
}

/// An event a client emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// `set_username` with the chosen name.
    SetUsername(String),
    /// `message` with the text of a chat line (the JS client's `socket.send(text)`).
    Message(String),
}

impl ClientEvent {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::SetUsername(_) => SET_USERNAME,
            ClientEvent::Message(_) => MESSAGE,
        }
    }

    /// The single string argument.
    pub fn text(&self) -> &str {
        match self {
            ClientEvent::SetUsername(text) | ClientEvent::Message(text) => text,
        }
    }
}

/// An event the server emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// `message` with one plain string: welcome, replies, refusals, chat lines, notices.
    Message(String),
    /// `hello` with the serving node, for chatroom clients only.
    Hello(Hello),
    /// `backlog`: history or missed events, for chatroom clients only.
    Backlog(Backlog),
    /// `line`: one live room event, for chatroom clients only.
    Line(RoomLine),
    /// `notice`: a message to this client alone, for chatroom clients only.
    Notice(Notice),
    /// `presence`: who is online, for chatroom clients only.
    Presence(Presence),
}

impl ServerEvent {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::Message(_) => MESSAGE,
            ServerEvent::Hello(_) => HELLO,
            ServerEvent::Backlog(_) => BACKLOG,
            ServerEvent::Line(_) => LINE,
            ServerEvent::Notice(_) => NOTICE,
            ServerEvent::Presence(_) => PRESENCE,
        }
    }
}

/// Something everyone in the room sees, in the room's one order.
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
}

impl RoomEvent {
    /// The line a person reads for this event.
    pub fn text(&self) -> String {
        match self {
            RoomEvent::Chat { author, text } => format!("{author}: {text}"),
            RoomEvent::Joined { author } => format!("{author} joined the chatroom."),
            RoomEvent::Renamed { author, from } => format!("{from} is now known as {author}."),
            RoomEvent::Left { author } => format!("{author} left the chatroom."),
        }
    }

    /// The string a legacy client receives for this event; it receives none for the
    /// events the replaced service did not announce (joins and renames).
    pub fn legacy_text(&self) -> Option<String> {
        match self {
            RoomEvent::Chat { .. } | RoomEvent::Left { .. } => Some(self.text()),
            RoomEvent::Joined { .. } | RoomEvent::Renamed { .. } => None,
        }
    }
}

fn serialize_event<S: Serializer, T: Serialize + ?Sized>(
    serializer: S,
    name: &str,
    arg: &T,
) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(2))?;
    seq.serialize_element(name)?;
    seq.serialize_element(arg)?;
    seq.end()
}

/// Reads `["name", arg, ...]`, ignoring extra arguments as Socket.IO servers do.
fn deserialize_event<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(String, serde_json::Value), D::Error> {
    struct EventVisitor;
    impl<'de> Visitor<'de> for EventVisitor {
        type Value = (String, serde_json::Value);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a Socket.IO event array [name, argument]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let name: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
            let arg = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok((name, arg))
        }
    }
    deserializer.deserialize_seq(EventVisitor)
}

fn string_arg<E: de::Error>(arg: serde_json::Value) -> Result<String, E> {
    match arg {
        serde_json::Value::String(text) => Ok(text),
        other => Err(de::Error::invalid_type(de::Unexpected::Other(&other.to_string()), &"a string")),
    }
}

impl Serialize for ClientEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_event(serializer, self.name(), self.text())
    }
}

impl<'de> Deserialize<'de> for ClientEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, arg) = deserialize_event(deserializer)?;
        match name.as_str() {
            SET_USERNAME => Ok(ClientEvent::SetUsername(string_arg(arg)?)),
            MESSAGE => Ok(ClientEvent::Message(string_arg(arg)?)),
            other => Err(de::Error::unknown_variant(other, &[SET_USERNAME, MESSAGE])),
        }
    }
}

impl Serialize for ServerEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerEvent::Message(text) => serialize_event(serializer, MESSAGE, text),
            ServerEvent::Hello(hello) => serialize_event(serializer, HELLO, hello),
            ServerEvent::Backlog(backlog) => serialize_event(serializer, BACKLOG, backlog),
            ServerEvent::Line(line) => serialize_event(serializer, LINE, line),
            ServerEvent::Notice(notice) => serialize_event(serializer, NOTICE, notice),
            ServerEvent::Presence(presence) => serialize_event(serializer, PRESENCE, presence),
        }
    }
}

impl<'de> Deserialize<'de> for ServerEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, arg) = deserialize_event(deserializer)?;
        match name.as_str() {
            MESSAGE => Ok(ServerEvent::Message(string_arg(arg)?)),
            HELLO => serde_json::from_value(arg).map(ServerEvent::Hello).map_err(de::Error::custom),
            BACKLOG => serde_json::from_value(arg).map(ServerEvent::Backlog).map_err(de::Error::custom),
            LINE => serde_json::from_value(arg).map(ServerEvent::Line).map_err(de::Error::custom),
            NOTICE => serde_json::from_value(arg).map(ServerEvent::Notice).map_err(de::Error::custom),
            PRESENCE => serde_json::from_value(arg).map(ServerEvent::Presence).map_err(de::Error::custom),
            other => Err(de::Error::unknown_variant(other, &[MESSAGE, HELLO, BACKLOG, LINE, NOTICE, PRESENCE])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_are_long_and_plain() {
        assert!(is_client_key("0123456789abcdef"));
        assert!(is_client_key(&"a_-Z".repeat(16)));
        for bad in ["", "short", "0123456789abcde", "0123456789abcdef|x", "0123456789 abcdef", &"a".repeat(65)] {
            assert!(!is_client_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn positions_print_parse_and_order_like_stream_ids() {
        let p: Position = "1700000000000-3".parse().unwrap();
        assert_eq!(p, Position { ms: 1_700_000_000_000, seq: 3 });
        assert_eq!(p.to_string(), "1700000000000-3");
        assert!(Position { ms: 1, seq: 9 } < Position { ms: 2, seq: 0 });
        for bad in ["", "12", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    #[test]
    fn client_events_are_socket_io_arrays() {
        let ev = ClientEvent::SetUsername("ann".into());
        assert_eq!(serde_json::to_string(&ev).unwrap(), r#"["set_username","ann"]"#);
        let ev = ClientEvent::Message("hi \"there\"".into());
        assert_eq!(serde_json::to_string(&ev).unwrap(), r#"["message","hi \"there\""]"#);
    }

    #[test]
    fn client_events_round_trip() {
        for ev in [
            ClientEvent::SetUsername("Zoë 🦀".into()),
            ClientEvent::Message("<script>alert(1)</script>".into()),
            ClientEvent::Message(String::new()),
        ] {
            let json = serde_json::to_string(&ev).unwrap();
            assert_eq!(serde_json::from_str::<ClientEvent>(&json).unwrap(), ev);
        }
    }

    #[test]
    fn server_events_round_trip() {
        let ev = ServerEvent::Message(WELCOME.into());
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["message","Welcome to the chatroom!"]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
    }

    #[test]
    fn hello_carries_the_node_name() {
        let ev = ServerEvent::Hello(Hello { node: "node-1".into() });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["hello",{"node":"node-1"}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let auth = ClientAuth { v: PROTOCOL_VERSION, after: None, name: None, key: None };
        assert_eq!(serde_json::to_string(&auth).unwrap(), r#"{"v":1}"#);
    }

    #[test]
    fn structured_events_have_documented_shapes() {
        let line = RoomLine {
            pos: "1700000000000-0".into(),
            ts: 1_700_000_000_000,
            event: RoomEvent::Chat { author: "ann".into(), text: "hi".into() },
        };
        let ev = ServerEvent::Line(line.clone());
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            json,
            r#"["line",{"pos":"1700000000000-0","ts":1700000000000,"kind":"chat","author":"ann","text":"hi"}]"#
        );
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let ev = ServerEvent::Backlog(Backlog { kind: BacklogKind::Reset, lines: vec![line] });
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.starts_with(r#"["backlog",{"kind":"reset","lines":[{"pos""#), "{json}");
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let ev = ServerEvent::Notice(Notice::Refused { text: "no".into() });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["notice",{"kind":"refused","text":"no"}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let auth: ClientAuth = serde_json::from_str(r#"{"v":1,"after":"5-1","name":"ann","key":"k1"}"#).unwrap();
        assert_eq!(
            (auth.after.as_deref(), auth.name.as_deref(), auth.key.as_deref()),
            (Some("5-1"), Some("ann"), Some("k1"))
        );
        let ev = ServerEvent::Presence(Presence { at: "5-1".into(), users: vec!["ann".into()] });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["presence",{"at":"5-1","users":["ann"]}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let json = serde_json::to_string(&RoomEvent::Renamed { author: "bob".into(), from: "ann".into() }).unwrap();
        assert_eq!(json, r#"{"kind":"renamed","author":"bob","from":"ann"}"#);
    }

    #[test]
    fn extra_arguments_are_ignored_and_bad_shapes_refused() {
        let ev: ServerEvent = serde_json::from_str(r#"["message","a",{"x":1},2]"#).unwrap();
        assert_eq!(ev, ServerEvent::Message("a".into()));
        assert!(serde_json::from_str::<ServerEvent>(r#"["other","a"]"#).is_err());
        assert!(serde_json::from_str::<ServerEvent>(r#"["message"]"#).is_err());
        assert!(serde_json::from_str::<ServerEvent>(r#"["message",3]"#).is_err());
        assert!(serde_json::from_str::<ClientEvent>(r#"{"message":"a"}"#).is_err());
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
    }
}

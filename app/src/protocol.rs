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
}

/// Event name of one live room event for chatroom clients ([`RoomLine`]).
pub const LINE: &str = "line";
/// Event name of the room events a chatroom client missed or joins with ([`Backlog`]).
pub const BACKLOG: &str = "backlog";
/// Event name of what the server tells one chatroom client alone ([`Notice`]).
pub const NOTICE: &str = "notice";

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
    /// A named user's connection closed.
    Left {
        /// Who left.
        author: String,
    },
}

impl RoomEvent {
    /// The string a legacy client receives for this event.
    pub fn legacy_text(&self) -> String {
        match self {
            RoomEvent::Chat { author, text } => format!("{author}: {text}"),
            RoomEvent::Left { author } => format!("{author} left the chatroom."),
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
            other => Err(de::Error::unknown_variant(other, &[MESSAGE, HELLO, BACKLOG, LINE, NOTICE])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let auth = ClientAuth { v: PROTOCOL_VERSION, after: None, name: None };
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
        let auth: ClientAuth = serde_json::from_str(r#"{"v":1,"after":"5-1","name":"ann"}"#).unwrap();
        assert_eq!((auth.after.as_deref(), auth.name.as_deref()), (Some("5-1"), Some("ann")));
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
        assert_eq!(chat.legacy_text(), "ann: hello: world");
        let left = RoomEvent::Left { author: "ann".into() };
        assert_eq!(left.legacy_text(), "ann left the chatroom.");
        assert_eq!(username_set("ann"), "Your username is set to ann");
    }

    #[test]
    fn room_events_round_trip() {
        for ev in [RoomEvent::Chat { author: "a".into(), text: "b".into() }, RoomEvent::Left { author: "a".into() }] {
            let json = serde_json::to_string(&ev).unwrap();
            assert_eq!(serde_json::from_str::<RoomEvent>(&json).unwrap(), ev);
        }
    }
}

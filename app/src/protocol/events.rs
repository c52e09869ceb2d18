//! The events themselves. A Socket.IO event travels as a JSON array `["name", arg, ...]`;
//! [`ClientEvent`] and [`ServerEvent`] serialize to and from exactly that array, so the
//! browser codec, the load tool and the tests put them on the wire as they are.

use super::payloads::{Backlog, Hello, Notice, PresenceList, RoomLine};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Event name of a chat line from a client and of every server-to-client string.
pub const MESSAGE: &str = "message";
/// Event name a client uses to choose its username.
pub const SET_USERNAME: &str = "set_username";
/// Event name of the greeting a chatroom client gets after the welcome ([`Hello`]).
pub const HELLO: &str = "hello";
/// Event name of one live room event for chatroom clients ([`RoomLine`]).
pub const LINE: &str = "line";
/// Event name of the room events a chatroom client missed or joins with ([`Backlog`]).
pub const BACKLOG: &str = "backlog";
/// Event name of what the server tells one chatroom client alone ([`Notice`]).
pub const NOTICE: &str = "notice";
/// Event name of the list of online users a chatroom client gets after its backlog ([`PresenceList`]).
pub const PRESENCE: &str = "presence";

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
    Presence(PresenceList),
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
    use crate::protocol::{BacklogKind, ClientAuth, Position, RoomEvent, WELCOME};

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
        assert_eq!(serde_json::to_string(&ClientAuth::new()).unwrap(), r#"{"v":1}"#);
    }

    #[test]
    fn structured_events_have_documented_shapes() {
        let line = RoomLine {
            pos: "1700000000000-0".parse().unwrap(),
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
        let ann = crate::protocol::Username::parse("ann").unwrap();
        let json = serde_json::to_string(&ServerEvent::Notice(Notice::name_set(&ann))).unwrap();
        assert_eq!(json, r#"["notice",{"kind":"name_set","name":"ann","text":"Your username is set to ann"}]"#);
        let ev = ServerEvent::Presence(PresenceList { at: Position { ms: 5, seq: 1 }, users: vec!["ann".into()] });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["presence",{"at":"5-1","users":["ann"]}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
    }

    #[test]
    fn extra_arguments_are_ignored_and_bad_shapes_refused() {
        let ev: ServerEvent = serde_json::from_str(r#"["message","a",{"x":1},2]"#).unwrap();
        assert_eq!(ev, ServerEvent::Message("a".into()));
        assert!(serde_json::from_str::<ServerEvent>(r#"["other","a"]"#).is_err());
        assert!(serde_json::from_str::<ServerEvent>(r#"["message"]"#).is_err());
        assert!(serde_json::from_str::<ServerEvent>(r#"["message",3]"#).is_err());
        assert!(serde_json::from_str::<ClientEvent>(r#"{"message":"a"}"#).is_err());
        assert!(
            serde_json::from_str::<ServerEvent>(r#"["line",{"pos":"x","ts":1,"kind":"left","author":"a"}]"#).is_err()
        );
    }
}

//! The events themselves. A Socket.IO event travels as a JSON array `["name", arg, ...]`;
//! [`ClientEvent`] and [`ServerEvent`] serialize to and from exactly that array, so the
//! browser codec, the load tool and the tests put them on the wire as they are.

use super::payloads::{
    Backlog, Hello, HistoryRequest, JoinRoom, LeaveRoom, Notice, Older, PresenceList, Refresh, RoomLine, RoomList, Say,
};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Event name of a chat line from a client and of every server-to-client string.
pub const MESSAGE: &str = "message";
/// Event name a client uses to choose its username.
pub const SET_USERNAME: &str = "set_username";
/// Event name a version 2 client uses to be in a room ([`JoinRoom`]).
pub const JOIN: &str = "join";
/// Event name a version 2 client uses to leave a room ([`LeaveRoom`]).
pub const LEAVE: &str = "leave";
/// Event name of the room list: asked by a version 2 client, answered with a [`RoomList`].
pub const ROOMS: &str = "rooms";
/// Event name of a chatroom client's request for older lines ([`HistoryRequest`]).
pub const HISTORY: &str = "history";
/// Event name of the answer to a `history` request ([`Older`]).
pub const OLDER: &str = "older";
/// Event name of a signed-in client's fresh connection token ([`Refresh`]).
pub const REFRESH: &str = "refresh";
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
    /// `message` with the text of a chat line (the JS client's `socket.send(text)`); a
    /// version 2 client's bare string is for the lobby.
    Message(String),
    /// `message` with a room and a text (version 2).
    Say(Say),
    /// `join` a room (version 2).
    Join(JoinRoom),
    /// `leave` a room (version 2).
    Leave(LeaveRoom),
    /// `rooms`: ask for the room list (version 2).
    ListRooms,
    /// `history`: ask for older lines of a room.
    History(HistoryRequest),
    /// `refresh`: a fresh connection token before the current one expires.
    Refresh(Refresh),
}

impl ClientEvent {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::SetUsername(_) => SET_USERNAME,
            ClientEvent::Message(_) | ClientEvent::Say(_) => MESSAGE,
            ClientEvent::Join(_) => JOIN,
            ClientEvent::Leave(_) => LEAVE,
            ClientEvent::ListRooms => ROOMS,
            ClientEvent::History(_) => HISTORY,
            ClientEvent::Refresh(_) => REFRESH,
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
    /// `rooms`: the room list, for a version 2 client that asked.
    Rooms(RoomList),
    /// `older`: the lines a `history` request asked for.
    Older(Older),
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
            ServerEvent::Rooms(_) => ROOMS,
            ServerEvent::Older(_) => OLDER,
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
        match self {
            ClientEvent::SetUsername(text) | ClientEvent::Message(text) => {
                serialize_event(serializer, self.name(), text)
            }
            ClientEvent::Say(say) => serialize_event(serializer, MESSAGE, say),
            ClientEvent::Join(join) => serialize_event(serializer, JOIN, join),
            ClientEvent::Leave(leave) => serialize_event(serializer, LEAVE, leave),
            ClientEvent::ListRooms => serialize_event(serializer, ROOMS, &serde_json::Map::new()),
            ClientEvent::History(request) => serialize_event(serializer, HISTORY, request),
            ClientEvent::Refresh(refresh) => serialize_event(serializer, REFRESH, refresh),
        }
    }
}

impl<'de> Deserialize<'de> for ClientEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, arg) = deserialize_event(deserializer)?;
        match name.as_str() {
            SET_USERNAME => Ok(ClientEvent::SetUsername(string_arg(arg)?)),
            MESSAGE if arg.is_object() => serde_json::from_value(arg).map(ClientEvent::Say).map_err(de::Error::custom),
            MESSAGE => Ok(ClientEvent::Message(string_arg(arg)?)),
            JOIN => serde_json::from_value(arg).map(ClientEvent::Join).map_err(de::Error::custom),
            LEAVE => serde_json::from_value(arg).map(ClientEvent::Leave).map_err(de::Error::custom),
            ROOMS => Ok(ClientEvent::ListRooms),
            HISTORY => serde_json::from_value(arg).map(ClientEvent::History).map_err(de::Error::custom),
            REFRESH => serde_json::from_value(arg).map(ClientEvent::Refresh).map_err(de::Error::custom),
            other => {
                Err(de::Error::unknown_variant(other, &[SET_USERNAME, MESSAGE, JOIN, LEAVE, ROOMS, HISTORY, REFRESH]))
            }
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
            ServerEvent::Rooms(rooms) => serialize_event(serializer, ROOMS, rooms),
            ServerEvent::Older(older) => serialize_event(serializer, OLDER, older),
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
            ROOMS => serde_json::from_value(arg).map(ServerEvent::Rooms).map_err(de::Error::custom),
            OLDER => serde_json::from_value(arg).map(ServerEvent::Older).map_err(de::Error::custom),
            other => {
                Err(de::Error::unknown_variant(other, &[MESSAGE, HELLO, BACKLOG, LINE, NOTICE, PRESENCE, ROOMS, OLDER]))
            }
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
            ClientEvent::Say(Say { room: "ops".into(), text: "hi".into() }),
            ClientEvent::Join(JoinRoom { room: "ops".into(), after: Some("5-0".into()) }),
            ClientEvent::Leave(LeaveRoom { room: "ops".into() }),
            ClientEvent::ListRooms,
            ClientEvent::History(HistoryRequest {
                room: Some("ops".into()),
                before: "5-0".parse().unwrap(),
                limit: 50,
            }),
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
        let ev = ServerEvent::Hello(Hello { node: "node-1".into(), limits: None });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["hello",{"node":"node-1"}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let limits = Some(crate::protocol::Limits { name_chars: 32, message_chars: 2000 });
        let json = serde_json::to_string(&ServerEvent::Hello(Hello { node: "n".into(), limits })).unwrap();
        assert_eq!(json, r#"["hello",{"node":"n","limits":{"name_chars":32,"message_chars":2000}}]"#);
        assert_eq!(serde_json::to_string(&ClientAuth::new()).unwrap(), r#"{"v":2}"#);
    }

    #[test]
    fn structured_events_have_documented_shapes() {
        let line = RoomLine {
            room: None,
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
        let ev = ServerEvent::Backlog(Backlog { room: None, kind: BacklogKind::Reset, lines: vec![line] });
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.starts_with(r#"["backlog",{"kind":"reset","lines":[{"pos""#), "{json}");
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let ev = ServerEvent::Notice(Notice::Refused { room: None, text: "no".into() });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["notice",{"kind":"refused","text":"no"}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let ann = crate::protocol::Username::parse("ann").unwrap();
        let json = serde_json::to_string(&ServerEvent::Notice(Notice::name_set(&ann))).unwrap();
        assert_eq!(json, r#"["notice",{"kind":"name_set","name":"ann","text":"Your username is set to ann"}]"#);
        let request: ClientEvent = serde_json::from_str(r#"["history",{"before":"5-1","limit":20}]"#).unwrap();
        assert_eq!(
            request,
            ClientEvent::History(HistoryRequest { room: None, before: Position { ms: 5, seq: 1 }, limit: 20 })
        );
        assert!(serde_json::from_str::<ClientEvent>(r#"["history",{"before":"x","limit":20}]"#).is_err());
        let ev = ServerEvent::Older(Older { room: None, lines: vec![], complete: true });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"["older",{"lines":[],"complete":true}]"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), ev);
        let ev = ServerEvent::Presence(PresenceList {
            room: None,
            at: Position { ms: 5, seq: 1 },
            users: vec!["ann".into()],
        });
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

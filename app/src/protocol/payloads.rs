//! The arguments of the events: what a chatroom client presents on connecting, the room
//! events everyone sees in one order, and what one client is told alone.

use super::ids::{ClientKey, Position, Presented};
use super::rules::Username;
use serde::{Deserialize, Serialize};

/// The protocol version this build's chatroom clients announce.
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// The position of the last room event the client saw: resume after it. One that is
    /// not a position is answered with a `reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Presented<Position>>,
    /// The name the client had: it is set again on the new connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The browser's random client key: connections with the same key are one user
    /// (one name, one entry in the presence list), and a user that comes back within
    /// the grace period was never gone. One that is not a key is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Presented<ClientKey>>,
}

impl ClientAuth {
    /// A chatroom client's auth of this protocol version with nothing else presented.
    pub fn new() -> Self {
        Self { v: PROTOCOL_VERSION, after: None, name: None, key: None }
    }
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
    /// The position of the newest room event the list reflects.
    pub at: Position,
    /// The names of the online users, sorted.
    pub users: Vec<String>,
}

/// A room event with its place in the room's one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLine {
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
        name: Username,
        /// The legacy confirmation text.
        text: String,
    },
    /// An input of the client's was refused.
    Refused {
        /// Why, as the legacy text.
        text: String,
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
        Notice::Welcome { text: WELCOME.to_owned() }
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
            Notice::Welcome { text }
            | Notice::NameSet { text, .. }
            | Notice::Refused { text }
            | Notice::NameLost { text, .. } => text,
        }
    }
}

/// The `hello` event's payload: which node serves this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's name.
    pub node: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_has_the_documented_shape() {
        assert_eq!(serde_json::to_string(&ClientAuth::new()).unwrap(), r#"{"v":1}"#);
        let auth: ClientAuth =
            serde_json::from_str(r#"{"v":1,"after":"5-1","name":"ann","key":"0123456789abcdef"}"#).unwrap();
        assert_eq!(auth.after, Some(Presented::Valid(Position { ms: 5, seq: 1 })));
        assert_eq!(auth.name.as_deref(), Some("ann"));
        assert_eq!(auth.key.as_ref().and_then(Presented::valid).map(ClientKey::as_str), Some("0123456789abcdef"));
        // A bad field is kept apart; the rest of the payload still counts.
        let auth: ClientAuth = serde_json::from_str(r#"{"v":1,"after":"x","key":"k1"}"#).unwrap();
        assert_eq!(
            (auth.after, auth.key),
            (Some(Presented::Invalid("x".into())), Some(Presented::Invalid("k1".into())))
        );
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

//! Input rules shared by the server (which enforces them) and the browser (which explains
//! them before sending). Each refusal's text is what a legacy client receives.

use thiserror::Error;

/// The longest username, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The default longest chat message, in characters.
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 2000;
/// The longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// The room legacy clients are in, and the one `/` opens.
pub const LOBBY: &str = "lobby";
/// How a private room's name starts: a rule of the name, so that every node knows a room
/// is private before anyone is in it.
pub const PRIVATE_ROOM_PREFIX: &str = "private-";

/// Why an input was not accepted; the text is sent to the client as it is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The name is empty or blank.
    #[error("Username cannot be empty.")]
    EmptyName,
    /// The name is longer than `max` characters.
    #[error("Username is too long (maximum {max} characters).")]
    NameTooLong {
        /// The longest name.
        max: usize,
    },
    /// The name holds control or bidi-override characters.
    #[error("Username cannot contain control characters.")]
    NameHasControlChars,
    /// The name is not a string.
    #[error("Username must be a string.")]
    NameNotText,
    /// Another online user has this name (or one that folds to it).
    #[error("Username \"{name}\" is already taken. Choose another one.")]
    NameTaken {
        /// The name as asked for (trimmed).
        name: String,
    },
    /// The name could not be stored (the backend is down).
    #[error("Could not set the username: the chat service is unavailable, try again.")]
    NameUnavailable,
    /// A line from a client without a name.
    #[error("Failed to send the message. Specify a username first.")]
    NoUsername,
    /// The line is empty or blank.
    #[error("Message cannot be empty.")]
    EmptyMessage,
    /// The line is longer than `max` characters.
    #[error("Message is too long (maximum {max} characters).")]
    MessageTooLong {
        /// The longest line.
        max: usize,
    },
    /// The line is not a string.
    #[error("Message must be a string.")]
    MessageNotText,
    /// The client has too many events waiting to be handled.
    #[error("Failed to send the message: the server is busy, try again.")]
    Busy,
    /// The client sends lines faster than its rate limit.
    #[error("Failed to send the message: you are sending too fast. Slow down.")]
    TooFast,
    /// The client changes its name faster than its rate limit.
    #[error("Could not set the username: too many changes. Wait a moment.")]
    RenamesTooFast,
    /// The line could not be published (the backend is down).
    #[error("Failed to send the message: the chat service is unavailable, try again.")]
    Unavailable,
    /// The line was sent, but no replica of the chat's store confirmed it in time: it is
    /// shown once one does (and lost, unseen, if the store fails first).
    #[error(
        "Your message was sent but is not yet safe: it appears once the chat's store has a copy. Do not send it again."
    )]
    NotYetSafe,
    /// The room is not a string.
    #[error("Room must be a string.")]
    RoomNotText,
    /// The room name is empty or blank.
    #[error("Room name cannot be empty.")]
    EmptyRoomName,
    /// The room name is longer than `max` characters.
    #[error("Room name is too long (maximum {max} characters).")]
    RoomNameTooLong {
        /// The longest room name.
        max: usize,
    },
    /// The room name holds something other than `a-z`, `0-9`, `-` and `_`.
    #[error("Room name can only hold lower-case letters, digits, - and _.")]
    RoomNameNotPlain,
    /// The client asked about a room it has not joined.
    #[error("You are not in the room {room}. Join it first.")]
    NotInRoom {
        /// The room.
        room: String,
    },
    /// The connection is in as many rooms as it may be.
    #[error("You are in too many rooms (maximum {max}). Leave one first.")]
    TooManyRooms {
        /// The most rooms one connection may be in.
        max: usize,
    },
    /// The cluster holds as many rooms as it may: no new one can be opened.
    #[error("No new room can be opened: the chat holds as many as it may ({max}).")]
    RoomLimit {
        /// The most rooms the cluster holds.
        max: usize,
    },
    /// The room could not be joined or left (the backend is down).
    #[error("Could not change rooms: the chat service is unavailable, try again.")]
    RoomUnavailable,
    /// The client opens new rooms faster than its rate limit.
    #[error("Could not open the room: too many new rooms. Wait a moment.")]
    RoomsTooFast,
    /// A `history` request without a position to read before, or with a limit out of range.
    #[error("Could not load older lines: ask for 1 to {max} lines before a position.")]
    HistoryNotValid {
        /// The most lines one request may ask for.
        max: usize,
    },
    /// The client asks for older lines faster than its rate limit.
    #[error("Could not load older lines: too many requests. Wait a moment.")]
    HistoryTooFast,
    /// Older lines could not be read (the backend is down).
    #[error("Could not load older lines: the chat service is unavailable, try again.")]
    HistoryUnavailable,
    /// An operator muted the user: its lines are refused for a while.
    #[error("You are muted for {minutes} more minutes.")]
    Muted {
        /// Whole minutes left, rounded up.
        minutes: u64,
    },
    /// An operator banned the user or its address: it may not connect for a while.
    #[error("You are banned from the chat for {minutes} more minutes.")]
    Banned {
        /// Whole minutes left, rounded up.
        minutes: u64,
    },
    /// The connection's token (or its lack) does not let it in, or no longer does.
    #[error("Not allowed: {reason}.")]
    NotAllowed {
        /// Why, in a few words.
        reason: String,
    },
    /// The user's name comes from its token and cannot be changed here.
    #[error("Your username is set by your sign-in and cannot be changed.")]
    NameFixed,
    /// The client refreshes its token faster than its rate limit.
    #[error("Could not refresh the sign-in: too many refreshes. Wait a moment.")]
    RefreshesTooFast,
    /// An anonymous user where only signed-in users may post.
    #[error("Sign in to send messages: you can read, but not post.")]
    SignInToPost,
    /// A private room the user's token does not list.
    #[error("You may not join the room {room}.")]
    RoomNotAllowed {
        /// The room.
        room: String,
    },
}

impl Refusal {
    /// A short stable name for the reason (metrics, logs).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::EmptyName => "empty_name",
            Refusal::NameTooLong { .. } => "name_too_long",
            Refusal::NameHasControlChars => "name_control_chars",
            Refusal::NameNotText => "name_not_text",
            Refusal::NameTaken { .. } => "name_taken",
            Refusal::NameUnavailable => "name_unavailable",
            Refusal::NoUsername => "no_username",
            Refusal::EmptyMessage => "empty_message",
            Refusal::MessageTooLong { .. } => "message_too_long",
            Refusal::MessageNotText => "message_not_text",
            Refusal::Busy => "busy",
            Refusal::TooFast => "too_fast",
            Refusal::RenamesTooFast => "renames_too_fast",
            Refusal::Unavailable => "unavailable",
            Refusal::NotYetSafe => "not_yet_safe",
            Refusal::RoomNotText => "room_not_text",
            Refusal::EmptyRoomName => "empty_room_name",
            Refusal::RoomNameTooLong { .. } => "room_name_too_long",
            Refusal::RoomNameNotPlain => "room_name_not_plain",
            Refusal::NotInRoom { .. } => "not_in_room",
            Refusal::TooManyRooms { .. } => "too_many_rooms",
            Refusal::RoomLimit { .. } => "room_limit",
            Refusal::RoomUnavailable => "room_unavailable",
            Refusal::RoomsTooFast => "rooms_too_fast",
            Refusal::HistoryNotValid { .. } => "history_not_valid",
            Refusal::HistoryTooFast => "history_too_fast",
            Refusal::HistoryUnavailable => "history_unavailable",
            Refusal::Muted { .. } => "muted",
            Refusal::Banned { .. } => "banned",
            Refusal::NotAllowed { .. } => "not_allowed",
            Refusal::NameFixed => "name_fixed",
            Refusal::RefreshesTooFast => "refreshes_too_fast",
            Refusal::SignInToPost => "sign_in_to_post",
            Refusal::RoomNotAllowed { .. } => "room_not_allowed",
        }
    }
}

/// A username that passed the rules: trimmed, not empty, short, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Checks a requested name; surrounding whitespace is dropped.
    pub fn parse(raw: &str) -> Result<Self, Refusal> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Refusal::EmptyName);
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(Refusal::NameTooLong { max: MAX_NAME_CHARS });
        }
        // Format characters such as U+202E (right-to-left override) would let a name
        // spoof the text around it, so they count as control characters here too.
        if name.chars().any(|c| c.is_control() || is_bidi_control(c)) {
            return Err(Refusal::NameHasControlChars);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as shown to everyone.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Username {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Reads a name the server sent, checked by the same rules.
impl<'de> serde::Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Username::parse(&raw).map_err(serde::de::Error::custom)
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A room's name that passed the rules: 1 to 32 of `a-z`, `0-9`, `-` and `_`, so it is
/// safe in a URL path and in a Redis key, and two rooms never differ by case alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    /// Checks a requested room name; surrounding whitespace is dropped.
    pub fn parse(raw: &str) -> Result<Self, Refusal> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Refusal::EmptyRoomName);
        }
        if name.chars().count() > MAX_ROOM_CHARS {
            return Err(Refusal::RoomNameTooLong { max: MAX_ROOM_CHARS });
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err(Refusal::RoomNameNotPlain);
        }
        Ok(Self(name.to_owned()))
    }

    /// The room legacy clients are in.
    pub fn lobby() -> Self {
        Self(LOBBY.to_owned())
    }

    /// Whether this is the lobby.
    pub fn is_lobby(&self) -> bool {
        self.0 == LOBBY
    }

    /// Whether this is a private room (its name starts with [`PRIVATE_ROOM_PREFIX`]): only
    /// users whose connection token lists it may join it, see it listed or read it.
    pub fn is_private(&self) -> bool {
        self.0.starts_with(PRIVATE_ROOM_PREFIX)
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Reads a room name sent by the other side, checked by the same rules.
impl<'de> serde::Deserialize<'de> for RoomName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RoomName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The text of a chat line that passed the rules; it is kept exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// Checks a chat line against the size limit (in characters).
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, Refusal> {
        if raw.trim().is_empty() {
            return Err(Refusal::EmptyMessage);
        }
        // Cheap bound first: a string of n bytes has at most n characters.
        if raw.len() > max_chars && raw.chars().count() > max_chars {
            return Err(Refusal::MessageTooLong { max: max_chars });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives the owned text back.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_kept() {
        assert_eq!(Username::parse("  ann ").unwrap().as_str(), "ann");
        assert_eq!(Username::parse("Zoë 🦀").unwrap().as_str(), "Zoë 🦀");
    }

    #[test]
    fn empty_and_blank_names_are_refused() {
        assert_eq!(Username::parse(""), Err(Refusal::EmptyName));
        assert_eq!(Username::parse(" \t\n "), Err(Refusal::EmptyName));
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(Username::parse(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert_eq!(Username::parse(&"a".repeat(MAX_NAME_CHARS + 1)), Err(Refusal::NameTooLong { max: 32 }));
    }

    #[test]
    fn control_characters_in_names_are_refused() {
        for bad in ["a\u{0}b", "a\nb", "a\u{7f}", "evil\u{202E}gnp.exe", "a\u{1b}[31m"] {
            assert_eq!(Username::parse(bad), Err(Refusal::NameHasControlChars), "{bad:?}");
        }
    }

    #[test]
    fn room_names_are_short_plain_and_lower_case() {
        assert_eq!(RoomName::parse(" ops-2_b ").unwrap().as_str(), "ops-2_b");
        assert!(RoomName::parse(&"a".repeat(MAX_ROOM_CHARS)).is_ok());
        assert!(RoomName::lobby().is_lobby());
        for (bad, refusal) in [
            ("", Refusal::EmptyRoomName),
            ("  ", Refusal::EmptyRoomName),
            (&*"a".repeat(33), Refusal::RoomNameTooLong { max: 32 }),
            ("Ops", Refusal::RoomNameNotPlain),
            ("a b", Refusal::RoomNameNotPlain),
            ("a{b}", Refusal::RoomNameNotPlain),
            ("café", Refusal::RoomNameNotPlain),
            ("a:b", Refusal::RoomNameNotPlain),
        ] {
            assert_eq!(RoomName::parse(bad), Err(refusal), "{bad:?}");
        }
        assert_eq!(
            Refusal::RoomNameNotPlain.to_string(),
            "Room name can only hold lower-case letters, digits, - and _."
        );
    }

    #[test]
    fn messages_are_kept_exactly() {
        let text = "  <b>hi</b>\n  ";
        assert_eq!(MessageText::parse(text, 100).unwrap().as_str(), text);
    }

    #[test]
    fn blank_and_oversized_messages_are_refused() {
        assert_eq!(MessageText::parse("", 10), Err(Refusal::EmptyMessage));
        assert_eq!(MessageText::parse("   \n", 10), Err(Refusal::EmptyMessage));
        assert!(MessageText::parse(&"é".repeat(10), 10).is_ok());
        assert_eq!(MessageText::parse(&"a".repeat(11), 10), Err(Refusal::MessageTooLong { max: 10 }));
    }

    #[test]
    fn refusal_texts_are_the_documented_strings() {
        assert_eq!(Refusal::NoUsername.to_string(), "Failed to send the message. Specify a username first.");
        assert_eq!(
            Refusal::NameTaken { name: "ann".into() }.to_string(),
            r#"Username "ann" is already taken. Choose another one."#
        );
        assert_eq!(Refusal::NameTooLong { max: 32 }.to_string(), "Username is too long (maximum 32 characters).");
        assert_eq!(Refusal::MessageTooLong { max: 2000 }.to_string(), "Message is too long (maximum 2000 characters).");
    }
}

//! The wire contract in one place, shared by the server, the browser and the load tool:
//! no Leptos and no I/O here.
//!
//! - [`events`]: the Socket.IO events each side emits, as `["name", arg]` arrays;
//! - [`payloads`]: their arguments (room events, backlogs, notices, the CONNECT auth);
//! - [`ids`]: positions and client keys, parsed where they enter;
//! - [`rules`]: the input rules and the [`Refusal`] texts a client is answered with;
//! - [`codec`] and [`session`]: Engine.IO/Socket.IO framing and a client's connection
//!   state machine, without sockets.
//!
//! The legacy contract (`docs/legacy-protocol.md`) is the `message` strings; the
//! structured one (`docs/protocol.md`) is what a client announcing a version gets.
#![warn(missing_docs)]

pub mod codec;
pub mod events;
pub mod ids;
pub mod payloads;
pub mod rules;
pub mod session;

pub use events::{
    BACKLOG, ClientEvent, HELLO, HISTORY, JOIN, LEAVE, LINE, MESSAGE, NOTICE, OLDER, PRESENCE, REFRESH, ROOMS,
    SET_USERNAME, ServerEvent,
};
pub use ids::{BadClientKey, BadPosition, ClientKey, Position, Presented};
pub use payloads::{
    After, Backlog, BacklogKind, ClientAuth, DELETED, Hello, HistoryRequest, JoinRoom, LeaveRoom, Limits,
    MAX_OLDER_LINES, Notice, Older, PROTOCOL_V1, PROTOCOL_VERSION, PresenceList, Refresh, RoomCount, RoomEvent,
    RoomLine, RoomList, Say, WELCOME, username_lost, username_set,
};
pub use rules::{
    DEFAULT_MAX_MESSAGE_CHARS, LOBBY, MAX_NAME_CHARS, MAX_ROOM_CHARS, MessageText, PRIVATE_ROOM_PREFIX, Refusal,
    RoomName, Username,
};

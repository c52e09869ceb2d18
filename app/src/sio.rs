//! The browser's Socket.IO codec: Socket.IO v5 packets inside Engine.IO v4 text frames,
//! one frame per WebSocket message, default namespace only. Plain Rust without I/O, so
//! it is tested natively; `client` (browser only) moves the frames.

use crate::protocol::ServerEvent;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The Engine.IO open packet's payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    /// Engine.IO session id.
    pub sid: String,
    /// How often the server pings, in ms.
    pub ping_interval: u64,
    /// How long the server waits for the pong, in ms.
    pub ping_timeout: u64,
    /// Largest payload the server accepts, in bytes.
    #[serde(default)]
    pub max_payload: u64,
}

/// One decoded text frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Engine.IO open, with the session parameters.
    Open(Handshake),
    /// Engine.IO close.
    Close,
    /// Engine.IO ping: must be answered with a pong.
    Ping,
    /// Engine.IO pong.
    Pong,
    /// Engine.IO noop.
    Noop,
    /// Socket.IO CONNECT acknowledged for the default namespace.
    Connected {
        /// Socket.IO socket id.
        sid: String,
    },
    /// Socket.IO CONNECT_ERROR with the server's message.
    ConnectError(String),
    /// Socket.IO DISCONNECT: the server closed the socket.
    Disconnected,
    /// Socket.IO EVENT: `[name, args...]`.
    Event(serde_json::Value),
    /// A valid packet this client has no use for (another namespace, an ack).
    Ignored,
}

/// A frame that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("empty frame")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("binary packets are not supported")]
    Binary,
    #[error("bad payload: {0}")]
    BadPayload(String),
}

fn bad(err: serde_json::Error) -> CodecError {
    CodecError::BadPayload(err.to_string())
}

/// Decodes one Engine.IO text frame (and the Socket.IO packet inside a message).
pub fn decode(frame: &str) -> Result<Frame, CodecError> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let rest = chars.as_str();
    match kind {
        '0' => serde_json::from_str(rest).map(Frame::Open).map_err(bad),
        '1' => Ok(Frame::Close),
        '2' => Ok(Frame::Ping),
        '3' => Ok(Frame::Pong),
        '4' => decode_socket_packet(rest),
        '5' | '6' => Ok(Frame::Noop),
        other => Err(CodecError::UnknownType(other)),
    }
}

fn decode_socket_packet(packet: &str) -> Result<Frame, CodecError> {
    let mut chars = packet.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let mut rest = chars.as_str();
    if let Some(after_slash) = rest.strip_prefix('/') {
        // A namespace other than "/" is written before a comma; this client never joins one.
        let (nsp, body) = after_slash.split_once(',').unwrap_or((after_slash, ""));
        if !nsp.is_empty() {
            return Ok(Frame::Ignored);
        }
        rest = body;
    }
    // An ack id (digits) may precede the JSON payload.
    let payload_start = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let has_ack_id = payload_start > 0;
    let payload = &rest[payload_start..];
    match kind {
        '0' => {
            #[derive(Deserialize)]
            struct Connect {
                sid: String,
            }
            let connect: Connect = serde_json::from_str(payload).map_err(bad)?;
            Ok(Frame::Connected { sid: connect.sid })
        }
        '1' => Ok(Frame::Disconnected),
        '2' if has_ack_id => Ok(Frame::Ignored),
        '2' => serde_json::from_str(payload).map(Frame::Event).map_err(bad),
        '3' => Ok(Frame::Ignored),
        '4' => {
            #[derive(Deserialize)]
            struct ConnectError {
                message: String,
            }
            let err: ConnectError = serde_json::from_str(payload).map_err(bad)?;
            Ok(Frame::ConnectError(err.message))
        }
        '5' | '6' => Err(CodecError::Binary),
        other => Err(CodecError::UnknownType(other)),
    }
}

/// The pong frame answering a ping.
pub const PONG: &str = "3";

/// The Socket.IO CONNECT frame for the default namespace, with an optional auth payload.
pub fn encode_connect(auth: Option<&serde_json::Value>) -> String {
    match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".to_owned(),
    }
}

/// A Socket.IO EVENT frame; `event` serializes to `[name, args...]`.
pub fn encode_event<T: Serialize>(event: &T) -> Result<String, CodecError> {
    let json = serde_json::to_string(event).map_err(bad)?;
    Ok(format!("42{json}"))
}

/// What a client should do after a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// Send this frame back.
    Reply(String),
    /// The socket joined the default namespace: the connection is usable.
    Online,
    /// A server event arrived.
    Event(ServerEvent),
    /// The server ended the connection; reconnect.
    Closed(String),
}

/// Heartbeat allowance before the handshake tells the real one, in ms.
const DEFAULT_HEARTBEAT_MS: u64 = 45_000;

/// A client's view of one Engine.IO connection: the handshake, heartbeats and events.
#[derive(Debug, Default)]
pub struct ClientSession {
    handshake: Option<Handshake>,
    online: bool,
    auth: Option<serde_json::Value>,
}

impl ClientSession {
    /// Starts a session on a freshly opened transport, as a legacy client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a session that sends `auth` in its Socket.IO CONNECT packet.
    pub fn with_auth(auth: serde_json::Value) -> Self {
        Self { auth: Some(auth), ..Self::default() }
    }

    /// Whether the socket joined the namespace.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// How long the link may stay silent before it is presumed dead, in ms: a ping
    /// is due every interval and may be late by the timeout.
    pub fn heartbeat_deadline_ms(&self) -> u64 {
        self.handshake.as_ref().map(|h| h.ping_interval + h.ping_timeout).unwrap_or(DEFAULT_HEARTBEAT_MS)
    }

    /// Handles one text frame from the server.
    pub fn on_frame(&mut self, frame: &str) -> Result<Step, CodecError> {
        Ok(match decode(frame)? {
            Frame::Open(handshake) => {
                self.handshake = Some(handshake);
                Step::Reply(encode_connect(self.auth.as_ref()))
            }
            Frame::Ping => Step::Reply(PONG.to_owned()),
            Frame::Connected { .. } => {
                self.online = true;
                Step::Online
            }
            Frame::Event(value) => match serde_json::from_value::<ServerEvent>(value) {
                Ok(event) => Step::Event(event),
                // A newer server may send events this client does not know yet.
                Err(_) => Step::Idle,
            },
            Frame::Close => Step::Closed("the server closed the connection".into()),
            Frame::Disconnected => Step::Closed("the server disconnected this client".into()),
            Frame::ConnectError(message) => Step::Closed(format!("connection refused: {message}")),
            Frame::Pong | Frame::Noop | Frame::Ignored => Step::Idle,
        })
    }
}

/// Exponential reconnect delays with jitter, so that many clients of a restarted node
/// do not all come back in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base_ms: u64,
    max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { attempt: 0, base_ms: 500, max_ms: 10_000 }
    }
}

impl Backoff {
    /// The next delay in ms; `jitter` in [0, 1) picks a point in the upper half of the step.
    pub fn next_delay_ms(&mut self, jitter: f64) -> u64 {
        let step = self.base_ms.saturating_mul(1 << self.attempt.min(16)).min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = jitter.clamp(0.0, 1.0);
        (step as f64 * (0.5 + jitter / 2.0)) as u64
    }

    /// Starts over after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientEvent;
    use serde_json::json;

    const OPEN: &str = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#;

    #[test]
    fn decodes_the_engine_io_packets() {
        let Frame::Open(h) = decode(OPEN).unwrap() else { panic!("not open") };
        assert_eq!((h.sid.as_str(), h.ping_interval, h.ping_timeout, h.max_payload), ("abc", 25000, 20000, 100000));
        assert_eq!(decode("1").unwrap(), Frame::Close);
        assert_eq!(decode("2").unwrap(), Frame::Ping);
        assert_eq!(decode("3").unwrap(), Frame::Pong);
        assert_eq!(decode("6").unwrap(), Frame::Noop);
    }

    #[test]
    fn decodes_the_socket_io_packets() {
        assert_eq!(decode(r#"40{"sid":"s1"}"#).unwrap(), Frame::Connected { sid: "s1".into() });
        assert_eq!(decode("41").unwrap(), Frame::Disconnected);
        assert_eq!(decode(r#"42["message","hi"]"#).unwrap(), Frame::Event(json!(["message", "hi"])));
        assert_eq!(decode(r#"44{"message":"not allowed"}"#).unwrap(), Frame::ConnectError("not allowed".into()));
        // Ack requests, acks and other namespaces are valid but of no use here.
        assert_eq!(decode(r#"4212["message","hi"]"#).unwrap(), Frame::Ignored);
        assert_eq!(decode(r#"43["ok"]"#).unwrap(), Frame::Ignored);
        assert_eq!(decode(r#"42/admin,["message","hi"]"#).unwrap(), Frame::Ignored);
        // The default namespace may be written out.
        assert_eq!(decode(r#"42/,["message","hi"]"#).unwrap(), Frame::Event(json!(["message", "hi"])));
    }

    #[test]
    fn refuses_malformed_frames() {
        assert_eq!(decode(""), Err(CodecError::Empty));
        assert_eq!(decode("9"), Err(CodecError::UnknownType('9')));
        assert_eq!(decode("4"), Err(CodecError::Empty));
        assert_eq!(decode(r#"451-["message",{"_placeholder":true,"num":0}]"#), Err(CodecError::Binary));
        assert!(matches!(decode("0{not json"), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode("42[\"message\""), Err(CodecError::BadPayload(_))));
        assert!(matches!(decode("40"), Err(CodecError::BadPayload(_))));
    }

    #[test]
    fn encodes_client_frames() {
        assert_eq!(encode_connect(None), "40");
        assert_eq!(encode_connect(Some(&json!({"v": 2}))), r#"40{"v":2}"#);
        let frame = encode_event(&ClientEvent::Message("a \"quoted\" line".into())).unwrap();
        assert_eq!(frame, r#"42["message","a \"quoted\" line"]"#);
        // What we encode, we decode.
        assert_eq!(decode(&frame).unwrap(), Frame::Event(json!(["message", "a \"quoted\" line"])));
    }

    #[test]
    fn a_session_handshakes_answers_pings_and_reads_events() {
        let mut s = ClientSession::new();
        assert_eq!(s.heartbeat_deadline_ms(), DEFAULT_HEARTBEAT_MS);
        assert_eq!(s.on_frame(OPEN).unwrap(), Step::Reply("40".into()));
        assert_eq!(s.heartbeat_deadline_ms(), 45_000);
        assert!(!s.is_online());
        assert_eq!(s.on_frame(r#"40{"sid":"x"}"#).unwrap(), Step::Online);
        assert!(s.is_online());
        assert_eq!(s.on_frame("2").unwrap(), Step::Reply("3".into()));
        assert_eq!(
            s.on_frame(r#"42["message","Welcome to the chatroom!"]"#).unwrap(),
            Step::Event(ServerEvent::Message("Welcome to the chatroom!".into()))
        );
        assert_eq!(s.on_frame(r#"42["future_event",{"a":1}]"#).unwrap(), Step::Idle);
        assert!(matches!(s.on_frame("41").unwrap(), Step::Closed(_)));
        assert!(matches!(s.on_frame("1").unwrap(), Step::Closed(_)));
    }

    #[test]
    fn a_session_with_auth_sends_it_and_reads_hello() {
        let mut s = ClientSession::with_auth(json!({"v": 1}));
        assert_eq!(s.on_frame(OPEN).unwrap(), Step::Reply(r#"40{"v":1}"#.into()));
        assert_eq!(
            s.on_frame(r#"42["hello",{"node":"n1"}]"#).unwrap(),
            Step::Event(ServerEvent::Hello(crate::protocol::Hello { node: "n1".into() }))
        );
    }

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let upper: Vec<u64> = (0..8).map(|_| b.next_delay_ms(1.0)).collect();
        assert_eq!(upper, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
        b.reset();
        assert_eq!(b.next_delay_ms(0.0), 250);
        assert_eq!(b.next_delay_ms(0.5), 750);
    }
}

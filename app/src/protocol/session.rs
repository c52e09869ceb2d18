//! A client's side of one connection, without I/O: the handshake, heartbeats, which
//! frames to answer, the state shown to the person, and the delay before reconnecting.
//! The browser's client and the load tool drive it with their own sockets.

use super::codec::{CodecError, Frame, Handshake, PONG, decode, encode_connect};
use super::events::ServerEvent;

/// The state of the link to the server, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// First connection attempt under way.
    Connecting,
    /// Joined: messages can be sent.
    Online,
    /// The link dropped; trying again with backoff.
    Reconnecting,
}

impl ConnState {
    /// Machine-readable name (the page's `data-state` attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Online => "online",
            ConnState::Reconnecting => "reconnecting",
        }
    }
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
    #[expect(clippy::cast_possible_truncation, reason = "a delay in ms, rounded down; f64 to u64 saturates")]
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
    use crate::protocol::Hello;
    use serde_json::json;

    const OPEN: &str = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#;

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
            Step::Event(ServerEvent::Hello(Hello { node: "n1".into(), limits: None }))
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

    #[test]
    fn states_have_stable_names() {
        assert_eq!(ConnState::Online.as_str(), "online");
        assert_eq!(ConnState::Reconnecting.as_str(), "reconnecting");
    }
}

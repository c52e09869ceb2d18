//! The client's Socket.IO codec: Socket.IO v5 packets inside Engine.IO v4 text frames,
//! one frame per WebSocket message, default namespace only. Plain Rust without I/O, so
//! the browser and the load tool share it and it is tested natively.

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
    /// The frame or packet is empty.
    #[error("empty frame")]
    Empty,
    /// The packet type is not one of the protocol's.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A binary packet, which this client does not take.
    #[error("binary packets are not supported")]
    Binary,
    /// The packet's JSON is not what its type needs.
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
}

//! Pacing for long-polling connections.
//!
//! engineioxide answers a poll with every packet waiting for the client (up to
//! `max_payload` bytes), however many there are; python-engineio's client refuses a
//! response of more than 16 packets and drops the connection. So between two polls this
//! node hands socketioxide at most [`PACKETS_PER_POLL`] packets of a polling connection;
//! the others wait here, in order, until the client has polled again (a middleware sees
//! each poll answered). Once the connection upgrades to a WebSocket, nothing waits: the
//! upgrade request releases what waits, and so do the next packet and the next sweep if
//! the upgrade completed after its request was seen.
//!
//! Invariant: packets reach the client in the order they were emitted, paced or not:
//! whether to emit now or keep, and every emit of kept packets, happen under one lock.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketIo, TransportType};
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;

/// Packets of ours a poll may carry: python-engineio's 16, less room for the packets
/// engineioxide writes itself (pings, noops) and socketioxide's own (connect, disconnect).
pub(super) const PACKETS_PER_POLL: usize = 12;

/// What happens to a packet offered for a paced connection.
pub(super) enum Pacing {
    /// Emit it now: it fits the next poll.
    Now,
    /// It was kept for a later poll.
    Kept,
    /// Too many wait already: the client does not keep up.
    Full,
}

/// One polling connection's packets: how many are on their way, and those that wait.
#[derive(Default)]
struct Pace {
    /// Packets handed to socketioxide since the last poll was answered.
    in_flight: usize,
    waiting: VecDeque<(&'static str, Value)>,
    /// The connection is a WebSocket now: nothing is paced any more.
    upgraded: bool,
}

/// The paced connections of this node, by session id.
pub struct Pacers {
    io: SocketIo,
    paces: Mutex<HashMap<Sid, Pace>>,
    /// How many packets may wait for one connection before it counts as too slow.
    max_waiting: usize,
}

impl Pacers {
    /// Pacers for the sockets of `io`; a connection with more than `max_waiting` packets
    /// waiting is too slow.
    pub fn new(io: SocketIo, max_waiting: usize) -> Self {
        Self { io, paces: Mutex::new(HashMap::new()), max_waiting }
    }

    /// Paces the connection `sid` from now on.
    pub(super) fn start(&self, sid: Sid) {
        self.paces.lock().insert(sid, Pace::default());
    }

    /// Forgets the connection `sid`.
    pub(super) fn stop(&self, sid: Sid) {
        self.paces.lock().remove(&sid);
    }

    /// Decides about a packet for `sid`, and emits it through `emit` if it goes now, all
    /// under the lock that keeps packets in order.
    /// `transport` is the connection's transport now.
    pub(super) fn offer<T: Serialize + ?Sized>(
        &self,
        sid: Sid,
        transport: TransportType,
        event: &'static str,
        data: &T,
        emit: impl FnOnce() -> Result<(), SendError>,
    ) -> Result<Pacing, SendError> {
        let mut paces = self.paces.lock();
        if transport == TransportType::Websocket
            && let Some(pace) = paces.get_mut(&sid)
        {
            self.upgrade(sid, pace);
        }
        let Some(pace) = paces.get_mut(&sid).filter(|pace| !pace.upgraded) else {
            emit()?;
            return Ok(Pacing::Now);
        };
        if pace.waiting.is_empty() && pace.in_flight < PACKETS_PER_POLL {
            emit()?;
            pace.in_flight += 1;
            return Ok(Pacing::Now);
        }
        if pace.waiting.len() >= self.max_waiting {
            return Ok(Pacing::Full);
        }
        match serde_json::to_value(data) {
            Ok(value) => pace.waiting.push_back((event, value)),
            Err(err) => tracing::error!(%sid, %err, event, "a packet could not be kept for its polling client"),
        }
        Ok(Pacing::Kept)
    }

    /// A poll of `sid` was answered with `taken` of the packets on their way: as many
    /// more may go. (Packets emitted after the answer was made stay counted.)
    fn polled(&self, sid: Sid, taken: usize) {
        let mut paces = self.paces.lock();
        let Some(pace) = paces.get_mut(&sid) else { return };
        pace.in_flight = pace.in_flight.saturating_sub(taken);
        self.release(sid, pace, PACKETS_PER_POLL);
    }

    /// `sid` is upgrading to a WebSocket: everything kept goes now.
    fn upgraded(&self, sid: Sid) {
        let mut paces = self.paces.lock();
        if let Some(pace) = paces.get_mut(&sid) {
            self.upgrade(sid, pace);
        }
    }

    /// Releases what waits for the connections that are WebSockets by now (an upgrade
    /// may complete after its request was seen). Run every sweep.
    pub(super) fn check_upgrades(&self) {
        let mut paces = self.paces.lock();
        for (sid, pace) in paces.iter_mut().filter(|(_, pace)| !pace.upgraded) {
            let upgraded = self.io.get_socket(*sid).is_some_and(|s| s.transport_type() == TransportType::Websocket);
            if upgraded {
                self.upgrade(*sid, pace);
            }
        }
    }

    fn upgrade(&self, sid: Sid, pace: &mut Pace) {
        if !pace.upgraded {
            pace.upgraded = true;
            self.release(sid, pace, usize::MAX);
        }
    }

    fn release(&self, sid: Sid, pace: &mut Pace, most: usize) {
        if pace.waiting.is_empty() {
            return;
        }
        let Some(socket) = self.io.get_socket(sid) else { return };
        while pace.in_flight < most {
            let Some((event, data)) = pace.waiting.pop_front() else { break };
            if let Err(err) = socket.emit(event, &data) {
                tracing::debug!(%sid, %err, event, "a kept packet was not written: the client is gone");
            }
            pace.in_flight += 1;
        }
    }
}

/// What a Socket.IO request says about a polling session: its `sid`, and whether it is a
/// poll (`GET` over polling) or the upgrade to a WebSocket.
fn session_of(request: &Request) -> Option<(Sid, bool)> {
    let query = request.uri().query()?;
    let param = |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
    let sid = Sid::from_str(param("sid")?).ok()?;
    match param("transport")? {
        "polling" if request.method() == axum::http::Method::GET => Some((sid, false)),
        "websocket" => Some((sid, true)),
        _ => None,
    }
}

/// Middleware: tells the pacers when a poll was answered or a session upgrades.
pub async fn watch_polls(State(pacers): State<Arc<Pacers>>, request: Request, next: Next) -> Response {
    let session = session_of(&request);
    if let Some((sid, true)) = session {
        pacers.upgraded(sid);
    }
    let response = next.run(request).await;
    let Some((sid, false)) = session else { return response };
    // A poll's answer is whole in memory already: count the Socket.IO packets it carries.
    let (parts, body) = response.into_parts();
    let payload = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(payload) => payload,
        Err(err) => {
            tracing::debug!(%sid, %err, "a poll's answer could not be read");
            return Response::from_parts(parts, axum::body::Body::empty());
        }
    };
    pacers.polled(sid, socket_io_packets(&payload));
    Response::from_parts(parts, axum::body::Body::from(payload))
}

/// How many Socket.IO packets (Engine.IO messages, type `4`) a polling payload holds:
/// packets are separated by the record separator.
fn socket_io_packets(payload: &[u8]) -> usize {
    if payload.is_empty() {
        return 0;
    }
    payload.split(|byte| *byte == 0x1e).filter(|packet| packet.first() == Some(&b'4')).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> Request {
        Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn polls_and_upgrades_are_told_apart() {
        let sid = Sid::new();
        let poll = request("GET", &format!("/socket.io/?EIO=4&transport=polling&t=x&sid={sid}"));
        assert_eq!(session_of(&poll), Some((sid, false)));
        let upgrade = request("GET", &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"));
        assert_eq!(session_of(&upgrade), Some((sid, true)));
        let post = request("POST", &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
        assert_eq!(session_of(&post), None, "a client's own packets");
        assert_eq!(session_of(&request("GET", "/socket.io/?EIO=4&transport=polling")), None, "a handshake");
        assert_eq!(session_of(&request("GET", "/socket.io/?EIO=4&transport=polling&sid=nonsense")), None);
    }

    #[test]
    fn only_socket_io_packets_of_an_answer_count() {
        assert_eq!(socket_io_packets(b""), 0);
        assert_eq!(socket_io_packets(b"2"), 0, "a ping");
        assert_eq!(socket_io_packets(b"42[\"message\",\"a\"]\x1e2\x1e42[\"message\",\"b\"]"), 2);
        assert_eq!(socket_io_packets(b"6"), 0, "a noop");
    }
}

//! One Socket.IO client connection over a WebSocket, with the app's codec.

use anyhow::{Context, bail};
use app::protocol::codec::encode_event;
use app::protocol::session::{ClientSession, Step};
use app::protocol::{ClientEvent, ServerEvent};
use futures::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The Socket.IO WebSocket endpoint of a server's base URL.
pub fn socket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    format!("{ws}/socket.io/?EIO=4&transport=websocket")
}

/// tungstenite's default read buffer is 128 KiB and it zeroes the free part before each
/// read: with thousands of clients each reading one short line at a time, that was 60 %
/// of the tool's CPU time (and so most of the latency it measured). Lines are short.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// A WebSocket client connection as the load tool holds it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A TCP connection to the host of `base`, from `source` when given: one loopback
/// address has about 28,000 ephemeral ports, and the per-address limits of a server
/// behind a proxy count each address as one person.
pub async fn tcp(base: &str, source: Option<Ipv4Addr>) -> anyhow::Result<TcpStream> {
    let host = base.split("://").nth(1).and_then(|rest| rest.split('/').next()).context("a URL with a host")?;
    let target: SocketAddr = tokio::net::lookup_host(host).await?.next().context("the host resolves")?;
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(source) = source.filter(|_| target.ip().is_loopback() && target.is_ipv4()) {
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    Ok(socket.connect(target).await?)
}

/// A WebSocket to the Socket.IO endpoint of `base`, from `source` when given.
pub async fn websocket(base: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    let stream = tcp(base, source).await.context("TCP connect")?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(socket_url(base), MaybeTlsStream::Plain(stream), Some(ws_config()))
            .await
            .context("WebSocket handshake")?;
    Ok(ws)
}

/// What the server sent, as the load tool needs it.
pub enum Incoming {
    /// A `message` string.
    Message(String),
    /// Another event (structured clients).
    Event(ServerEvent),
    /// Anything else (other events, heartbeats answered here).
    Other,
    /// The connection ended.
    Closed(String),
}

/// A connected Socket.IO client.
pub struct Link {
    ws: Ws,
    session: ClientSession,
}

impl Link {
    /// Opens the WebSocket and joins the default namespace.
    pub async fn connect(base: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(socket_url(base), Some(ws_config()), false)
            .await
            .context("WebSocket handshake")?;
        Self::join(ws, ClientSession::new()).await
    }

    /// The same for a chatroom client presenting `auth` in its CONNECT.
    pub async fn connect_with_auth(base: &str, auth: serde_json::Value) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(socket_url(base), Some(ws_config()), false)
            .await
            .context("WebSocket handshake")?;
        Self::join(ws, ClientSession::with_auth(auth)).await
    }

    /// Does the same from a chosen loopback source address.
    pub async fn from_source(base: &str, source: Ipv4Addr) -> anyhow::Result<Self> {
        Self::join(websocket(base, Some(source)).await?, ClientSession::new()).await
    }

    async fn join(ws: Ws, session: ClientSession) -> anyhow::Result<Self> {
        let mut link = Self { ws, session };
        while !link.session.is_online() {
            if let Incoming::Closed(reason) = link.next().await? {
                bail!("closed before joining: {reason}");
            }
        }
        Ok(link)
    }

    /// Emits an event.
    pub async fn emit(&mut self, event: &ClientEvent) -> anyhow::Result<()> {
        self.ws.send(Message::text(encode_event(event)?)).await.context("send")
    }

    /// The next thing from the server; heartbeats are answered on the way.
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            let Some(frame) = self.ws.next().await else { return Ok(Incoming::Closed("end of stream".into())) };
            let text = match frame.context("receive")? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(Incoming::Closed("close frame".into())),
                _ => continue,
            };
            match self.session.on_frame(text.as_str())? {
                Step::Reply(reply) => self.ws.send(Message::text(reply)).await.context("reply")?,
                Step::Event(ServerEvent::Message(text)) => return Ok(Incoming::Message(text)),
                Step::Event(event) => return Ok(Incoming::Event(event)),
                Step::Closed(reason) => return Ok(Incoming::Closed(reason)),
                Step::Online | Step::Idle => return Ok(Incoming::Other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_follow_the_scheme() {
        assert_eq!(socket_url("http://127.0.0.1:3000/"), "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket");
        assert_eq!(socket_url("https://localhost:1"), "wss://localhost:1/socket.io/?EIO=4&transport=websocket");
    }
}

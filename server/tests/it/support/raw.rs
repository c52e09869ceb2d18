//! Raw WebSocket clients of a node's Socket.IO endpoint: what no well-behaved library
//! sends (or never reads), for the hostile-client and limit tests.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A raw WebSocket to a node.
pub type RawSocket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url`'s Socket.IO endpoint with extra `headers` and sends the
/// Socket.IO CONNECT (with `auth` when given), then waits for its answer: socketioxide
/// closes a socket that sends an event before its CONNECT is done, as no library does.
/// The HTTP status when the node refuses.
pub async fn raw_socket(url: &str, auth: Option<&str>, headers: &[(&str, &str)]) -> Result<RawSocket, u16> {
    let ws_url = format!("{}/socket.io/?EIO=4&transport=websocket", url.replacen("http", "ws", 1));
    let mut request = ws_url.into_client_request().expect("a WebSocket URL");
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().expect("a header name");
        request.headers_mut().insert(name, HeaderValue::from_str(value).expect("a header value"));
    }
    let mut socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(Error::Http(response)) => return Err(response.status().as_u16()),
        Err(err) => panic!("WebSocket handshake failed: {err}"),
    };
    let connect = auth.map_or_else(|| "40".to_owned(), |auth| format!("40{auth}"));
    socket.send(Message::text(connect)).await.expect("send CONNECT");
    let answered = async {
        while let Some(Ok(frame)) = socket.next().await {
            if let Message::Text(text) = frame
                && (text.starts_with("40") || text.starts_with("44"))
            {
                return;
            }
        }
        panic!("the socket closed before its CONNECT was answered");
    };
    tokio::time::timeout(Duration::from_secs(10), answered).await.expect("a CONNECT answer within 10 s");
    Ok(socket)
}

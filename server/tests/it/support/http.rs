//! Plain HTTP requests written by hand, to see exactly what a node answers.

use super::WAIT;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A plain HTTP/1.1 GET to `addr` (`HOST:PORT`); returns the status code and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with(addr, path, &[]).await;
    (status, body)
}

/// A GET with more headers; returns the status code, the response head (lower-cased)
/// and the body. A WebSocket upgrade answered with 101 returns at once, body empty.
pub async fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    http_request(addr, "GET", path, headers).await
}

/// A request without a body (`POST`, `DELETE`, …) with these headers; returns the status
/// code, the response head (lower-cased) and the body.
pub async fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stream, &mut chunk))
            .await
            .expect("a response in time")
            .expect("read response");
        raw.extend_from_slice(&chunk[..read]);
        let upgraded = raw.starts_with(b"HTTP/1.1 101") && raw.windows(4).any(|w| w == b"\r\n\r\n");
        if read == 0 || upgraded {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The `HOST:PORT` of a node URL.
pub fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// The status code and JSON body of `GET path`.
pub async fn get_json(url: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_get(host_of(url), path).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {body:?}")))
}

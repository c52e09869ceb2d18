//! Gives each Socket.IO request a head of its own before socketioxide keeps it.
//!
//! socketioxide keeps the HTTP request head of every connection for the connection's
//! life. hyper parses a head without copying: the URI and the header values are slices of
//! the connection's read buffer (8 to 16 KiB). So every idle WebSocket would keep that
//! whole buffer alive for a few hundred bytes of headers. Copying the head into small
//! allocations of its own lets the buffer go: about 16 KiB less per connection.

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

/// Where Socket.IO requests arrive.
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Middleware: a Socket.IO request goes on with a copied head; others as they are.
pub async fn own_request_head(request: Request, next: Next) -> Response {
    if request.uri().path().starts_with(SOCKET_IO_PATH) {
        next.run(with_own_head(request)).await
    } else {
        next.run(request).await
    }
}

/// The same request whose URI and headers no longer borrow the read buffer.
fn with_own_head(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        // Known names are static; others, like every value, are copied by these calls.
        let (Ok(name), Ok(mut copy)) =
            (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        headers.append(name, copy);
    }
    parts.headers = headers;
    if let Some(uri) = copied(&parts.uri) {
        parts.uri = uri;
    }
    // The router keeps the URI as it arrived too.
    if let Some(uri) = parts.extensions.get::<OriginalUri>().and_then(|original| copied(&original.0)) {
        parts.extensions.insert(OriginalUri(uri));
    }
    Request::from_parts(parts, body)
}

fn copied(uri: &Uri) -> Option<Uri> {
    uri.to_string().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::body::Bytes;

    /// Whether `bytes` lie inside `buffer`.
    fn inside(buffer: &Bytes, bytes: &[u8]) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&bytes.as_ptr())
    }

    #[test]
    fn the_copied_head_is_equal_and_borrows_nothing_from_the_read_buffer() {
        // A head parsed the way hyper does it: slices of one buffer.
        let buffer =
            Bytes::from(b"/socket.io/?EIO=4&transport=websocket|http://127.0.0.1:3000|x-custom|yes|secret".to_vec());
        let slice = |from: usize, to: usize| buffer.slice(from..to);
        let uri = Uri::from_maybe_shared(slice(0, 37)).unwrap();
        let mut request = Request::builder().uri(uri.clone()).body(Body::empty()).unwrap();
        let origin = HeaderValue::from_maybe_shared(slice(38, 59)).unwrap();
        request.headers_mut().insert("origin", origin);
        let custom = HeaderName::from_bytes(&buffer[60..68]).unwrap();
        request.headers_mut().insert(custom, HeaderValue::from_maybe_shared(slice(69, 72)).unwrap());
        let mut secret = HeaderValue::from_maybe_shared(slice(73, 79)).unwrap();
        secret.set_sensitive(true);
        request.headers_mut().insert("authorization", secret);
        request.extensions_mut().insert(OriginalUri(uri));
        assert!(inside(&buffer, request.headers()["origin"].as_bytes()), "the test's head borrows the buffer");

        let before = request.headers().clone();
        let request = with_own_head(request);
        assert_eq!(request.headers(), &before);
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert!(request.headers()["authorization"].is_sensitive());
        for value in request.headers().values() {
            assert!(!inside(&buffer, value.as_bytes()));
        }
        let query = request.uri().query().unwrap();
        assert!(!inside(&buffer, query.as_bytes()));
        let original = request.extensions().get::<OriginalUri>().unwrap();
        assert!(!inside(&buffer, original.0.query().unwrap().as_bytes()));
    }
}

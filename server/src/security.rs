//! Which browser origins may talk to the node, and the security headers of the page.
//!
//! Browsers send `Origin` with WebSocket handshakes and cross-origin requests; a request
//! whose origin is not allowed is refused with 403 (clients that send no `Origin`, such
//! as python-socketio or socket.io-client in Node.js, are not browsers and pass). The
//! page gets a Content-Security-Policy with the script nonce of its response.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leptos::nonce::{Nonce, use_nonce};
use leptos::prelude::use_context;
use leptos_axum::ResponseOptions;
use std::sync::Arc;
use thiserror::Error;

/// An origin that is not `scheme://host[:port]`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not an origin (expected SCHEME://HOST[:PORT], as http://localhost:3000): {0:?}")]
pub struct BadOrigin(String);

/// A browser origin: scheme, host (lower-cased; an IPv6 address in brackets) and port
/// (the scheme's default when not written). Two origins are the same only when all
/// three are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn default_port(https: bool) -> u16 {
        if https { 443 } else { 80 }
    }

    /// Whether its host is this machine: `localhost`, any 127.x.y.z address, or `[::1]`.
    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self.host == "[::1]"
            || self.host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether a request to `host` (its `Host` header) comes from this very origin. A
    /// `Host` without a port (some proxies drop it) means the scheme's default port.
    fn is_host(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(&host.to_ascii_lowercase()) else { return false };
        name == self.host && port.unwrap_or(Self::default_port(self.https)) == self.port
    }
}

/// `host[:port]` or `[v6][:port]`, into the host and the port if one is written.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (address, rest) = v6.split_once(']')?;
        address.parse::<std::net::Ipv6Addr>().ok()?;
        let port = if rest.is_empty() { None } else { Some(rest.strip_prefix(':')?) };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
        if host.is_empty() || !host.chars().all(plain) {
            return None;
        }
        (host.to_owned(), port)
    };
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

impl std::str::FromStr for Origin {
    type Err = BadOrigin;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadOrigin(s.to_owned());
        let origin = s.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, authority) = origin.split_once("://").ok_or_else(bad)?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let (host, port) = split_host_port(authority).ok_or_else(bad)?;
        Ok(Self { https, host, port: port.unwrap_or(Self::default_port(https)) })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != Self::default_port(self.https) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The origins a node accepts besides its own.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    /// Configured origins; when none are, any loopback origin (development) is allowed.
    listed: Vec<Origin>,
}

impl AllowedOrigins {
    /// The node's own origin plus `listed`, or plus loopback origins when `listed` is empty.
    pub fn new(listed: Vec<Origin>) -> Self {
        Self { listed }
    }

    /// Whether a request to `host` (its `Host` header) may come from `origin` (its
    /// `Origin` header): the same origin, a listed one, or without a list a loopback one.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let Ok(origin) = origin.parse::<Origin>() else { return false };
        if host.is_some_and(|host| origin.is_host(host)) {
            return true;
        }
        if self.listed.is_empty() {
            return origin.is_loopback();
        }
        self.listed.contains(&origin)
    }
}

/// Refuses requests from origins that are not allowed; lets allowed cross-origin
/// requests read their responses (CORS).
pub async fn check_origin(State(allowed): State<Arc<AllowedOrigins>>, request: Request, next: Next) -> Response {
    let Some(origin) = header_str(request.headers(), header::ORIGIN).map(str::to_owned) else {
        return next.run(request).await;
    };
    let host = header_str(request.headers(), header::HOST);
    if !allowed.allows(&origin, host) {
        tracing::info!(%origin, path = request.uri().path(), "request from an origin that is not allowed: refused");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&origin) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The page's Content-Security-Policy: scripts only from the site or with this nonce,
/// WebAssembly compiled (`wasm-unsafe-eval`), connections only back to the site and to
/// `token_origin`, where the page fetches its connection token.
pub fn content_security_policy(nonce: &Nonce, token_origin: Option<&str>) -> String {
    let mut connect = "'self'".to_owned();
    if let Some(origin) = token_origin {
        connect = format!("{connect} {origin}");
    }
    // `cargo leptos watch` reloads the page through a WebSocket on a port of its own.
    if std::env::var_os("LEPTOS_WATCH").is_some() {
        connect.push_str(" ws:");
    }
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// Sets the page's Content-Security-Policy from the script nonce leptos_axum made for
/// this response (its hydration script carries the same nonce). Runs as the page renders.
pub fn page_security_policy(token_origin: Option<&str>) {
    let (Some(nonce), Some(response)) = (use_nonce(), use_context::<ResponseOptions>()) else { return };
    match HeaderValue::from_str(&content_security_policy(&nonce, token_origin)) {
        Ok(csp) => response.insert_header(header::CONTENT_SECURITY_POLICY, csp),
        Err(err) => tracing::error!(%err, "the page's Content-Security-Policy is not a header value"),
    }
}

/// Gives every response the security headers that do not depend on it.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Nothing of the address leaves the site; `same-origin` rather than `no-referrer`,
    // under which browsers send `Origin: null` with the site's own form posts (the
    // moderation view's), which the origin check must refuse.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_refuse_what_is_not_one() {
        assert_eq!("https://Chat.Example.com/".parse::<Origin>().unwrap().to_string(), "https://chat.example.com");
        assert_eq!("http://localhost:80".parse::<Origin>().unwrap().to_string(), "http://localhost");
        assert_eq!("https://[::1]:8443".parse::<Origin>().unwrap().to_string(), "https://[::1]:8443");
        for bad in [
            "chat.example.com",
            "ftp://x",
            "https://",
            "https://a b",
            "https://x/path",
            "http://x:99999",
            "http://[zz]",
        ] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_is_a_loopback_host_not_a_name_that_looks_like_one() {
        let allowed = AllowedOrigins::default();
        for loopback in ["http://localhost:3000", "http://127.0.0.1:9", "http://127.9.8.7", "https://[::1]:8443"] {
            assert!(allowed.allows(loopback, Some("chat.example.com")), "{loopback}");
        }
        for foreign in [
            "http://127.evil.example",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example",
            "http://[::2]:3000",
            "http://128.0.0.1",
            "http://evil.example#@127.0.0.1",
        ] {
            assert!(!allowed.allows(foreign, Some("chat.example.com")), "{foreign}");
        }
    }

    #[test]
    fn scheme_host_and_port_are_compared_exactly() {
        let allowed = AllowedOrigins::new(vec!["https://app.example".parse().unwrap()]);
        assert!(allowed.allows("https://app.example:443", None), "the default port written out");
        for other in
            ["http://app.example", "https://app.example:8443", "https://app.example.evil", "https://www.app.example"]
        {
            assert!(!allowed.allows(other, None), "{other}");
        }
        // The node's own origin: the Host header's port, or the scheme's default without one.
        assert!(allowed.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(!allowed.allows("http://chat.example.com:9999", Some("chat.example.com")));
        assert!(allowed.allows("http://[::1]:3000", Some("[::1]:3000")));
    }

    #[test]
    fn same_origin_and_loopback_pass_by_default_and_others_do_not() {
        let allowed = AllowedOrigins::default();
        assert!(allowed.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(allowed.allows("http://chat.example.com:8080", Some("chat.example.com:8080")));
        assert!(allowed.allows("http://localhost:3000", Some("10.0.0.5:3000")));
        assert!(allowed.allows("http://127.0.0.1:9999", None));
        assert!(!allowed.allows("https://evil.example", Some("chat.example.com")));
        assert!(!allowed.allows("http://chat.example.com:9999", Some("chat.example.com:8080")));
        assert!(!allowed.allows("null", Some("chat.example.com")));
    }

    #[test]
    fn a_configured_list_replaces_the_loopback_default() {
        let allowed = AllowedOrigins::new(vec!["https://app.example".parse().unwrap()]);
        assert!(allowed.allows("https://app.example", Some("chat.example.com")));
        assert!(allowed.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(!allowed.allows("http://localhost:3000", Some("chat.example.com")));
    }

    #[test]
    fn the_policy_allows_the_wasm_and_the_nonce_only() {
        let csp = content_security_policy(&Nonce::from_value("abc"), None);
        assert!(csp.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        let csp = content_security_policy(&Nonce::from_value("abc"), Some("https://login.example"));
        assert!(csp.contains("connect-src 'self' https://login.example;"), "{csp}");
    }
}

//! Who a request comes from, for the limits per source address: the peer of its TCP
//! connection, or, when that peer is a proxy the node trusts (`--trusted-proxies`), the
//! address the proxies forwarded. Clients forge `X-Forwarded-For` at will, so only the
//! part written by trusted proxies counts: the rightmost address that is not one of them.

use crate::health::opens_connection;
use crate::tls::NodeListener;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use ipnet::IpNet;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use thiserror::Error;

/// The TCP peer of a connection to the node.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, NodeListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, NodeListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The address a request is counted against: its client, as far as the node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The client address the middleware put on a request, if it ran.
    pub fn of(extensions: &axum::http::Extensions) -> Option<Self> {
        extensions.get::<Self>().copied()
    }

    /// Stands in when a request carries none (it did not come through the router).
    pub const UNKNOWN: Self = Self(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
}

/// A proxy address or network that `--trusted-proxies` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyNet(IpNet);

/// A `--trusted-proxies` entry that is neither an address nor a network.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not an IP address or network (as 10.0.0.1 or 10.0.0.0/8): {0:?}")]
pub struct BadProxyNet(String);

impl std::str::FromStr for ProxyNet {
    type Err = BadProxyNet;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        raw.parse::<IpNet>()
            .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
            .map(Self)
            .map_err(|_| BadProxyNet(raw.to_owned()))
    }
}

/// How the node finds a request's client address, and how many connections one address
/// may hold.
#[derive(Debug)]
pub struct AddressPolicy {
    trusted: Vec<ProxyNet>,
    max_connections: usize,
    connections: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressPolicy {
    /// A policy trusting `trusted` proxies and allowing `max_connections` per address.
    pub fn new(trusted: Vec<ProxyNet>, max_connections: usize) -> Self {
        Self { trusted, max_connections, connections: Mutex::new(HashMap::new()) }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.0.contains(&ip))
    }

    /// The client address of a request from `peer` with these headers.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        if !self.trusts(peer) {
            return ClientAddr(peer);
        }
        // Each proxy appends the address it got the request from: read from the right,
        // past the trusted proxies, to the first address none of them is.
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok());
        let hops: Vec<&str> = forwarded.flat_map(|value| value.split(',')).map(str::trim).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        ClientAddr(client)
    }

    /// Whether `addr` holds as many connections as it may.
    pub fn is_full(&self, addr: ClientAddr) -> bool {
        self.connections.lock().get(&addr.0).is_some_and(|open| *open >= self.max_connections)
    }

    /// A connection from `addr` opened.
    pub fn opened(&self, addr: ClientAddr) {
        *self.connections.lock().entry(addr.0).or_default() += 1;
    }

    /// A connection from `addr` closed.
    pub fn closed(&self, addr: ClientAddr) {
        let mut connections = self.connections.lock();
        if let Some(open) = connections.get_mut(&addr.0) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                connections.remove(&addr.0);
            }
        }
    }
}

/// Tags every request with its [`ClientAddr`]; refuses a new Socket.IO connection from an
/// address that holds as many as it may, with 429 (a load balancer does not retry that
/// on another node, as it would a 503).
pub async fn tag_client(State(policy): State<Arc<AddressPolicy>>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<PeerAddr>>().map(|info| info.0.0.ip());
    let client = peer.map_or(ClientAddr::UNKNOWN, |peer| policy.client_addr(peer, request.headers()));
    if opens_connection(&request) && policy.is_full(client) {
        tracing::info!(client = %client.0, "too many connections from one address: refused");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "5")],
            "too many connections from this address\n",
        )
            .into_response();
    }
    request.extensions_mut().insert(client);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let policy = AddressPolicy::new(vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()], 10);
        let headers = forwarded(&["6.6.6.6, 203.0.113.7", "10.1.2.3"]);
        // The rightmost address that is not a trusted proxy; what the client wrote before it does not count.
        assert_eq!(policy.client_addr(ip("127.0.0.1"), &headers), ClientAddr(ip("203.0.113.7")));
        // From an untrusted peer the header is the client's own words: ignored.
        assert_eq!(policy.client_addr(ip("198.51.100.1"), &headers), ClientAddr(ip("198.51.100.1")));
        // No header, or only trusted hops, or garbage: the last address that can be told.
        assert_eq!(policy.client_addr(ip("127.0.0.1"), &HeaderMap::new()), ClientAddr(ip("127.0.0.1")));
        assert_eq!(policy.client_addr(ip("127.0.0.1"), &forwarded(&["10.9.9.9"])), ClientAddr(ip("10.9.9.9")));
        assert_eq!(policy.client_addr(ip("127.0.0.1"), &forwarded(&["nonsense"])), ClientAddr(ip("127.0.0.1")));
        let without_proxies = AddressPolicy::new(Vec::new(), 10);
        assert_eq!(without_proxies.client_addr(ip("127.0.0.1"), &headers), ClientAddr(ip("127.0.0.1")));
    }

    #[test]
    fn an_address_holds_at_most_its_connections() {
        let policy = AddressPolicy::new(Vec::new(), 2);
        let (a, b) = (ClientAddr(ip("192.0.2.1")), ClientAddr(ip("192.0.2.2")));
        policy.opened(a);
        assert!(!policy.is_full(a));
        policy.opened(a);
        assert!(policy.is_full(a) && !policy.is_full(b));
        policy.closed(a);
        assert!(!policy.is_full(a));
        policy.closed(a);
        policy.closed(a);
        assert!(policy.connections.lock().is_empty(), "an address without connections is forgotten");
    }

    #[test]
    fn proxies_are_addresses_or_networks() {
        assert!("10.0.0.0/8".parse::<ProxyNet>().is_ok());
        assert!("::1".parse::<ProxyNet>().is_ok());
        assert!("fd00::/8".parse::<ProxyNet>().is_ok());
        for bad in ["", "nginx", "10.0.0.0/33", "1.2.3"] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
    }
}

//! The node's configuration: one typed struct from CLI flags and environment variables.

use crate::telemetry::LogFormat;
use app::protocol::DEFAULT_MAX_MESSAGE_CHARS;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Every setting of a node, in groups; `--help` lists them with their environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "chatroom", version, about = "A real-time chat room: web page and Socket.IO on one port.")]
pub struct Settings {
    /// Where the node listens.
    #[command(flatten)]
    pub listen: ListenSettings,

    /// What one client may send and hold.
    #[command(flatten)]
    pub limits: LimitSettings,

    /// The Redis that nodes share the room through.
    #[command(flatten)]
    pub redis: RedisSettings,

    /// What the room keeps and shows, and how presence waits.
    #[command(flatten)]
    pub room: RoomSettings,

    /// Heartbeats, drain and shutdown.
    #[command(flatten)]
    pub lifecycle: LifecycleSettings,

    /// The operators' API and how long chat is kept.
    #[command(flatten)]
    pub moderation: ModerationSettings,

    /// Who may connect: the policy and the connection tokens' key.
    #[command(flatten)]
    pub auth: AuthSettings,

    /// This node's name, shown to chatroom clients; defaults to HOST:PORT.
    #[arg(long, env = "CHATROOM_NODE_NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,

    /// Folder holding the built site (`pkg/` and the public files); defaults to Leptos's
    /// `LEPTOS_SITE_ROOT` or `target/site`, relative to the working directory.
    #[arg(long, env = "CHATROOM_SITE_ROOT")]
    pub site_root: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "CHATROOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Where the node listens.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Listening")]
pub struct ListenSettings {
    /// Address to listen on for the page, its assets and Socket.IO.
    #[arg(long, env = "CHATROOM_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Serve HTTPS and WSS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "CHATROOM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CHATROOM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Serve `/metrics` and the status page (`/status`, `/status.json`) on this address
    /// only (for example 127.0.0.1:9100); without it, on the main address.
    #[arg(long, env = "CHATROOM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Browser origins allowed besides the node's own, comma-separated
    /// (`https://chat.example.com,https://app.example.com`); without any, loopback origins
    /// (development) are. Requests from other origins are refused.
    #[arg(long, env = "CHATROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<crate::security::Origin>,

    /// Proxies (addresses or networks, comma-separated: `127.0.0.1,10.0.0.0/8`) whose
    /// `X-Forwarded-For` this node believes: behind them, a request's source address is
    /// the rightmost forwarded one that is not a listed proxy. Without any, the TCP peer.
    #[arg(long, env = "CHATROOM_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::addresses::ProxyNet>,
}

/// What one client may send and hold.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitSettings {
    /// Longest accepted chat message, in characters (at most 40,000, so that a line fits
    /// a backlog packet of 256 KiB even with every character escaped in JSON).
    #[arg(long, env = "CHATROOM_MAX_MESSAGE_CHARS", default_value_t = DEFAULT_MAX_MESSAGE_CHARS as u32,
          value_parser = clap::value_parser!(u32).range(1..=40_000))]
    pub max_message_chars: u32,

    /// Largest Engine.IO payload a client may send, in bytes; a bigger one closes its connection.
    #[arg(long, env = "CHATROOM_MAX_PAYLOAD_BYTES", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1_024..=16_000_000))]
    pub max_payload_bytes: u64,

    /// Each WebSocket's read buffer in bytes, held for the connection's whole life.
    /// Clients send little (a chat line is far below 1 KiB; a bigger frame is read in
    /// several steps), so a quarter of the socket library's 4 KiB saves 3 KiB a connection.
    #[arg(long, env = "CHATROOM_WS_READ_BUFFER_BYTES", default_value_t = 1_024,
          value_parser = clap::value_parser!(u32).range(256..=65_536))]
    pub ws_read_buffer_bytes: u32,

    /// Messages that may wait to be written to one client; a client that falls further behind is disconnected.
    #[arg(long, env = "CHATROOM_CLIENT_QUEUE", default_value_t = 1_024,
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub client_queue: u32,

    /// Chat lines a second one user may send (steadily, over all its connections); more are refused.
    #[arg(long, env = "CHATROOM_MESSAGE_RATE", default_value_t = NonZeroU32::new(10).expect("not zero"))]
    pub message_rate: NonZeroU32,

    /// Chat lines one user may send at once before the rate applies.
    #[arg(long, env = "CHATROOM_MESSAGE_BURST", default_value_t = NonZeroU32::new(50).expect("not zero"))]
    pub message_burst: NonZeroU32,

    /// Renames (names claimed, on connecting too) a minute one user may make (steadily).
    #[arg(long, env = "CHATROOM_RENAMES_PER_MINUTE", default_value_t = NonZeroU32::new(20).expect("not zero"))]
    pub renames_per_minute: NonZeroU32,

    /// Renames one user may make at once before the rate applies.
    #[arg(long, env = "CHATROOM_RENAME_BURST", default_value_t = NonZeroU32::new(5).expect("not zero"))]
    pub rename_burst: NonZeroU32,

    /// Requests for older lines a second one user may make (steadily); more are refused.
    #[arg(long, env = "CHATROOM_HISTORY_RATE", default_value_t = NonZeroU32::new(2).expect("not zero"))]
    pub history_rate: NonZeroU32,

    /// Requests for older lines one user may make at once before the rate applies.
    #[arg(long, env = "CHATROOM_HISTORY_BURST", default_value_t = NonZeroU32::new(10).expect("not zero"))]
    pub history_burst: NonZeroU32,

    /// Refusals for sending too fast, in a row, after which a client is disconnected.
    #[arg(long, env = "CHATROOM_FLOOD_DISCONNECT_AFTER", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_disconnect_after: u32,

    /// Connections this node holds at most; more are refused (503) before the handshake.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,

    /// Connections one source address may hold on this node; more are refused (429)
    /// before the handshake.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections_per_address: u64,

    /// How many times one user's rate of lines and renames one source address may use
    /// (several people behind one address); a user's rates hold across its connections.
    #[arg(long, env = "CHATROOM_ADDRESS_LIMIT_FACTOR", default_value_t = NonZeroU32::new(10).expect("not zero"))]
    pub address_limit_factor: NonZeroU32,
}

/// The Redis that nodes share the room through.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Redis")]
#[command(group(clap::ArgGroup::new("redis_nodes").args(["redis_sentinel", "redis_cluster"])))]
pub struct RedisSettings {
    /// Redis URL (`redis://`, `rediss://`, password in the URL): this node then shares the
    /// room with every node on the same Redis. Without it, one node with in-memory state.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<RedisUrl>,

    /// A PEM file of the CA that signed Redis's TLS certificate (for `rediss://` or
    /// `--redis-tls` to a Redis whose certificate the system's roots do not vouch for).
    #[arg(long, env = "CHATROOM_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Redis Sentinel instead of --redis-url: the sentinels (`HOST:PORT,…`) that name the
    /// master; this node follows the master they name through failovers.
    #[arg(
        long,
        env = "CHATROOM_REDIS_SENTINEL",
        value_delimiter = ',',
        conflicts_with = "redis_url",
        requires = "redis_sentinel_master"
    )]
    pub redis_sentinel: Vec<HostPort>,

    /// Redis Cluster instead of --redis-url: some of its nodes (`HOST:PORT,…`); the node
    /// learns the others from them and follows the cluster's failovers.
    #[arg(long, env = "CHATROOM_REDIS_CLUSTER", value_delimiter = ',', conflicts_with_all = ["redis_url", "redis_sentinel"])]
    pub redis_cluster: Vec<HostPort>,

    /// The name the sentinels know the master by (`sentinel monitor NAME …`).
    #[arg(long, env = "CHATROOM_REDIS_SENTINEL_MASTER", requires = "redis_sentinel")]
    pub redis_sentinel_master: Option<String>,

    /// The password of the master and replicas found through Sentinel, or of the
    /// cluster's nodes.
    #[arg(long, env = "CHATROOM_REDIS_PASSWORD", hide_env_values = true, requires = "redis_nodes")]
    pub redis_password: Option<RedisPassword>,

    /// The password of the sentinels.
    #[arg(long, env = "CHATROOM_REDIS_SENTINEL_PASSWORD", hide_env_values = true, requires = "redis_sentinel")]
    pub redis_sentinel_password: Option<RedisPassword>,

    /// Speak TLS to the sentinels, the master and its replicas, or the cluster's nodes
    /// (with --redis-ca-cert for a private CA).
    #[arg(long, env = "CHATROOM_REDIS_TLS", requires = "redis_nodes")]
    pub redis_tls: bool,

    /// When a line counts as accepted: `async`, when the master has it (a failover may
    /// lose the newest lines); `replica`, when a replica has it too (lines are delivered
    /// only then; the master needs a replica, see docs/scaling.md).
    #[arg(long, env = "CHATROOM_REDIS_DURABILITY", value_enum, default_value_t = crate::backend::redis::Durability::Async)]
    pub redis_durability: crate::backend::redis::Durability,

    /// Under `--redis-durability replica`: how long a replica has to acknowledge the
    /// newest lines before their sender is told they are not yet safe (ms).
    #[arg(long, env = "CHATROOM_REDIS_REPLICA_WAIT_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_replica_wait_ms: u64,

    /// Seconds a session record lives in Redis without its node refreshing it.
    #[arg(long, env = "CHATROOM_SESSION_TTL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(3..=3_600))]
    pub session_ttl_secs: u64,
}

/// What the room keeps and shows, and how presence waits.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Room")]
pub struct RoomSettings {
    /// Room events kept for clients that resume (in the Redis stream, approximately, or in memory).
    #[arg(long, env = "CHATROOM_STREAM_MAX_LEN", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub stream_max_len: u64,

    /// Room events a joining chatroom client is shown.
    #[arg(long, env = "CHATROOM_HISTORY_LEN", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub history_len: u64,

    /// Age in seconds beyond which room events are not shown as history.
    #[arg(long, env = "CHATROOM_HISTORY_MAX_AGE_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub history_max_age_secs: u64,

    /// Backlogs (history or missed events) this node reads at once for joining clients;
    /// the others wait their turn.
    #[arg(long, env = "CHATROOM_MAX_BACKLOG_READS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_024))]
    pub max_backlog_reads: u32,

    /// Seconds a chatroom user (a client key) whose connections all closed stays in the
    /// room before its leave is announced: a reconnect or reload within it is silent.
    #[arg(long, env = "CHATROOM_PRESENCE_GRACE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub presence_grace_secs: u64,

    /// Rooms the service holds at once (in the cluster); opening one more is refused.
    #[arg(long, env = "CHATROOM_MAX_ROOMS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rooms: u64,

    /// Days a room stays with nobody in it before it is forgotten with its events.
    #[arg(long, env = "CHATROOM_ROOM_IDLE_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_650))]
    pub room_idle_days: u64,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "CHATROOM_MAX_ROOMS_PER_CONNECTION", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_rooms_per_connection: u32,

    /// Seconds a node may miss its presence beat (every second) before the other nodes
    /// take it for dead and announce the leave of its users who did not come back elsewhere.
    #[arg(long, env = "CHATROOM_NODE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub node_timeout_secs: u64,
}

/// Heartbeats, drain and shutdown.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Lifecycle")]
pub struct LifecycleSettings {
    /// Seconds between heartbeats; keep it well below the load balancer's idle timeout (60 s on most clouds).
    #[arg(long, env = "CHATROOM_PING_INTERVAL_SECS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=50))]
    pub ping_interval_secs: u64,

    /// Seconds a client has to answer a heartbeat before it is dropped.
    #[arg(long, env = "CHATROOM_PING_TIMEOUT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub ping_timeout_secs: u64,

    /// Bound in seconds on the drain after SIGTERM or Ctrl-C: the node exits by then even
    /// if connections are still closing.
    #[arg(long, env = "CHATROOM_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_timeout_secs: u64,

    /// Seconds a draining node keeps its clients after turning not ready, so that a load
    /// balancer checking `/readyz` stops sending it traffic first.
    #[arg(long, env = "CHATROOM_DRAIN_DELAY_SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub drain_delay_secs: u64,
}

/// The operators' API and retention.
#[derive(Debug, Clone, clap::Args)]
pub struct ModerationSettings {
    /// The token the admin API (`/admin/…`) asks for as `Authorization: Bearer TOKEN`, at
    /// least 32 characters; without it the API is off. Never logged.
    #[arg(long, env = "CHATROOM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// Days a room event is kept; older ones are deleted (checked at least hourly).
    /// Fractions are allowed (0.001 is 86.4 s).
    #[arg(long, env = "CHATROOM_RETENTION_DAYS", default_value = "30", value_parser = parse_retention)]
    pub retention_days: Duration,
}

/// Who may connect (`docs/auth.md`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Access")]
pub struct AuthSettings {
    /// `open`: tokens optional, anonymous users chat; `token`: every connection needs a
    /// valid token; `mixed-readonly`: anonymous users read public rooms, signed-in users post.
    #[arg(long = "auth", env = "CHATROOM_AUTH", value_enum, default_value_t = crate::auth::AuthPolicy::Open)]
    pub policy: crate::auth::AuthPolicy,

    /// The HS256 secret connection tokens are signed with, at least 32 bytes. Never logged.
    #[arg(long, env = "CHATROOM_TOKEN_HMAC_SECRET", hide_env_values = true, conflicts_with = "token_public_key")]
    pub token_hmac_secret: Option<HmacSecret>,

    /// A PEM file with the RSA (RS256) or P-256 (ES256) public key connection tokens are
    /// checked with.
    #[arg(long, env = "CHATROOM_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,

    /// The `aud` connection tokens must carry; without it, tokens are taken without one.
    #[arg(long, env = "CHATROOM_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Where the page fetches its connection token (with the browser's cookies) before
    /// each connection and before the token expires: a path on this site (`/auth/chat-token`)
    /// or an `http(s)://` URL, answering `{"token": "…"}`.
    #[arg(long, env = "CHATROOM_TOKEN_URL")]
    pub token_url: Option<TokenUrl>,
}

/// Where the page fetches its connection token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUrl {
    url: String,
    /// `scheme://host[:port]` of an absolute URL, for the page's connect-src.
    origin: Option<String>,
}

impl TokenUrl {
    /// The URL as the page fetches it.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The origin the page must be allowed to connect to (`None` for a path of this site).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

impl std::str::FromStr for TokenUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let uri: axum::http::Uri = raw.parse().map_err(|_| "not a URL".to_owned())?;
        let origin = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme @ ("http" | "https")), Some(authority)) => Some(format!("{scheme}://{authority}")),
            (None, None) if raw.starts_with('/') && !raw.starts_with("//") => None,
            _ => return Err("expected a path (/auth/chat-token) or an http(s):// URL".into()),
        };
        Ok(Self { url: raw.to_owned(), origin })
    }
}

/// The connection tokens' HMAC secret; it never appears when printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(String);

impl HmacSecret {
    /// The secret itself, to check signatures with.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::str::FromStr for HmacSecret {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // RFC 7518: an HS256 key at least as long as the hash.
        if raw.len() < 32 {
            return Err("expected at least 32 bytes".into());
        }
        Ok(Self(raw.to_owned()))
    }
}

impl std::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSecret(…)")
    }
}

/// How often the retention is checked at most: hourly, or more often for a short one.
pub fn retention_check_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3_600))
}

fn parse_retention(raw: &str) -> Result<Duration, String> {
    let days: f64 = raw.parse().map_err(|_| format!("not a number of days: {raw:?}"))?;
    if !(0.000_01..=3_650.0).contains(&days) {
        return Err("expected 0.00001 to 3650 days".into());
    }
    Ok(Duration::from_secs_f64(days * 86_400.0))
}

/// The admin API's token; it never appears when printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token itself, to compare with what a request presents.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for AdminToken {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.chars().count() < 32 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("expected at least 32 characters, without spaces".into());
        }
        Ok(Self(raw.to_owned()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// A Redis URL; its password never appears when it is printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL itself, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let scheme = raw.split_once("://").map(|(scheme, _)| scheme).unwrap_or_default();
        if !matches!(scheme, "redis" | "rediss") {
            return Err("expected redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://…".into());
        }
        redis::Client::open(raw).map_err(|err| err.to_string())?;
        Ok(Self(raw.to_owned()))
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_password(&self.0))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// A server's address, `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host name or IP address.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl std::str::FromStr for HostPort {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected = || format!("expected HOST:PORT, got {raw:?}");
        let (host, port) = raw.trim().rsplit_once(':').ok_or_else(expected)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| expected())?;
        if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            return Err(expected());
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A Redis password; it never appears when printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(String);

impl RedisPassword {
    /// The password itself, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RedisPassword {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.is_empty() {
            return Err("an empty password: leave the option out instead".into());
        }
        Ok(Self(raw.to_owned()))
    }
}

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPassword(…)")
    }
}

/// `scheme://user:secret@host/…` becomes `scheme://user:***@host/…`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(user, _)| user).unwrap_or(userinfo);
            let hidden = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

fn parse_node_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err("a node name is 1 to 64 printable characters".into());
    }
    Ok(name.to_owned())
}

/// A combination of settings that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "--max-payload-bytes ({payload}) must hold a message of --max-message-chars ({chars}) characters \
         of up to 6 bytes each (a JSON escape) plus framing: raise it to at least {needed}"
    )]
    PayloadTooSmallForMessages { payload: u64, chars: u32, needed: u64 },
    #[error("--stream-max-len ({stream}) must keep at least --history-len ({history}) events")]
    StreamShorterThanHistory { stream: u64, history: u64 },
    #[error("--tls-cert and --tls-key go together: give both, or neither")]
    TlsHalfConfigured,
    #[error("--auth {policy} checks connection tokens: give --token-hmac-secret or --token-public-key")]
    PolicyWithoutKey { policy: &'static str },
    #[error(
        "--redis-durability replica needs one master to wait on: use it with --redis-url or --redis-sentinel, not --redis-cluster"
    )]
    ReplicaDurabilityOnCluster,
}

/// Room for the event name, quotes and escapes around a message's text.
const FRAME_OVERHEAD_BYTES: u64 = 1_024;

impl Settings {
    /// Settings with every default, listening on `addr`.
    pub fn with_addr(addr: SocketAddr) -> Self {
        let mut settings = <Self as clap::Parser>::parse_from(["chatroom"]);
        settings.listen.addr = addr;
        settings
    }

    /// Checks what clap cannot check field by field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A message just over the limit must reach the handler to get a clear refusal,
        // instead of having its connection closed by the Engine.IO payload limit.
        // Clients may send each character as a six-byte JSON escape (python-socketio does).
        let needed = u64::from(self.limits.max_message_chars) * 6 + FRAME_OVERHEAD_BYTES;
        if self.limits.max_payload_bytes < needed {
            return Err(ConfigError::PayloadTooSmallForMessages {
                payload: self.limits.max_payload_bytes,
                chars: self.limits.max_message_chars,
                needed,
            });
        }
        if self.room.stream_max_len < self.room.history_len {
            return Err(ConfigError::StreamShorterThanHistory {
                stream: self.room.stream_max_len,
                history: self.room.history_len,
            });
        }
        if self.listen.tls_cert.is_some() != self.listen.tls_key.is_some() {
            return Err(ConfigError::TlsHalfConfigured);
        }
        if !self.redis.redis_cluster.is_empty()
            && self.redis.redis_durability == crate::backend::redis::Durability::Replica
        {
            return Err(ConfigError::ReplicaDurabilityOnCluster);
        }
        let auth = &self.auth;
        let has_key = auth.token_hmac_secret.is_some() || auth.token_public_key.is_some();
        if !has_key && auth.policy != crate::auth::AuthPolicy::Open {
            let policy = if auth.policy == crate::auth::AuthPolicy::Token { "token" } else { "mixed-readonly" };
            return Err(ConfigError::PolicyWithoutKey { policy });
        }
        Ok(())
    }

    /// The longest accepted chat message, in characters.
    pub fn max_message_chars(&self) -> usize {
        usize::try_from(self.limits.max_message_chars).unwrap_or(usize::MAX)
    }

    /// How many room events the bus keeps.
    pub fn stream_max_len(&self) -> usize {
        usize::try_from(self.room.stream_max_len).unwrap_or(usize::MAX)
    }

    /// The heartbeat interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.lifecycle.ping_interval_secs)
    }

    /// The heartbeat answer timeout.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_secs(self.lifecycle.ping_timeout_secs)
    }

    /// What a joining client is shown.
    pub fn history(&self) -> crate::backlog::HistoryLimits {
        crate::backlog::HistoryLimits {
            len: usize::try_from(self.room.history_len).unwrap_or(usize::MAX),
            max_age: Duration::from_secs(self.room.history_max_age_secs),
        }
    }

    /// How many rooms the service holds, and for how long.
    pub fn rooms(&self) -> crate::backend::RoomPolicy {
        crate::backend::RoomPolicy {
            max_rooms: usize::try_from(self.room.max_rooms).unwrap_or(usize::MAX),
            idle: Duration::from_secs(self.room.room_idle_days * 24 * 3600),
        }
    }

    /// How the room's presence waits for users and nodes.
    pub fn presence(&self) -> crate::backend::redis::PresenceTimings {
        crate::backend::redis::PresenceTimings {
            grace: Duration::from_secs(self.room.presence_grace_secs),
            node_timeout: Duration::from_secs(self.room.node_timeout_secs),
        }
    }

    /// How long a session record outlives its last refresh.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.redis.session_ttl_secs)
    }

    /// The rate limits of users and addresses.
    pub fn rate_limits(&self) -> crate::limits::RateLimits {
        crate::limits::RateLimits::new(crate::limits::Rates {
            messages_per_sec: self.limits.message_rate,
            message_burst: self.limits.message_burst,
            renames_per_min: self.limits.renames_per_minute,
            rename_burst: self.limits.rename_burst,
            history_per_sec: self.limits.history_rate,
            history_burst: self.limits.history_burst,
            address_factor: self.limits.address_limit_factor,
            flood_after: self.limits.flood_disconnect_after,
        })
    }

    /// How client addresses are found, and how many connections each may hold.
    pub fn address_policy(&self) -> crate::addresses::AddressPolicy {
        crate::addresses::AddressPolicy::new(
            self.listen.trusted_proxies.clone(),
            usize::try_from(self.limits.max_connections_per_address).unwrap_or(usize::MAX),
        )
    }

    /// How long a draining node keeps its clients before telling them to reconnect.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.lifecycle.drain_delay_secs)
    }

    /// The shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.lifecycle.shutdown_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::try_parse_from(["chatroom"]).unwrap();
        assert_eq!(s.listen.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(s.limits.max_message_chars, 2000);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn flags_set_values() {
        let s = Settings::try_parse_from(["chatroom", "--addr", "127.0.0.1:0", "--max-message-chars", "10"]).unwrap();
        assert_eq!(s.listen.addr.port(), 0);
        assert_eq!(s.limits.max_message_chars, 10);
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for args in [
            &["chatroom", "--addr", "nowhere"][..],
            &["chatroom", "--max-message-chars", "0"],
            &["chatroom", "--ping-interval-secs", "90"],
            &["chatroom", "--log-format", "xml"],
            &["chatroom", "--node-timeout-secs", "1"],
            &["chatroom", "--message-rate", "0"],
            &["chatroom", "--max-connections", "0"],
            &["chatroom", "--allowed-origins", "evil.example"],
            &["chatroom", "--presence-grace-secs", "99999"],
        ] {
            let err = Settings::try_parse_from(args).unwrap_err();
            assert!(err.to_string().contains("invalid value"), "{args:?}: {err}");
        }
    }

    #[test]
    fn redis_urls_are_checked_and_never_print_their_password() {
        let s = Settings::try_parse_from(["chatroom", "--redis-url", "redis://:s3cret@127.0.0.1:6379/0"]).unwrap();
        let url = s.redis.redis_url.as_ref().unwrap();
        assert_eq!(url.expose(), "redis://:s3cret@127.0.0.1:6379/0");
        assert_eq!(url.to_string(), "redis://:***@127.0.0.1:6379/0");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(redact_password("rediss://app:pw@h:1"), "rediss://app:***@h:1");
        assert_eq!(redact_password("redis://h:1/2"), "redis://h:1/2");
        assert_eq!(redact_password("redis://token@h"), "redis://***@h");
        for bad in ["http://h", "h:6379", "redis://h:notaport"] {
            assert!(Settings::try_parse_from(["chatroom", "--redis-url", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sentinels_need_the_master_name_and_take_the_place_of_the_url() {
        let sentinel = ["--redis-sentinel", "10.0.0.1:26379,[::1]:26380,redis-s3:26381"];
        let s = Settings::try_parse_from(["chatroom"].into_iter().chain(sentinel).chain([
            "--redis-sentinel-master",
            "chat",
            "--redis-password",
            "pw1",
        ]))
        .unwrap();
        let hosts: Vec<String> = s.redis.redis_sentinel.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["10.0.0.1:26379", "[::1]:26380", "redis-s3:26381"]);
        assert_eq!(s.redis.redis_password.as_ref().map(RedisPassword::expose), Some("pw1"));
        assert!(!format!("{s:?}").contains("pw1"), "the password is hidden");
        let parse = |args: &[&str]| Settings::try_parse_from(["chatroom"].iter().chain(args));
        assert!(parse(&sentinel).is_err(), "without --redis-sentinel-master");
        assert!(parse(&["--redis-sentinel-master", "chat"]).is_err(), "a master name without sentinels");
        assert!(parse(&["--redis-password", "pw"]).is_err(), "a password without sentinels");
        let both = ["--redis-url", "redis://h:1", sentinel[0], sentinel[1], "--redis-sentinel-master", "chat"];
        assert!(parse(&both).is_err(), "a URL and sentinels");
        let cluster = ["--redis-cluster", "10.0.0.1:7000,10.0.0.2:7000", "--redis-password", "pw2", "--redis-tls"];
        let s = parse(&cluster).unwrap();
        assert_eq!(s.redis.redis_cluster.len(), 2);
        assert!(s.redis.redis_tls);
        assert!(parse(&[cluster[0], cluster[1], sentinel[0], sentinel[1], "--redis-sentinel-master", "m"]).is_err());
        let replica = parse(&[cluster[0], cluster[1], "--redis-durability", "replica"]).unwrap();
        assert_eq!(replica.validate(), Err(ConfigError::ReplicaDurabilityOnCluster));
        for bad in ["h", "h:0", ":26379", "h:notaport", "redis://h:1", "a b:1"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn node_names_are_printable_and_short() {
        let s = Settings::try_parse_from(["chatroom", "--node-name", " node-1 "]).unwrap();
        assert_eq!(s.node_name.as_deref(), Some("node-1"));
        for bad in ["", "  ", "a\nb"] {
            assert!(Settings::try_parse_from(["chatroom", "--node-name", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_needs_both_its_files() {
        let s = Settings::try_parse_from(["chatroom", "--tls-cert", "cert.pem"]).unwrap();
        assert_eq!(s.validate(), Err(ConfigError::TlsHalfConfigured));
    }

    #[test]
    fn a_policy_that_needs_tokens_needs_their_key_and_the_secret_stays_hidden() {
        let s = Settings::try_parse_from(["chatroom", "--auth", "token"]).unwrap();
        assert_eq!(s.validate(), Err(ConfigError::PolicyWithoutKey { policy: "token" }));
        let secret = "s".repeat(32);
        let s =
            Settings::try_parse_from(["chatroom", "--auth", "mixed-readonly", "--token-hmac-secret", &secret]).unwrap();
        assert_eq!(s.validate(), Ok(()));
        assert!(!format!("{s:?}").contains(&secret));
        assert!(Settings::try_parse_from(["chatroom", "--token-hmac-secret", "short"]).is_err());
        let both = ["chatroom", "--token-hmac-secret", &secret, "--token-public-key", "key.pem"];
        assert!(Settings::try_parse_from(both).is_err(), "one key or the other");
    }

    #[test]
    fn a_token_url_is_a_path_here_or_an_http_url_elsewhere() {
        let url: TokenUrl = "/auth/chat-token".parse().unwrap();
        assert_eq!((url.as_str(), url.origin()), ("/auth/chat-token", None));
        let url: TokenUrl = "https://login.example:8443/chat/token?x=1".parse().unwrap();
        assert_eq!(url.origin(), Some("https://login.example:8443"));
        for bad in ["javascript:alert(1)", "//evil.example/token", "token", "ftp://h/t"] {
            assert!(bad.parse::<TokenUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_payload_limit_below_the_message_limit_is_refused() {
        let s = Settings::try_parse_from(["chatroom", "--max-message-chars", "30000", "--max-payload-bytes", "100000"])
            .unwrap();
        assert!(matches!(s.validate(), Err(ConfigError::PayloadTooSmallForMessages { needed: 181_024, .. })));
        assert!(
            Settings::try_parse_from(["chatroom", "--max-message-chars", "50000"]).is_err(),
            "over a backlog packet"
        );
    }
}

//! How a node reaches Redis: one server named by a URL, the master a group of sentinels
//! names (followed through failovers), or a Redis Cluster.
//!
//! Invariant: every connection a [`RedisLink`] hands out talks to the server the link
//! takes for the master now (under Cluster: to the master of each key's slot, which the
//! cluster client follows through failovers itself). Under Sentinel a watcher asks the
//! sentinels every second (at once after a command failed for want of a server); when
//! they name another master it switches the link, and each connection opens a new one to
//! it before its next command. Commands in flight at the switch fail and their callers
//! retry, as after any outage.

use super::super::BackendError;
use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError, RedisFuture,
    TlsCertificates, TlsMode, Value,
};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a cluster request is tried again (after a redirection, or a node that went
/// away) within its response timeout.
const CLUSTER_RETRIES: u32 = 3;

/// How often the sentinels are asked which server is the master.
const ASK_SENTINELS_EVERY: Duration = Duration::from_secs(1);

/// Where a node's Redis is, as configured.
#[derive(Clone)]
pub enum RedisTarget {
    /// One server.
    Single {
        /// Its URL (password included).
        url: String,
        /// The CA that signed its TLS certificate, when the system's roots do not vouch for it.
        ca_pem: Option<Vec<u8>>,
    },
    /// The master that a group of sentinels names.
    Sentinel(SentinelTarget),
    /// A Redis Cluster.
    Cluster(ClusterTarget),
}

/// A Redis Cluster, found through some of its nodes.
#[derive(Clone)]
pub struct ClusterTarget {
    /// Some of its nodes, `host:port` each (the client learns the others from them).
    pub nodes: Vec<(String, u16)>,
    /// The password of its nodes.
    pub password: Option<String>,
    /// Whether its nodes speak TLS.
    pub tls: bool,
    /// The CA that signed their certificates, when the system's roots do not vouch for it.
    pub ca_pem: Option<Vec<u8>>,
}

/// A master found through Sentinel.
#[derive(Clone)]
pub struct SentinelTarget {
    /// The sentinels, `host:port` each.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels know the master by.
    pub master: String,
    /// The password of the master and its replicas.
    pub password: Option<String>,
    /// The password of the sentinels.
    pub sentinel_password: Option<String>,
    /// Whether the master, its replicas and the sentinels speak TLS.
    pub tls: bool,
    /// The CA that signed their certificates, when the system's roots do not vouch for it.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single { url, .. } => f.write_str(&crate::configuration::redact_password(url)),
            Self::Sentinel(target) => {
                write!(f, "master {:?} of sentinels {}", target.master, addresses(&target.sentinels))
            }
            Self::Cluster(target) => write!(f, "cluster of {}", addresses(&target.nodes)),
        }
    }
}

/// `host:port,…`.
fn addresses(nodes: &[(String, u16)]) -> String {
    nodes.iter().map(|(host, port)| format!("{host}:{port}")).collect::<Vec<_>>().join(",")
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// The node's way to Redis, shared by all its connections.
#[derive(Clone)]
pub struct RedisLink {
    shared: Arc<Shared>,
}

struct Shared {
    /// The master's client now (under Cluster: of the first given node).
    master: RwLock<Client>,
    /// Bumped at every switch to another master.
    generation: AtomicU64,
    /// How the master is found.
    kind: Kind,
    /// Asks the watcher to ask the sentinels now.
    ask: Arc<Notify>,
}

/// How the master is found.
enum Kind {
    /// It is the one server of the URL.
    Single,
    /// The sentinels name it.
    Sentinel(Box<tokio::sync::Mutex<SentinelClient>>),
    /// There is one per slot: the cluster client finds them.
    Cluster {
        target: ClusterTarget,
        /// A client of each given node, for pub/sub (which Redis Cluster spreads to every node).
        seeds: Vec<Client>,
        /// The seed the next subscription uses: each tries the next, so that one whose
        /// node died moves on.
        next: AtomicUsize,
    },
}

impl RedisLink {
    /// Finds the server: at once for a URL, through the sentinels (one of which must name
    /// a master that answers as one) under Sentinel, by asking its nodes under Cluster;
    /// then follows failovers for the life of the link.
    pub async fn open(target: &RedisTarget) -> Result<Self, BackendError> {
        let (master, kind) = match target {
            RedisTarget::Single { url, ca_pem: None } => (Client::open(url.as_str())?, Kind::Single),
            RedisTarget::Single { url, ca_pem: Some(pem) } => {
                (Client::build_with_tls(url.as_str(), certificates(pem))?, Kind::Single)
            }
            RedisTarget::Sentinel(target) => {
                let mut sentinel = sentinel_client(target)?;
                (sentinel.async_get_client().await?, Kind::Sentinel(Box::new(tokio::sync::Mutex::new(sentinel))))
            }
            RedisTarget::Cluster(target) => {
                let seeds = cluster_seeds(target)?;
                // Fails at start when no given node answers as part of a cluster.
                let _: Value = redis::cmd("PING")
                    .query_async(&mut cluster_connection(target, Duration::from_secs(2)).await?)
                    .await?;
                let first = seeds
                    .first()
                    .cloned()
                    .ok_or_else(|| BackendError::UnexpectedReply("no cluster node given".into()))?;
                (first, Kind::Cluster { target: target.clone(), seeds, next: AtomicUsize::new(0) })
            }
        };
        let followed = matches!(kind, Kind::Sentinel(_));
        let shared = Arc::new(Shared {
            master: RwLock::new(master),
            generation: AtomicU64::new(0),
            kind,
            ask: Arc::new(Notify::new()),
        });
        if followed {
            tracing::info!(master = %address(&shared.master.read()), "Redis master found through Sentinel");
            tokio::spawn(watch(Arc::downgrade(&shared)));
        }
        Ok(Self { shared })
    }

    /// A connection that notices an outage within `response_timeout` and follows the master.
    pub async fn connect(&self, response_timeout: Duration) -> Result<RedisConn, BackendError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let generation = self.generation();
        match &self.shared.kind {
            Kind::Single => Ok(RedisConn::Direct(self.client().get_connection_manager_with_config(config).await?)),
            Kind::Sentinel(_) => {
                let manager = self.client().get_connection_manager_with_config(config.clone()).await?;
                let current = Arc::new(tokio::sync::Mutex::new((generation, manager)));
                Ok(RedisConn::Followed(Followed { shared: self.shared.clone(), config, current }))
            }
            Kind::Cluster { target, .. } => Ok(RedisConn::Cluster(cluster_connection(target, response_timeout).await?)),
        }
    }

    /// A client for pub/sub, which takes a connection of its own: of the master now, or
    /// under Cluster of the next given node.
    pub fn client(&self) -> Client {
        match &self.shared.kind {
            Kind::Cluster { seeds, next, .. } if !seeds.is_empty() => {
                seeds[next.fetch_add(1, Ordering::Relaxed) % seeds.len()].clone()
            }
            _ => self.shared.master.read().clone(),
        }
    }

    /// How many times the link switched to another master: a reader that saw it change
    /// checks that the new master holds what it read from the old one.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }
}

/// TLS trusting the CA in `pem`.
fn certificates(pem: &[u8]) -> TlsCertificates {
    TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) }
}

/// A connection to the cluster of `target`, following its slots and failovers.
async fn cluster_connection(
    target: &ClusterTarget,
    response_timeout: Duration,
) -> Result<ClusterConnection, BackendError> {
    let mut builder = ClusterClientBuilder::new(target.nodes.iter().map(|(host, port)| (host.as_str(), *port)));
    if let Some(password) = &target.password {
        builder = builder.password(password.clone());
    }
    if target.tls {
        builder = builder.tls(TlsMode::Secure);
        if let Some(pem) = &target.ca_pem {
            builder = builder.certs(certificates(pem));
        }
    }
    // The response timeout bounds a whole request, its retries and redirections included
    // (it must be set on the builder for that).
    let client: ClusterClient = builder
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(response_timeout)
        .retries(CLUSTER_RETRIES)
        .build()?;
    Ok(client.get_async_connection().await?)
}

/// A client of each given node of the cluster of `target`.
fn cluster_seeds(target: &ClusterTarget) -> Result<Vec<Client>, BackendError> {
    let mut seeds = Vec::new();
    for (host, port) in &target.nodes {
        let addr = if target.tls {
            ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        };
        let mut redis = RedisConnectionInfo::default();
        if let Some(password) = &target.password {
            redis = redis.set_password(password);
        }
        let info = addr.into_connection_info()?.set_redis_settings(redis);
        seeds.push(match &target.ca_pem {
            Some(pem) if target.tls => Client::build_with_tls(info, certificates(pem))?,
            _ => Client::open(info)?,
        });
    }
    Ok(seeds)
}

/// The sentinels' client for `target`.
fn sentinel_client(target: &SentinelTarget) -> Result<SentinelClient, BackendError> {
    let addrs = target.sentinels.iter().map(|(host, port)| {
        if target.tls {
            ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut builder = SentinelClientBuilder::new(addrs, &target.master, SentinelServerType::Master)?;
    if let Some(password) = &target.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(password) = &target.sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if target.tls {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(pem) = &target.ca_pem {
            builder = builder
                .set_client_to_redis_certificates(certificates(pem))
                .set_client_to_sentinel_certificates(certificates(pem));
        }
    }
    Ok(builder.build()?)
}

/// The address a client connects to, for the log.
fn address(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// Asks the sentinels which server is the master, every second or when asked, and
/// switches the link when they name another; ends with the link.
async fn watch(shared: Weak<Shared>) {
    let mut lost: Option<String> = None;
    loop {
        let Some(link) = shared.upgrade() else { return };
        let Kind::Sentinel(sentinel) = &link.kind else { return };
        let found = sentinel.lock().await.async_get_client().await;
        match found {
            Ok(client) => {
                let (was, now) = (address(&link.master.read()), address(&client));
                if was != now {
                    *link.master.write() = client;
                    link.generation.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%was, %now, "the sentinels name a new Redis master: switching to it");
                } else if lost.is_some() {
                    tracing::info!(master = %now, "the Redis master answers again");
                }
                lost = None;
            }
            Err(err) => {
                let err = err.to_string();
                if lost.as_ref() != Some(&err) {
                    tracing::warn!(%err, "no Redis master: the sentinels name none that answers");
                }
                lost = Some(err);
            }
        }
        let ask = link.ask.clone();
        drop(link);
        let _ = tokio::time::timeout(ASK_SENTINELS_EVERY, ask.notified()).await;
    }
}

/// One connection to the node's Redis; cheap to clone, and clones share it.
#[derive(Clone)]
pub enum RedisConn {
    /// To one server named by a URL (reconnecting to it after an outage).
    Direct(ConnectionManager),
    /// To the master that Sentinel names now.
    Followed(Followed),
    /// To a Redis Cluster: each command goes to the master of its key's slot.
    Cluster(ClusterConnection),
}

/// A connection that moves to the new master after a failover.
#[derive(Clone)]
pub struct Followed {
    shared: Arc<Shared>,
    config: ConnectionManagerConfig,
    /// The link's generation the connection was opened in, and the connection.
    current: Arc<tokio::sync::Mutex<(u64, ConnectionManager)>>,
}

impl Followed {
    /// The connection to the master now: a new one when the link switched since.
    async fn current(&self) -> Result<ConnectionManager, RedisError> {
        let mut current = self.current.lock().await;
        let generation = self.shared.generation.load(Ordering::Relaxed);
        if current.0 != generation {
            let client = self.shared.master.read().clone();
            let manager = client.get_connection_manager_with_config(self.config.clone()).await?;
            *current = (generation, manager);
        }
        Ok(current.1.clone())
    }

    /// After a failure for want of a server, the sentinels are asked at once.
    fn note<T>(&self, result: &Result<T, RedisError>) {
        if let Err(err) = result {
            let lost = err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.is_timeout()
                || matches!(err.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
            if lost {
                self.shared.ask.notify_one();
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(manager) => manager.req_packed_command(cmd),
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
            Self::Followed(followed) => Box::pin(async move {
                let result = async { followed.current().await?.req_packed_command(cmd).await }.await;
                followed.note(&result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
            Self::Followed(followed) => Box::pin(async move {
                let result =
                    async { followed.current().await?.req_packed_commands(pipeline, offset, count).await }.await;
                followed.note(&result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(manager) => manager.get_db(),
            Self::Followed(_) | Self::Cluster(_) => 0,
        }
    }
}

//! Builds the node: the axum router (page, assets, Socket.IO on one port), the bus
//! delivery task, and a bounded graceful shutdown.

use crate::addresses;
use crate::admin;
use crate::auth::{Gate, KeyError, TokenVerifier};
use crate::backend::BackendError;
use crate::backend::memory::MemoryModeration;
use crate::backend::moderation::Moderation;
use crate::backend::redis::{
    ClusterTarget, Durability, RedisBuses, RedisLink, RedisModeration, RedisPresence, RedisSessions, RedisTarget,
    Replication, SentinelTarget,
};
use crate::chat::{Backends, ChatService};
use crate::configuration::AuthSettings;
use crate::configuration::Settings;
use crate::configuration::retention_check_every;
use crate::health::{self, Health};
use crate::metrics::{self, Metrics};
use crate::moderation::Moderator;
use crate::moderation_view;
use crate::realtime::{self, Pacers, Realtime};
use crate::request_head;
use crate::security::{self, AllowedOrigins};
use crate::status::{self, StatusBoard};
use crate::tls::{self, NodeListener, TlsError};
use app::{PageSettings, shell};
use axum::Router;
use axum::routing::get;
use leptos::prelude::{LeptosOptions, get_configuration};
use socketioxide::SocketIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::services::ServeDir;

/// The site's name in the workspace metadata: `/pkg/chatroom.js`, `.wasm`, `.css`.
const SITE_NAME: &str = "chatroom";

/// Why the node could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    #[error("cannot read the Leptos site settings: {0}")]
    Site(#[from] leptos::config::errors::LeptosConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot use Redis at {target}: {source}")]
    Redis { target: String, source: BackendError },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read the Redis CA certificate {path}: {source}")]
    RedisCa { path: String, source: std::io::Error },
    #[error("cannot read the token public key {path}: {source}")]
    TokenKeyFile { path: String, source: std::io::Error },
    #[error("cannot check tokens with {what}: {source}")]
    TokenKey { what: String, source: KeyError },
}

/// A node, bound to its port and ready to serve.
pub struct Application {
    listener: NodeListener,
    addr: SocketAddr,
    node_name: String,
    router: Router,
    io: SocketIo,
    chat: Arc<ChatService>,
    realtime: Realtime,
    health: Health,
    /// Tasks that run for the life of the node (bus delivery, session refresh).
    background: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
    drain_delay: Duration,
}

/// Connections the kernel may hold for the node before it accepts them. Thousands of
/// clients reconnect at once when a node of a cluster goes away; with the usual 1,024 the
/// queue overflows and the kernel drops some of them (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// The gate of the node's access settings, with the key its tokens are checked with.
fn token_gate(auth: &AuthSettings) -> Result<Gate, StartupError> {
    let audience = auth.token_audience.as_deref();
    let verifier = match (&auth.token_hmac_secret, &auth.token_public_key) {
        (Some(secret), _) => Some(
            TokenVerifier::hmac(secret.expose(), audience)
                .map_err(|source| StartupError::TokenKey { what: "--token-hmac-secret".into(), source })?,
        ),
        (None, Some(path)) => {
            let what = path.display().to_string();
            let pem =
                std::fs::read(path).map_err(|source| StartupError::TokenKeyFile { path: what.clone(), source })?;
            Some(TokenVerifier::public_key(&pem, audience).map_err(|source| StartupError::TokenKey { what, source })?)
        }
        (None, None) => None,
    };
    Ok(Gate::new(auth.policy, verifier))
}

/// Binds the node's listener (with `SO_REUSEADDR`, as `TcpListener::bind` does).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Application {
    /// Binds the listener and assembles the node from its settings.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let site = site_options(&settings)?;
        let bind_error = |source| StartupError::Bind { addr: settings.listen.addr, source };
        let listener = listen(settings.listen.addr).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let listener = match (&settings.listen.tls_cert, &settings.listen.tls_key) {
            (Some(cert), Some(key)) => {
                NodeListener::tls(listener, tls::server_config(cert, key)?).map_err(bind_error)?
            }
            _ => NodeListener::Plain(listener),
        };
        let node_name = settings
            .node_name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", gethostname::gethostname().to_string_lossy(), addr.port()));

        let mut background = Vec::new();
        let mut moderation: Arc<dyn Moderation> = Arc::new(MemoryModeration::default());
        let chat = Arc::new(
            match redis_target(&settings)? {
                None => {
                    tracing::info!(node = %node_name, "single node with in-memory state");
                    ChatService::in_memory_with(
                        settings.max_message_chars(),
                        settings.stream_max_len(),
                        settings.rooms(),
                    )
                }
                Some(target) => {
                    let (chat, keep_alive, shared) = cluster_chat(&settings, &target, &node_name).await?;
                    background.push(keep_alive);
                    moderation = shared;
                    tracing::info!(node = %node_name, redis = %target, "cluster node: the rooms are shared through Redis");
                    chat
                }
            }
            .with_history(settings.history())
            .with_backlog_reads(usize::try_from(settings.room.max_backlog_reads).unwrap_or(usize::MAX))
            .with_grace(settings.presence().grace),
        );

        let (socket_layer, io) = SocketIo::builder()
            .ping_interval(settings.ping_interval())
            .ping_timeout(settings.ping_timeout())
            .max_payload(settings.limits.max_payload_bytes)
            .ws_max_message_size(usize::try_from(settings.limits.max_payload_bytes).unwrap_or(usize::MAX))
            .max_buffer_size(usize::try_from(settings.limits.client_queue).unwrap_or(usize::MAX))
            .ws_read_buffer_size(usize::try_from(settings.limits.ws_read_buffer_bytes).unwrap_or(usize::MAX))
            .build_layer();
        let metrics = Arc::new(Metrics::default());
        let addresses = Arc::new(settings.address_policy());
        let pacers =
            Arc::new(Pacers::new(io.clone(), usize::try_from(settings.limits.client_queue).unwrap_or(usize::MAX)));
        let gate = Arc::new(token_gate(&settings.auth)?);
        let moderator = Arc::new(Moderator::new(chat.clone(), moderation, &node_name));
        moderator.refresh().await;
        background.push(tokio::spawn(moderator.clone().follow_sanctions()));
        let retention = settings.moderation.retention_days;
        background.push(tokio::spawn(moderator.clone().keep_retention(retention, retention_check_every(retention))));
        let realtime = Realtime::new(
            chat.clone(),
            &node_name,
            metrics.clone(),
            settings.rate_limits(),
            addresses.clone(),
            pacers.clone(),
            moderator.clone(),
        )
        .with_max_rooms(usize::try_from(settings.room.max_rooms_per_connection).unwrap_or(usize::MAX))
        .with_gate(gate.clone());
        background.push(tokio::spawn(realtime.clone().sweep_presence()));
        background.push(tokio::spawn(realtime.clone().follow_orders()));
        let health = Health::new(&node_name, chat.clone()).with_capacity(
            realtime.connection_count(),
            usize::try_from(settings.limits.max_connections).unwrap_or(usize::MAX),
        );
        realtime.register(&io);
        realtime.deliver_lobby();

        // Leptos renders on the tokio runtime; a second call (tests) finds it set already.
        let _ = any_spawner::Executor::init_tokio();
        let token_url = settings.auth.token_url.clone();
        let token_origin = token_url.as_ref().and_then(|url| url.origin().map(str::to_owned));
        let page_settings = PageSettings { token_url: token_url.map(|url| url.as_str().to_owned()) };
        let page = get(leptos_axum::render_app_to_stream_with_context(
            move || security::page_security_policy(token_origin.as_deref()),
            {
                let site = site.clone();
                move || shell(site.clone(), page_settings.clone())
            },
        ));
        // `/` opens the lobby, `/r/{room}` a room: the same page, which reads its address.
        let router = Router::new()
            .route("/", page.clone())
            .route("/r/{room}", page)
            // The wasm, JS and CSS under /pkg and the files of public/ all sit in the site root.
            .fallback_service(ServeDir::new(site.site_root.as_ref()))
            .layer(socket_layer)
            // Outside the socket layer, so that it sees each poll answered.
            .layer(axum::middleware::from_fn_with_state(pacers, realtime::watch_polls))
            .layer(axum::middleware::from_fn(request_head::own_request_head))
            // Outside the socket layer, so that a draining node refuses before a handshake.
            .layer(axum::middleware::from_fn_with_state(health.clone(), health::gate_connections))
            .layer(axum::middleware::from_fn_with_state(moderator.clone(), admin::refuse_banned))
            .layer(axum::middleware::from_fn_with_state(addresses, addresses::tag_client))
            .merge(health::routes(health.clone()));
        let board = StatusBoard::new(
            &node_name,
            addr.to_string(),
            chat.clone(),
            health.clone(),
            metrics.clone(),
            realtime.clone(),
        );
        background.push(tokio::spawn(board.clone().publish()));
        // Metrics and the status page on their own address when one is given (kept off
        // the public port).
        let mut operators = metrics::routes(metrics).merge(status::routes(board));
        if let Some(token) = settings.moderation.admin_token.clone() {
            operators = operators
                .merge(admin::routes(moderator.clone(), token.clone(), gate.clone()))
                .merge(moderation_view::routes(moderator.clone(), chat.clone(), token));
        }
        let router = match settings.listen.metrics_addr {
            None => router.merge(operators),
            Some(addr) => {
                let bind_error = |source| StartupError::Bind { addr, source };
                let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                tracing::info!(addr = %listener.local_addr().map_err(bind_error)?, "metrics and status on their own address");
                let metrics_router = operators;
                background.push(tokio::spawn(async move {
                    if let Err(err) = axum::serve(listener, metrics_router).await {
                        tracing::error!(%err, "the metrics listener failed");
                    }
                }));
                router
            }
        };
        // Outermost: a foreign origin is refused before anything else runs.
        let allowed = Arc::new(AllowedOrigins::new(settings.listen.allowed_origins.clone()));
        let router = router
            .layer(axum::middleware::from_fn(security::security_headers))
            .layer(axum::middleware::from_fn_with_state(allowed, security::check_origin));

        Ok(Self {
            listener,
            addr,
            node_name,
            router,
            io,
            chat,
            realtime,
            health,
            background,
            shutdown_timeout: settings.shutdown_timeout(),
            drain_delay: settings.drain_delay(),
        })
    }

    /// The node's name, as its clients see it.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The node's base URL (`https` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.listener.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's chat service.
    pub fn chat(&self) -> Arc<ChatService> {
        self.chat.clone()
    }

    /// Serves until `shutdown` completes, then drains: not ready and no new connections
    /// at once; after the drain delay, every event published so far delivered here, then
    /// the clients told to reconnect (their transport is closed, so they come back through
    /// the load balancer elsewhere) and their sessions closed. Exits by the shutdown bound.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let (drained_tx, mut drained_rx) = watch::channel(false);
        let (io, realtime, health, delay) =
            (self.io.clone(), self.realtime.clone(), self.health.clone(), self.drain_delay);
        let mut drain_rx = stop_rx.clone();
        let draining = tokio::spawn(async move {
            let _ = drain_rx.wait_for(|stop| *stop).await;
            tracing::info!(?delay, "draining: not ready, new connections refused");
            health.start_draining();
            tokio::time::sleep(delay).await;
            if !realtime.wait_delivered(Duration::from_secs(5)).await {
                tracing::warn!("not every room event was delivered before the clients were let go");
            }
            tracing::info!("draining: telling clients to reconnect elsewhere");
            io.close().await;
            // Their sessions close (and presence learns it) before the node goes.
            realtime.end_all_sessions();
            realtime.wait_for_sessions().await;
            tracing::info!("drained: every session closed");
            let _ = drained_tx.send(true);
        });
        let stop_serving = async move {
            let _ = drained_rx.wait_for(|drained| *drained).await;
        };
        let serve = crate::serve::serve(self.listener, self.router, stop_serving);
        let mut deadline_rx = stop_rx;
        let timeout = self.shutdown_timeout;
        let deadline = async move {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            () = serve => {}
            () = deadline => tracing::warn!(?timeout, "still draining at the shutdown deadline; exiting anyway"),
        }
        draining.abort();
        for task in &self.background {
            task.abort();
        }
        self.realtime.stop_delivery();
    }
}

/// Where Redis is, from the settings: `None` for a single node with in-memory state.
fn redis_target(settings: &Settings) -> Result<Option<RedisTarget>, StartupError> {
    let redis = &settings.redis;
    let ca_pem = match &redis.redis_ca_cert {
        None => None,
        Some(path) => Some(
            std::fs::read(path).map_err(|source| StartupError::RedisCa { path: path.display().to_string(), source })?,
        ),
    };
    if let Some(url) = &redis.redis_url {
        return Ok(Some(RedisTarget::Single { url: url.expose().to_owned(), ca_pem }));
    }
    let addresses = |nodes: &[crate::configuration::HostPort]| nodes.iter().map(|n| (n.host.clone(), n.port)).collect();
    let password = redis.redis_password.as_ref().map(|p| p.expose().to_owned());
    if !redis.redis_cluster.is_empty() {
        return Ok(Some(RedisTarget::Cluster(ClusterTarget {
            nodes: addresses(&redis.redis_cluster),
            password,
            tls: redis.redis_tls,
            ca_pem,
        })));
    }
    let Some(master) = &redis.redis_sentinel_master else { return Ok(None) };
    Ok(Some(RedisTarget::Sentinel(SentinelTarget {
        sentinels: addresses(&redis.redis_sentinel),
        master: master.clone(),
        password,
        sentinel_password: redis.redis_sentinel_password.as_ref().map(|p| p.expose().to_owned()),
        tls: redis.redis_tls,
        ca_pem,
    })))
}

/// The chat service over Redis, and the task that keeps this node's sessions alive.
async fn cluster_chat(
    settings: &Settings,
    target: &RedisTarget,
    node_name: &str,
) -> Result<(ChatService, JoinHandle<()>, Arc<dyn Moderation>), StartupError> {
    let redis_error = |source| StartupError::Redis { target: target.to_string(), source };
    let link = RedisLink::open(target).await.map_err(redis_error)?;
    let replication = match settings.redis.redis_durability {
        Durability::Async => None,
        Durability::Replica => {
            let wait = Duration::from_millis(settings.redis.redis_replica_wait_ms);
            Some(Replication::start(&link, wait).await.map_err(redis_error)?)
        }
    };
    let buses = RedisBuses::connect(&link, settings.stream_max_len(), replication).await.map_err(redis_error)?;
    let sessions = Arc::new(RedisSessions::connect(&link, settings.session_ttl()).await.map_err(redis_error)?);
    let keep_alive = tokio::spawn({
        let sessions = sessions.clone();
        async move { sessions.keep_alive().await }
    });
    let presence = RedisPresence::connect(&link, node_name, settings.stream_max_len(), settings.presence())
        .await
        .map_err(redis_error)?
        .with_policy(settings.rooms());
    let backends = Backends { sessions, buses: Arc::new(buses), presence: Arc::new(presence), rooms: settings.rooms() };
    let moderation = Arc::new(RedisModeration::connect(&link).await.map_err(redis_error)?);
    Ok((ChatService::new(backends, settings.max_message_chars()), keep_alive, moderation))
}

/// Leptos's site settings (output name, site root) from cargo-leptos's environment, with
/// the node's own listen address.
fn site_options(settings: &Settings) -> Result<LeptosOptions, StartupError> {
    // Only cargo-leptos builds carry the output name (Leptos complains on stderr without
    // it); other builds, such as the tests', get the site's name here.
    let built_by_cargo_leptos =
        option_env!("LEPTOS_OUTPUT_NAME").is_some() || std::env::var_os("LEPTOS_OUTPUT_NAME").is_some();
    let mut options = if built_by_cargo_leptos {
        get_configuration(None)?.leptos_options
    } else {
        LeptosOptions::builder().output_name(SITE_NAME).build()
    };
    options.site_addr = settings.listen.addr;
    if let Some(root) = &settings.site_root {
        options.site_root = root.to_string_lossy().as_ref().into();
    }
    Ok(options)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

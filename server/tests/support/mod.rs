//! Test support: a real node on a free port (`spawn_app`) and real Socket.IO clients
//! (the official JavaScript client and python-socketio) scripted over stdin/stdout.
#![allow(dead_code)] // each test file uses a different part

use serde_json::{Value, json};
use server::chat::ChatService;
use server::configuration::Settings;
use server::startup::Application;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

/// How long a test waits for something a client should receive.
pub const WAIT: Duration = Duration::from_secs(10);

/// A node serving on loopback, stopped when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub chat: Arc<ChatService>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// The node's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts a node with default settings on a free port.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a node on a free port after `adjust` changed its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    // The node's logs, at the level RUST_LOG asks (errors only by default), per test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut settings = Settings::with_addr("127.0.0.1:0".parse().expect("literal address"));
    settings.site_root = Some(workspace_root().join("target/site"));
    settings.shutdown_timeout_secs = 1;
    // Tests send bursts far above a person's pace; the limits have tests of their own.
    let unlimited = std::num::NonZeroU32::new(1_000_000).expect("not zero");
    (settings.message_rate, settings.message_burst) = (unlimited, unlimited);
    (settings.renames_per_minute, settings.rename_burst) = (unlimited, unlimited);
    adjust(&mut settings);
    settings.validate().expect("test settings are valid");
    let app = Application::build(settings).await.expect("the node starts");
    let addr = app.local_addr();
    let chat = app.chat();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp { addr, chat, stop: Some(stop) }
}

/// Which official client library drives a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// socket.io-client from npm, under Node.js.
    Js,
    /// python-socketio.
    Python,
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Polling,
    /// Polling first, then upgraded to a WebSocket (the JS client's default).
    Upgrade,
}

impl Transport {
    fn arg(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Polling => "polling",
            Transport::Upgrade => "upgrade",
        }
    }
}

/// A real Socket.IO client in a child process.
pub struct Client {
    pub sid: String,
    pub transport: String,
    label: String,
    /// How long it waits for the next line from its driver.
    patience: Duration,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

fn driver_command(kind: Kind) -> Command {
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    match kind {
        Kind::Js => {
            let mut cmd = Command::new(std::env::var("CHATROOM_TEST_NODE").unwrap_or_else(|_| "node".into()));
            cmd.arg(clients.join("sio_driver.cjs"));
            // socket.io-client is installed with the end-to-end tests' packages.
            cmd.env("NODE_PATH", workspace_root().join("end2end/node_modules"));
            cmd
        }
        Kind::Python => {
            let python = std::env::var("CHATROOM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
            let mut cmd = Command::new(python);
            cmd.arg("-u").arg(clients.join("sio_driver.py"));
            cmd
        }
    }
}

impl Client {
    /// Connects a new legacy client and waits until the server accepted it.
    pub async fn connect(kind: Kind, url: &str, transport: Transport) -> Client {
        Self::start(kind, url, transport, None).await
    }

    /// Connects the JS client as a chatroom client (protocol version in its CONNECT auth).
    pub async fn connect_chatroom(url: &str, transport: Transport) -> Client {
        Self::start(Kind::Js, url, transport, Some(json!({"v": 1}))).await
    }

    /// Connects the JS client as a chatroom client with this CONNECT auth.
    pub async fn connect_with_auth(url: &str, transport: Transport, auth: Value) -> Client {
        Self::start(Kind::Js, url, transport, Some(auth)).await
    }

    /// Connects a legacy JS client that trusts the CA certificate in `ca` (for `https://`).
    pub async fn connect_trusting(url: &str, transport: Transport, ca: &Path) -> Client {
        Self::start_with_env(Kind::Js, url, transport, None, &[("NODE_EXTRA_CA_CERTS", ca)]).await
    }

    async fn start(kind: Kind, url: &str, transport: Transport, auth: Option<Value>) -> Client {
        Self::start_with_env(kind, url, transport, auth, &[]).await
    }

    async fn start_with_env(
        kind: Kind,
        url: &str,
        transport: Transport,
        auth: Option<Value>,
        env: &[(&str, &Path)],
    ) -> Client {
        let label = format!("{kind:?}/{}", transport.arg());
        let mut command = driver_command(kind);
        command.envs(env.iter().map(|(k, v)| (*k, *v)));
        command.arg(url).arg(transport.arg());
        if let Some(auth) = auth {
            command.arg(auth.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the {label} client driver: {err}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut client =
            Client { sid: String::new(), transport: String::new(), label, patience: WAIT, child, stdin, lines };
        let connected = client.next_line().await;
        assert_eq!(connected["type"], "connected", "{}: expected to connect, got {connected}", client.label);
        client.sid = connected["sid"].as_str().unwrap_or_default().to_owned();
        client.transport = connected["transport"].as_str().unwrap_or_default().to_owned();
        client
    }

    /// Waits up to `patience` (instead of the usual 10 s) for each next event.
    pub fn set_patience(&mut self, patience: Duration) {
        self.patience = patience;
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(self.patience, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: nothing received within {:?}", self.label, self.patience))
            .unwrap_or_else(|err| panic!("{}: cannot read the driver: {err}", self.label))
            .unwrap_or_else(|| panic!("{}: the driver exited", self.label));
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{}: bad driver line {line:?}: {err}", self.label))
    }

    async fn command(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("driver stdin open");
        self.stdin.flush().await.expect("driver stdin flush");
    }

    /// Emits `event` with the given arguments.
    pub async fn emit(&mut self, event: &str, args: Value) {
        self.command(json!({"op": "emit", "event": event, "args": args})).await;
    }

    /// `socket.send(text)`: the `message` event, as the replaced page sends chat lines.
    pub async fn send(&mut self, text: &str) {
        self.command(json!({"op": "send", "args": [text]})).await;
    }

    /// `set_username` with a string.
    pub async fn set_username(&mut self, name: &str) {
        self.emit("set_username", json!([name])).await;
    }

    /// The next event from the server: its name and arguments.
    pub async fn next_event(&mut self) -> (String, Value) {
        let line = self.next_line().await;
        assert_eq!(line["type"], "event", "{}: expected an event, got {line}", self.label);
        (line["event"].as_str().unwrap_or_default().to_owned(), line["args"].clone())
    }

    /// The next `message` string from the server.
    pub async fn next_message(&mut self) -> String {
        let line = self.next_line().await;
        assert_eq!(line["type"], "event", "{}: expected an event, got {line}", self.label);
        assert_eq!(line["event"], "message", "{}: unexpected event {line}", self.label);
        assert_eq!(line["args"].as_array().map(Vec::len), Some(1), "{}: one argument expected: {line}", self.label);
        line["args"][0].as_str().unwrap_or_else(|| panic!("{}: not a string: {line}", self.label)).to_owned()
    }

    /// The next `n` message strings.
    pub async fn next_messages(&mut self, n: usize) -> Vec<String> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            got.push(self.next_message().await);
        }
        got
    }

    /// Waits for the server to end the connection.
    pub async fn expect_disconnected(&mut self) {
        let line = self.next_line().await;
        assert_eq!(line["type"], "disconnected", "{}: expected a disconnect, got {line}", self.label);
    }

    /// The next thing the driver reports: an event's name and first argument, or
    /// `disconnected` (or `error`) with the driver's line.
    pub async fn next_any(&mut self) -> (String, Value) {
        let line = self.next_line().await;
        match line["type"].as_str() {
            Some("event") => (line["event"].as_str().unwrap_or_default().to_owned(), line["args"][0].clone()),
            other => (other.unwrap_or_default().to_owned(), line),
        }
    }

    /// Skips events until the server ends the connection.
    pub async fn until_disconnected(&mut self) {
        while self.next_line().await["type"] != "disconnected" {}
    }

    /// Asserts that nothing arrives for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Ok(line) = tokio::time::timeout(within, self.lines.next_line()).await {
            panic!("{}: expected nothing, got {line:?}", self.label);
        }
    }

    /// Reads what a chatroom client is sent first: `hello`, its `backlog`, and `presence`.
    pub async fn joined(&mut self) -> Joined {
        let (event, _) = self.next_event().await;
        assert_eq!(event, "hello", "{}: a chatroom client is greeted with hello first", self.label);
        let (event, backlog) = self.next_event().await;
        assert_eq!(event, "backlog", "{}: the backlog comes next: {backlog}", self.label);
        let (event, presence) = self.next_event().await;
        assert_eq!(event, "presence", "{}: who is online comes right after the backlog: {presence}", self.label);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
        };
        Joined {
            kind: backlog[0]["kind"].as_str().unwrap_or_default().to_owned(),
            lines: backlog[0]["lines"].as_array().cloned().unwrap_or_default(),
            online: strings(&presence[0]["users"]),
            online_at: presence[0]["at"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Reads events until one named `event` whose first argument passes `wanted`, and
    /// returns that argument; every event read before it is passed to `skipped`.
    pub async fn wait_for(
        &mut self,
        event: &str,
        wanted: impl Fn(&Value) -> bool,
        mut skipped: impl FnMut(&str, &Value),
    ) -> Value {
        loop {
            let (name, args) = self.next_event().await;
            if name == event && wanted(&args[0]) {
                return args[0].clone();
            }
            skipped(&name, &args[0]);
        }
    }

    /// Every event that arrives within `within`.
    pub async fn events_within(&mut self, within: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        while let Ok(line) = tokio::time::timeout_at(deadline, self.lines.next_line()).await {
            let line = line.ok().flatten().unwrap_or_else(|| panic!("{}: the driver exited", self.label));
            let line: Value = serde_json::from_str(&line).expect("a driver line is JSON");
            got.push((line["event"].as_str().unwrap_or_default().to_owned(), line["args"][0].clone()));
        }
        got
    }

    /// Disconnects the client and waits for its process to end.
    pub async fn close(mut self) {
        self.command(json!({"op": "close"})).await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// What a chatroom client is sent on joining.
#[derive(Debug)]
pub struct Joined {
    /// `history`, `resume` or `reset`.
    pub kind: String,
    /// The backlog's lines.
    pub lines: Vec<Value>,
    /// The names online.
    pub online: Vec<String>,
    /// The position the list reflects.
    pub online_at: String,
}

/// A line of the room as `kind author` (`chat ann`, `left bob`, `renamed anna`).
pub fn line_kind_author(line: &Value) -> String {
    format!("{} {}", line["kind"].as_str().unwrap_or_default(), line["author"].as_str().unwrap_or_default())
}

/// A chat line's text and position, from a structured `line`.
pub fn chat_text(line: &Value) -> Option<(String, String)> {
    (line["kind"] == "chat").then(|| {
        (line["text"].as_str().unwrap_or_default().to_owned(), line["pos"].as_str().unwrap_or_default().to_owned())
    })
}

/// Reads what a chatroom client is sent first, returning the backlog's kind and lines.
pub async fn backlog_of(client: &mut Client) -> (String, Vec<Value>) {
    let joined = client.joined().await;
    (joined.kind, joined.lines)
}

/// Reads live `line` events until a chat line with text `last` came.
pub async fn lines_until(client: &mut Client, last: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let (event, args) = client.next_event().await;
        if event != "line" {
            continue;
        }
        if let Some(line) = chat_text(&args[0]) {
            let done = line.0 == last;
            got.push(line);
            if done {
                return got;
            }
        }
    }
}

/// The chat lines a resuming client gets, backlog then live, up to the one with text `last`.
pub async fn resumed_through(client: &mut Client, last: &str) -> Vec<(String, String)> {
    let (kind, missed) = backlog_of(client).await;
    assert_eq!(kind, "resume");
    let mut got: Vec<(String, String)> = missed.iter().filter_map(chat_text).collect();
    if got.last().map(|(text, _)| text.as_str()) != Some(last) {
        got.extend(lines_until(client, last).await);
    }
    got
}

pub async fn named_sender(url: &str, name: &str) -> Client {
    let mut sender = Client::connect(Kind::Js, url, Transport::WebSocket).await;
    sender.next_message().await;
    sender.set_username(name).await;
    sender.next_message().await;
    sender
}

/// Checks that `got` is exactly `first..=last` in order; prints the resume counts.
pub fn assert_exactly_once(label: &str, got: &[(String, String)], first: u32, last: u32) {
    let numbers: Vec<u32> = got.iter().map(|(text, _)| text.parse().expect("a number")).collect();
    let unique: HashSet<u32> = numbers.iter().copied().collect();
    let expected: Vec<u32> = (first..=last).collect();
    let missing = expected.iter().filter(|n| !unique.contains(n)).count();
    let duplicates = numbers.len() - unique.len();
    println!("{label}: sent {}, received {}, duplicates {duplicates}, gaps {missing}", expected.len(), numbers.len());
    assert_eq!(numbers, expected, "{label}: not exactly once and in order");
}

/// The first of `n` consecutive loopback ports that were free a moment ago.
pub fn free_port_range(n: u16) -> u16 {
    loop {
        let first = free_port();
        let rest_free = (1..n)
            .all(|i| first.checked_add(i).is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()));
        if rest_free {
            return first;
        }
    }
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port}");
}

/// A redis-server of the test's own on a free loopback port, without persistence, so
/// that a restart loses its data like a crashed cache would.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a new server.
    pub async fn start() -> RedisServer {
        Self::start_on_a_free_port(|port| {
            let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
            args.iter().map(|a| a.to_string()).collect()
        })
        .await
    }

    /// Starts a server speaking only TLS (certificate and key in PEM files), requiring
    /// `password`.
    pub async fn start_tls(cert: &Path, key: &Path, password: &str) -> RedisServer {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_on_a_free_port(|port| {
            let tls = ["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &cert];
            let base = ["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
            let auth = ["--tls-auth-clients", "no", "--requirepass", password];
            let port = ["--tls-port".to_owned(), port.to_string()];
            port.into_iter().chain(base.iter().chain(&tls).chain(&auth).map(|a| a.to_string())).collect()
        })
        .await
    }

    async fn start_with(port: u16, args: Vec<String>) -> RedisServer {
        let mut redis = RedisServer { port, args, child: None };
        redis.restart().await;
        redis
    }

    /// Starts it with the arguments for a free port; again on another port if another
    /// test's server took that one meanwhile.
    async fn start_on_a_free_port(args: impl Fn(u16) -> Vec<String>) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Self::start_with(port, args(port)).await;
            if redis.alive().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// Whether its process still runs (it exits at once when its port is taken).
    async fn alive(&mut self) -> bool {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it again on the same port (after [`RedisServer::stop`]).
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server").await;
    }

    /// Stops it (SIGKILL: connections drop at once, nothing is saved).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// A connection for checking what the nodes wrote.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis-server")
    }
}

/// Rate limits high enough for the tests' bursts.
pub const UNLIMITED: [(&str, &str); 4] = [
    ("--message-rate", "1000000"),
    ("--message-burst", "1000000"),
    ("--renames-per-minute", "1000000"),
    ("--rename-burst", "1000000"),
];

/// A chatroom node as its own process (the binary under test), in cluster mode.
pub struct Node {
    pub name: String,
    pub port: u16,
    child: Child,
}

impl Node {
    /// Starts a node on a free port; `extra` are more command-line flags.
    pub async fn spawn(redis_url: &str, name: &str, extra: &[&str]) -> Node {
        // A port free a moment ago may be taken by another test's server meanwhile: then
        // this node cannot bind it, and it is started again on another port.
        for _ in 0..5 {
            if let Some(node) = Self::try_spawn_on(free_port(), redis_url, name, extra).await {
                return node;
            }
        }
        panic!("{name} did not start on any of five free ports");
    }

    /// Starts a node on `port` (for example again, after it stopped).
    pub async fn spawn_on(port: u16, redis_url: &str, name: &str, extra: &[&str]) -> Node {
        Self::try_spawn_on(port, redis_url, name, extra)
            .await
            .unwrap_or_else(|| panic!("{name} did not start on port {port}"))
    }

    /// Starts a node on `port`; `None` when it exits before serving as itself.
    async fn try_spawn_on(port: u16, redis_url: &str, name: &str, extra: &[&str]) -> Option<Node> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command.args(["--addr", &format!("127.0.0.1:{port}"), "--redis-url", redis_url, "--node-name", name]);
        if !extra.contains(&"--shutdown-timeout-secs") {
            command.args(["--shutdown-timeout-secs", "2"]);
        }
        // Tests send bursts far above a person's pace; the limits have tests of their own.
        for (flag, value) in UNLIMITED {
            if !extra.contains(&flag) {
                command.args([flag, value]);
            }
        }
        let child = command
            .args(extra)
            .current_dir(workspace_root())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .kill_on_drop(true)
            .spawn()
            .expect("start the server binary");
        let mut node = Node { name: name.to_owned(), port, child };
        node.serving().await.then_some(node)
    }

    /// Waits until this very node answers on its port (not another test's server).
    async fn serving(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let me = format!(r#""node":"{}""#, self.name);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if probe_healthz(self.port).await.is_some_and(|body| body.contains(&me)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends it SIGTERM, as a deploy would; see [`Node::wait_exit`].
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().await.expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits (at most `within`) for it to exit; whether it exited cleanly.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }

    /// Ends it like a crash: no goodbye to anyone.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A plain HTTP/1.1 GET to `addr` (`HOST:PORT`); returns the status code and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with(addr, path, &[]).await;
    (status, body)
}

/// A GET with more headers; returns the status code, the response head (lower-cased)
/// and the body. A WebSocket upgrade answered with 101 returns at once, body empty.
pub async fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
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

/// The body of `/healthz` on `port` if an HTTP server there answers 200; `None` for
/// anything else (nothing listening, another kind of server, an error).
async fn probe_healthz(port: u16) -> Option<String> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.starts_with("HTTP/1.1 200").then(|| text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))?
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten()
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

//! Real Socket.IO clients (the official JavaScript client and python-socketio) in child
//! processes, scripted over stdin/stdout, and what tests read from them.

use super::{WAIT, workspace_root};
use serde_json::{Value, json};
use server::backend::SessionId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// What a legacy client is greeted with.
const WELCOME: &str = "Welcome to the chatroom!";
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

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
    pub sid: SessionId,
    pub transport: String,
    label: String,
    /// Whether it announced the structured protocol in its CONNECT auth.
    chatroom: bool,
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
        let chatroom = auth.is_some();
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
        let mut client = Client {
            sid: SessionId::new(""),
            transport: String::new(),
            label,
            chatroom,
            patience: WAIT,
            child,
            stdin,
            lines,
        };
        let connected = client.next_line().await;
        assert_eq!(connected["type"], "connected", "{}: expected to connect, got {connected}", client.label);
        client.sid = SessionId::new(connected["sid"].as_str().unwrap_or_default());
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
        let (event, hello) = self.next_event().await;
        assert_eq!(event, "hello", "{}: a chatroom client is greeted with hello first: {hello}", self.label);
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

/// A chatroom client's CONNECT auth with the client key of user `who`.
pub fn key_auth(who: &str) -> Value {
    json!({"v": 1, "key": format!("{who}-key-0123456789")})
}

impl Client {
    /// A legacy JS client over WebSocket, greeted and named `name`.
    pub async fn named(url: &str, name: &str) -> Client {
        let mut client = Client::connect(Kind::Js, url, Transport::WebSocket).await;
        assert_eq!(client.next_message().await, WELCOME, "{}: greeted first", client.label);
        client.with_name(name).await
    }

    /// A chatroom JS client over WebSocket with the key of user `who`, joined (its
    /// `hello`, backlog and presence read).
    pub async fn user(url: &str, who: &str) -> Client {
        let mut client = Client::connect_with_auth(url, Transport::WebSocket, key_auth(who)).await;
        client.joined().await;
        client
    }

    /// Asks for `name` and waits for the server to confirm it (events before the
    /// confirmation are skipped; a refusal fails the test).
    pub async fn with_name(mut self, name: &str) -> Client {
        self.set_username(name).await;
        if self.chatroom {
            let label = self.label.clone();
            self.wait_for(
                "notice",
                |n| n["kind"] == "name_set" && n["name"] == name,
                |event, arg| {
                    assert!(!(event == "notice" && arg["kind"] == "refused"), "{label}: {name} refused: {arg}");
                },
            )
            .await;
        } else {
            let confirmed = format!("Your username is set to {name}");
            loop {
                let got = self.next_message().await;
                if got == confirmed {
                    break;
                }
                assert!(
                    !got.starts_with("Username") && !got.starts_with("Could not"),
                    "{}: {name} refused: {got}",
                    self.label
                );
            }
        }
        self
    }
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

/// Sends `text` from a legacy client named `s` until it hears the line back; returns how
/// many tries were refused first (a refused line is not published: it is sent again).
pub async fn send_until_accepted(sender: &mut Client, text: &str) -> u32 {
    let echo = format!("s: {text}");
    for refused in 0..80 {
        sender.send(text).await;
        loop {
            let got = sender.next_message().await;
            if got == echo {
                return refused;
            }
            if got.starts_with("Failed") {
                tokio::time::sleep(Duration::from_millis(250)).await;
                break;
            }
        }
    }
    panic!("{text:?} was never accepted");
}

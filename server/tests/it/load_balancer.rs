//! The local cluster command (`scripts/cluster.sh`: Redis, two release nodes, nginx with
//! `deploy/nginx/chatroom.conf`) and what clients see through the load balancer.

use crate::support::{
    Client, Kind, Transport, assert_exactly_once, free_port, free_port_range, http_get, lines_until, resumed_through,
    workspace_root,
};
use serde_json::json;
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Cluster {
    url: String,
    port: u16,
    child: Child,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(&[]).await
    }

    /// Starts it with more environment (the nodes take their `CHATROOM_*` settings from it).
    async fn start_with(env: &[(&str, &str)]) -> Cluster {
        assert!(
            workspace_root().join("target/release/server").exists(),
            "scripts/cluster.sh runs the release build: run `cargo leptos build --release` first (scripts/test.sh does)"
        );
        // nginx on `port`, the nodes on the next two.
        let port = free_port_range(3);
        let redis_port = free_port();
        let mut child = Command::new("bash")
            .arg(workspace_root().join("scripts/cluster.sh"))
            .args(["--no-build", "--nodes", "2", "--port", &port.to_string(), "--redis-port", &redis_port.to_string()])
            .env_remove("REDIS_URL")
            // Tests send bursts far above a person's pace.
            .env("CHATROOM_MESSAGE_BURST", "1000000")
            .envs(env.iter().copied())
            // Its own process group, so that a failing test can stop all it started.
            .process_group(0)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run scripts/cluster.sh");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let banner = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the cluster starts within a minute")
            .expect("read its output")
            .expect("it prints the URL");
        let url = format!("http://127.0.0.1:{port}");
        assert!(banner.starts_with(&format!("chatroom cluster: {url}")), "{banner}");
        Cluster { url, port, child }
    }

    /// The address of node `n` (1-based) without the load balancer.
    fn node_url(&self, n: u16) -> String {
        format!("http://127.0.0.1:{}", self.port + n)
    }

    /// Ends node `name` like a crash.
    async fn kill9(&self, name: &str) {
        self.signal(name, "KILL").await;
    }

    /// Sends node `name` a signal (`KILL`, `TERM`).
    async fn signal(&self, name: &str, signal: &str) {
        let pid_file = workspace_root().join(format!("target/cluster-{}/{name}.pid", self.port));
        let pid = std::fs::read_to_string(&pid_file).expect("the node's pid file");
        let status = Command::new("kill").args([&format!("-{signal}"), pid.trim()]).status().await.expect("kill");
        assert!(status.success(), "kill -{signal} {name} failed");
    }

    /// SIGTERM, as Ctrl-C would: everything the command started must stop.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
        let status =
            tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.expect("stops").expect("wait");
        assert!(status.success(), "cluster.sh exited with {status}");
        for port in [self.port, self.port + 1, self.port + 2] {
            assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "port {port} still open");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status();
        }
    }
}

async fn node_of(client: &mut Client) -> String {
    let (event, args) = client.next_event().await;
    assert_eq!(event, "hello");
    args[0]["node"].as_str().expect("a node name").to_owned()
}

#[tokio::test]
async fn nginx_spreads_websockets_pins_polling_and_carries_the_chat() {
    let cluster = Cluster::start().await;

    // WebSocket-only clients need no stickiness: they spread over both nodes.
    let mut nodes = HashSet::new();
    let mut ws_clients = Vec::new();
    for _ in 0..4 {
        let mut client = Client::connect_chatroom(&cluster.url, Transport::WebSocket).await;
        nodes.insert(node_of(&mut client).await);
        ws_clients.push(client);
    }
    assert_eq!(nodes, HashSet::from(["node-1".to_owned(), "node-2".to_owned()]));

    // Polling clients are pinned to one node, so every request finds its session.
    let mut polling_nodes = HashSet::new();
    for _ in 0..3 {
        let mut client = Client::connect_chatroom(&cluster.url, Transport::Polling).await;
        polling_nodes.insert(node_of(&mut client).await);
        client.close().await;
    }
    assert_eq!(polling_nodes.len(), 1, "polling clients went to several nodes: {polling_nodes:?}");

    // The chat crosses nodes through the load balancer, for every transport.
    let mut ann = Client::connect(Kind::Js, &cluster.url, Transport::WebSocket).await;
    let mut others = vec![
        Client::connect(Kind::Js, &cluster.url, Transport::WebSocket).await,
        Client::connect(Kind::Python, &cluster.url, Transport::Polling).await,
        Client::connect(Kind::Js, &cluster.url, Transport::Upgrade).await,
    ];
    ann.next_message().await;
    for other in &mut others {
        other.next_message().await;
    }
    ann.set_username("ann").await;
    assert_eq!(ann.next_message().await, "Your username is set to ann");
    ann.send("through nginx").await;
    assert_eq!(ann.next_message().await, "ann: through nginx");
    for other in &mut others {
        assert_eq!(other.next_message().await, "ann: through nginx");
    }
    ann.close().await;
    for other in &mut others {
        assert_eq!(other.next_message().await, "ann left the chatroom.");
    }
    for client in others.into_iter().chain(ws_clients) {
        client.close().await;
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_client_resumes_through_nginx_on_the_other_node_after_its_node_is_killed() {
    let cluster = Cluster::start().await;
    let auth = json!({"v": 1, "key": "resumer-key-0123456789"});
    let mut client = Client::connect_with_auth(&cluster.url, Transport::WebSocket, auth).await;
    let doomed = node_of(&mut client).await;
    // The sender sits on the node that survives, without the load balancer.
    let survivor = if doomed == "node-1" { 2 } else { 1 };
    let mut sender = Client::named(&cluster.node_url(survivor), "s").await;
    for n in 0..10 {
        sender.send(&n.to_string()).await;
    }
    let last_pos = lines_until(&mut client, "9").await.last().expect("lines").1.clone();

    cluster.kill9(&doomed).await;
    client.until_disconnected().await;
    for n in 10..60 {
        sender.send(&n.to_string()).await;
    }
    // Through nginx again: the dead node refuses the connection, nginx tries the other.
    let auth = json!({"v": 1, "key": "resumer-key-0123456789", "after": last_pos});
    let mut back = Client::connect_with_auth(&cluster.url, Transport::WebSocket, auth).await;
    let got = resumed_through(&mut back, "59").await;
    assert_exactly_once("resume through nginx after kill -9", &got, 10, 59);
    for n in 60..70 {
        sender.send(&n.to_string()).await;
    }
    let live = lines_until(&mut back, "69").await;
    assert_exactly_once("live after the resume", &live, 60, 69);
    cluster.stop().await;
}

#[tokio::test]
async fn a_draining_node_keeps_its_pinned_polling_clients_until_it_lets_them_go() {
    let cluster =
        Cluster::start_with(&[("CHATROOM_DRAIN_DELAY_SECS", "4"), ("CHATROOM_SHUTDOWN_TIMEOUT_SECS", "15")]).await;
    let host = cluster.url.trim_start_matches("http://").to_owned();
    for path in ["/metrics", "/status", "/status.json", "/admin/audit"] {
        assert_eq!(http_get(&host, path).await.0, 404, "{path} is not public behind nginx");
    }
    // Polling clients are pinned by address: this one and every later one go to `pinned`.
    let mut polling =
        Client::connect_with_auth(&cluster.url, Transport::Polling, json!({"v": 1, "key": "pinned-key-0123456789"}))
            .await;
    let pinned = node_of(&mut polling).await;
    polling.wait_for("presence", |_| true, |_, _| {}).await;
    let other = if pinned == "node-1" { 2 } else { 1 };
    let mut sender = Client::named(&cluster.node_url(other), "s").await;

    cluster.signal(&pinned, "TERM").await;
    // A new connection reaches the draining node, gets 503, and nginx takes it elsewhere.
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let (status, body) = http_get(&host, handshake).await;
    assert_eq!(status, 200, "nginx retried the new connection on the other node: {body}");
    // The pinned client still polls its own node, which still delivers during its drain
    // delay: poll after poll (each line ends one long poll, and the next must reach the
    // same node).
    for n in 0..3 {
        let text = format!("during the drain {n}");
        sender.send(&text).await;
        let line = polling.wait_for("line", |line| line["text"] == text.as_str(), |_, _| {}).await;
        assert_eq!(line["author"], "s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then the node lets it go.
    polling.until_disconnected().await;
}

//! TLS: a node serving HTTPS and WSS itself, nodes sharing a Redis over TLS with a
//! password, and logs (JSON) that never show that password.

use crate::support::{
    Client, Kind, Node, RedisServer, Transport, free_port, spawn_app_with, wait_for_port, workspace_root,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const PASSWORD: &str = "s3cret-pa55word";

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files in a
/// folder of the test's own.
fn certificate(test: &str) -> (PathBuf, PathBuf) {
    let dir = workspace_root().join("target/test-tls").join(test);
    std::fs::create_dir_all(&dir).expect("a folder for the certificate");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    (cert, key)
}

/// Every line of a pipe, until it closes.
async fn read_lines(pipe: impl tokio::io::AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(pipe).lines();
    let mut all = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        all.push(line);
    }
    all
}

/// A legacy JS client over `transport` that trusts the CA `ca`, greeted and named.
async fn named(url: &str, ca: &Path, transport: Transport, name: &str) -> Client {
    let mut client = Client::connect_trusting(url, transport, ca).await;
    assert_eq!(client.next_message().await, "Welcome to the chatroom!");
    client.with_name(name).await
}

#[tokio::test]
async fn a_node_serves_https_and_wss_itself() {
    let (cert, key) = certificate("node");
    let app = spawn_app_with(|s| (s.listen.tls_cert, s.listen.tls_key) = (Some(cert.clone()), Some(key.clone()))).await;
    let url = format!("https://{}", app.addr);
    let mut ws = named(&url, &cert, Transport::WebSocket, "ann").await;
    let mut polling = named(&url, &cert, Transport::Polling, "bob").await;
    ws.send("over wss").await;
    assert_eq!(ws.next_message().await, "ann: over wss");
    assert_eq!(polling.next_message().await, "ann: over wss");
    assert_eq!(ws.transport, "websocket");
    assert_eq!(polling.transport, "polling");
}

#[tokio::test]
async fn at_most_256_tls_handshakes_run_at_once_and_each_for_at_most_10_s() {
    let (cert, key) = certificate("stalled");
    let app = spawn_app_with(|s| (s.listen.tls_cert, s.listen.tls_key) = (Some(cert.clone()), Some(key.clone()))).await;
    // 300 connections that never send a byte of their handshake.
    let started = Instant::now();
    let mut ends = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
        ends.push(tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await;
            started.elapsed()
        }));
    }
    let mut ended = Vec::new();
    for end in ends {
        ended.push(end.await.expect("a reader"));
    }
    // The first 256 run their handshake at once and are dropped after 10 s; the others
    // wait for a turn and are dropped 10 s after theirs.
    let first_round = ended.iter().filter(|at| **at < Duration::from_secs(15)).count();
    let slowest = ended.iter().max().copied().unwrap_or_default();
    println!("300 stalled TLS handshakes: {first_round} dropped in the first 15 s, the last after {slowest:?}");
    assert_eq!(first_round, 256, "256 handshakes at once");
    assert!(slowest < Duration::from_secs(25), "every stalled handshake is dropped by its deadline");
    // Then a real client gets in at once.
    let mut client = Client::connect_trusting(&format!("https://{}", app.addr), Transport::WebSocket, &cert).await;
    assert_eq!(client.next_message().await, "Welcome to the chatroom!");
}

#[tokio::test]
async fn nodes_share_a_room_through_redis_over_tls_with_a_password() {
    let (cert, key) = certificate("redis");
    let redis = RedisServer::start_tls(&cert, &key, PASSWORD).await;
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}/", redis.port);
    let ca = ["--redis-ca-cert", cert.to_str().expect("a UTF-8 path")];
    let node1 = Node::spawn(&url, "node-1", &ca).await;
    let node2 = Node::spawn(&url, "node-2", &ca).await;
    let mut ann = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut bob = Client::connect(Kind::Python, &node2.url(), Transport::WebSocket).await;
    ann.next_message().await;
    bob.next_message().await;
    ann.set_username("ann").await;
    ann.next_message().await;
    ann.send("through TLS Redis").await;
    assert_eq!(bob.next_message().await, "ann: through TLS Redis");

    // A third node logs in JSON, at trace level, while it starts, serves and stops: every
    // line is JSON, and none holds the password, a client key or what a client wrote.
    let port = free_port();
    let mut node = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--redis-url", &url, "--node-name", "node-3"])
        .args(["--log-format", "json", "--shutdown-timeout-secs", "2"])
        .args(ca)
        .current_dir(workspace_root())
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary");
    let (stdout, stderr) = (node.stdout.take().expect("piped"), node.stderr.take().expect("piped"));
    let (out, err) = (tokio::spawn(read_lines(stdout)), tokio::spawn(read_lines(stderr)));
    wait_for_port(port, "node-3").await;
    let node3 = format!("http://127.0.0.1:{port}");
    let key = "privatekey-0123456789abcdef";
    let auth = serde_json::json!({"v": 1, "key": key, "name": "carol"});
    let mut carol = Client::connect_with_auth(&node3, Transport::WebSocket, auth).await;
    carol.joined().await;
    carol.send("words only the room may read 7f3a").await;
    carol.wait_for("line", |line| line["kind"] == "chat", |_, _| {}).await;
    let mut dave = Client::connect(Kind::Python, &node3, Transport::Polling).await;
    dave.next_message().await;
    dave.set_username("dave").await;
    dave.next_message().await;
    dave.send("polled words 9c1e").await;
    assert_eq!(dave.next_message().await, "dave: polled words 9c1e");
    carol.close().await;
    dave.close().await;
    let pid = node.id().expect("running").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    let _ = tokio::time::timeout(Duration::from_secs(10), node.wait()).await;
    let lines: Vec<String> = [out.await.expect("stdout"), err.await.expect("stderr")].concat();
    assert!(lines.len() > 5, "too few log lines to judge: {lines:?}");
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let private = [PASSWORD, key, "7f3a", "9c1e", &hex("7f3a"), &hex("9c1e"), &hex(key)];
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        for secret in private {
            assert!(!line.contains(secret), "{secret:?} is in a log line: {line}");
        }
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("rediss://:***@127.0.0.1")), "the redacted URL is logged");
}

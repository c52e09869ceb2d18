//! TLS: a node serving HTTPS and WSS itself, nodes sharing a Redis over TLS with a
//! password, and logs (JSON) that never show that password.

use crate::support::{
    Client, Kind, Node, RedisServer, Transport, free_port, spawn_app_with, wait_for_port, workspace_root,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
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

    // A third node logs in JSON, at debug level, while it starts, serves and stops: every
    // line is JSON, and the password is in none of them.
    let port = free_port();
    let mut node = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--redis-url", &url, "--node-name", "node-3"])
        .args(["--log-format", "json", "--shutdown-timeout-secs", "2"])
        .args(ca)
        .current_dir(workspace_root())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary");
    let (stdout, stderr) = (node.stdout.take().expect("piped"), node.stderr.take().expect("piped"));
    let (out, err) = (tokio::spawn(read_lines(stdout)), tokio::spawn(read_lines(stderr)));
    wait_for_port(port, "node-3").await;
    let mut carol = Client::connect(Kind::Js, &format!("http://127.0.0.1:{port}"), Transport::WebSocket).await;
    carol.next_message().await;
    carol.close().await;
    let pid = node.id().expect("running").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    let _ = tokio::time::timeout(Duration::from_secs(10), node.wait()).await;
    let lines: Vec<String> = [out.await.expect("stdout"), err.await.expect("stderr")].concat();
    assert!(lines.len() > 5, "too few log lines to judge: {lines:?}");
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        assert!(!line.contains(PASSWORD), "the Redis password is in a log line: {line}");
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("rediss://:***@127.0.0.1")), "the redacted URL is logged");
}

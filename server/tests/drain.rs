//! Operating a node: health and readiness for a load balancer, metrics, and a graceful
//! drain on SIGTERM that loses nothing for the clients it lets go.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{
    Client, Node, RedisServer, Transport, assert_exactly_once, chat_text, eventually, http_get, lines_until,
    named_sender, resumed_through, spawn_app, spawn_app_with,
};

fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// The status code and JSON body of `GET path`.
async fn get_json(url: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_get(host_of(url), path).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {body:?}")))
}

#[tokio::test]
async fn health_and_readiness_answer_in_json() {
    let app = spawn_app().await;
    let (status, body) = get_json(&app.url(), "/healthz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["node"].as_str().is_some_and(|node| !node.is_empty()), "{body}");
    let (status, body) = get_json(&app.url(), "/readyz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));
}

#[tokio::test]
async fn a_node_without_its_redis_is_alive_but_not_ready() {
    let mut redis = RedisServer::start().await;
    let node = Node::spawn(&redis.url(), "node-1", &[]).await;
    assert_eq!(get_json(&node.url(), "/readyz").await.0, 200);
    redis.stop().await;
    let not_ready = eventually(Duration::from_secs(10), || async { get_json(&node.url(), "/readyz").await.0 == 503 });
    assert!(not_ready.await.is_some(), "/readyz stayed 200 without Redis");
    let (_, body) = get_json(&node.url(), "/readyz").await;
    assert_eq!((&body["status"], &body["node"]), (&json!("unavailable"), &json!("node-1")));
    assert_eq!(get_json(&node.url(), "/healthz").await.0, 200, "alive all the same");
    redis.restart().await;
    let ready = eventually(Duration::from_secs(15), || async { get_json(&node.url(), "/readyz").await.0 == 200 });
    assert!(ready.await.is_some(), "/readyz did not come back with Redis");
}

/// The value of the metric line starting with `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_clients_events_refusals_backlogs_and_latencies() {
    let app = spawn_app().await;
    let mut legacy = Client::connect(support::Kind::Js, &app.url(), Transport::WebSocket).await;
    legacy.next_message().await;
    legacy.send("too early").await;
    legacy.next_message().await;
    legacy.set_username("ann").await;
    legacy.next_message().await;
    legacy.send("hi").await;
    legacy.next_message().await;
    let mut chatroom = Client::connect_chatroom(&app.url(), Transport::WebSocket).await;
    chatroom.joined().await;

    let (status, text) = http_get(host_of(&app.url()), "/metrics").await;
    assert_eq!(status, 200);
    for (series, at_least) in [
        (r#"chatroom_connected_clients{transport="websocket",protocol="legacy"}"#, 1.0),
        (r#"chatroom_connected_clients{transport="websocket",protocol="chatroom"}"#, 1.0),
        (r#"chatroom_events_in_total{event="message"}"#, 2.0),
        (r#"chatroom_events_in_total{event="set_username"}"#, 1.0),
        (r#"chatroom_events_out_total{event="message"}"#, 4.0),
        (r#"chatroom_events_out_total{event="backlog"}"#, 1.0),
        (r#"chatroom_refusals_total{reason="no_username"}"#, 1.0),
        (r#"chatroom_backlogs_total{kind="history"}"#, 1.0),
        ("chatroom_publish_seconds_count", 1.0),
        ("chatroom_delivery_seconds_count", 2.0),
    ] {
        let value = metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(value >= at_least, "{series} is {value}, expected at least {at_least}");
    }
    legacy.close().await;
    let dropped = eventually(Duration::from_secs(5), || async {
        let (_, text) = http_get(host_of(&app.url()), "/metrics").await;
        metric(&text, r#"chatroom_connected_clients{transport="websocket",protocol="legacy"}"#) == Some(0.0)
    });
    assert!(dropped.await.is_some(), "a closed client is still counted");
}

#[tokio::test]
async fn metrics_can_have_an_address_of_their_own() {
    let metrics_port = support::free_port();
    let app = spawn_app_with(|s| s.metrics_addr = Some(format!("127.0.0.1:{metrics_port}").parse().unwrap())).await;
    let (status, text) = http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("chatroom_bus_reconnects_total 0"), "{text}");
    assert_eq!(http_get(host_of(&app.url()), "/metrics").await.0, 404, "not on the public address");
}

/// A chatroom client with a key, joined on `url`.
async fn viewer(url: &str, n: usize) -> Client {
    let mut client =
        Client::connect_with_auth(url, Transport::WebSocket, json!({"v": 1, "key": format!("viewer-{n}-0123456789")}))
            .await;
    client.joined().await;
    client
}

/// Reads a viewer's chat lines until its connection ends.
async fn lines_until_disconnected(client: &mut Client) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let (kind, arg) = client.next_any().await;
        match kind.as_str() {
            "disconnected" => return got,
            "line" => got.extend(chat_text(&arg)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_rolling_restart_under_steady_chat_loses_and_duplicates_nothing() {
    let redis = RedisServer::start().await;
    let flags = ["--drain-delay-secs", "2", "--shutdown-timeout-secs", "15"];
    let mut node1 = Node::spawn(&redis.url(), "node-1", &flags).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &flags).await;
    let mut viewers = Vec::new();
    for n in 0..3 {
        viewers.push(viewer(&node1.url(), n).await);
    }
    let mut sender = named_sender(&node2.url(), "s").await;
    sender.send("warm-up").await;
    for viewer in &mut viewers {
        lines_until(viewer, "warm-up").await;
    }

    // Steady chat: 160 lines at 20 a second from node-2, while node-1 restarts.
    let total = 160u32;
    let chat = tokio::spawn(async move {
        for n in 0..total {
            sender.send(&n.to_string()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sender
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    node1.terminate().await;
    let terminated_at = Instant::now();

    // At once: not ready, and new connections are refused (a load balancer tries another node).
    let draining = eventually(Duration::from_secs(1), || async { get_json(&node1.url(), "/readyz").await.0 == 503 });
    assert!(draining.await.is_some(), "/readyz did not turn 503 on SIGTERM");
    let (_, body) = get_json(&node1.url(), "/readyz").await;
    assert_eq!(body["status"], "draining");
    let (status, _) = http_get(host_of(&node1.url()), "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 503, "a draining node must refuse new connections");

    // Its clients are let go after the drain delay and resume on node-2, as they would
    // through the load balancer.
    for (n, viewer) in viewers.iter_mut().enumerate() {
        let mut got = lines_until_disconnected(viewer).await;
        assert!(terminated_at.elapsed() >= Duration::from_millis(1_900), "let go before the drain delay");
        let after = got.last().map(|(_, pos)| pos.clone()).expect("lines before the drain");
        let auth = json!({"v": 1, "key": format!("viewer-{n}-0123456789"), "after": after});
        let mut back = Client::connect_with_auth(&node2.url(), Transport::WebSocket, auth).await;
        got.extend(resumed_through(&mut back, &(total - 1).to_string()).await);
        assert_exactly_once(&format!("viewer {n} across a rolling restart"), &got, 0, total - 1);
    }
    assert!(node1.wait_exit(Duration::from_secs(15)).await, "node-1 did not exit cleanly within its bound");
    println!("node-1 exited cleanly, {:.1} s after SIGTERM at the latest", terminated_at.elapsed().as_secs_f64());

    // It comes back on the same port, ready, and the chat goes on across both nodes.
    let node1 = Node::spawn_on(node1.port, &redis.url(), "node-1", &flags).await;
    assert_eq!(get_json(&node1.url(), "/readyz").await.0, 200);
    let mut sender = chat.await.expect("the sender finished");
    let mut again = viewer(&node1.url(), 9).await;
    sender.send("after the restart").await;
    lines_until(&mut again, "after the restart").await;
}

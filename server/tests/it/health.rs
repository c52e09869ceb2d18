//! What a load balancer and an operator see of a node: health and readiness in JSON,
//! and the metrics.

use crate::support::{
    Client, Kind, Node, RedisServer, Transport, eventually, get_json, host_of, http_get, spawn_app, spawn_app_with,
};
use serde_json::json;
use std::time::Duration;

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
    let mut legacy = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
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
    let metrics_port = crate::support::free_port();
    let app =
        spawn_app_with(|s| s.listen.metrics_addr = Some(format!("127.0.0.1:{metrics_port}").parse().unwrap())).await;
    let (status, text) = http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("chatroom_bus_reconnects_total 0"), "{text}");
    assert_eq!(http_get(host_of(&app.url()), "/metrics").await.0, 404, "not on the public address");
    // The status page goes with the metrics.
    let (status, page) = http_get(&format!("127.0.0.1:{metrics_port}"), "/status").await;
    assert_eq!(status, 200);
    assert!(page.contains("Chatroom status") && page.contains("Nodes alive"), "{page}");
    assert_eq!(http_get(host_of(&app.url()), "/status").await.0, 404, "not on the public address");
}

#[tokio::test]
async fn the_status_shows_this_node_its_connections_and_the_lobbys_stream() {
    let app = spawn_app().await;
    let mut ann = Client::named(&app.url(), "ann").await;
    ann.send("hello").await;
    let host = host_of(&app.url()).to_owned();
    // The room list counts users as of the last report (every few seconds).
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = http_get(&host, "/status.json").await;
        report = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && report["users_online"] == 1 && report["rooms"][0]["length"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["users_online"], 1, "the user and the lobby's lines: {report}");
    let node = &report["nodes"][0];
    assert!(node["node"].as_str().is_some_and(|name| name.ends_with(&format!(":{}", app.addr.port()))), "{node}");
    assert_eq!((node["websocket"].as_u64(), node["draining"].as_bool()), (Some(1), Some(false)));
    assert_eq!(node["address"], app.addr.to_string());
    assert_eq!(report["rooms"][0]["room"], "lobby");
    assert!(report["rooms"][0]["oldest"].is_string(), "{report}");
    let (status, page) = http_get(&host, "/status").await;
    assert_eq!(status, 200);
    assert!(page.contains("#lobby") && page.contains("Users online"), "{page}");
}

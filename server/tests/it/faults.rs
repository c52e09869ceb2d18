//! Faults of the Redis under the nodes: a Redis that loses its data must not leave a
//! silent gap for anyone.

use crate::support::{Client, Node, RedisServer, Transport, chat_text, lines_until};
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;

/// Sends `text` until the sender hears it back (a line refused while its node
/// reconnects to Redis is sent again).
async fn send_until_accepted(sender: &mut Client, text: &str) {
    let echo = format!("s: {text}");
    for _ in 0..40 {
        sender.send(text).await;
        loop {
            let got = sender.next_message().await;
            if got == echo {
                return;
            }
            if got.starts_with("Failed") {
                tokio::time::sleep(Duration::from_millis(250)).await;
                break;
            }
        }
    }
    panic!("{text:?} was never accepted");
}

/// Waits for a live `backlog` of kind `reset` (lines before it are skipped); returns it.
async fn live_reset(client: &mut Client) -> Value {
    client.wait_for("backlog", |backlog| backlog["kind"] == "reset", |_, _| {}).await
}

/// A chatroom client that comes back with `after` gets this kind of backlog.
async fn resumed_kind(url: &str, after: &str) -> String {
    let auth = json!({"v": 1, "key": "back-key-0123456789", "after": after});
    let mut back = Client::connect_with_auth(url, Transport::WebSocket, auth).await;
    let kind = back.joined().await.kind;
    back.close().await;
    kind
}

#[tokio::test]
async fn a_redis_that_lost_its_data_gets_resuming_and_live_clients_a_reset() {
    let mut redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &[]).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut live = Client::user(&node2.url(), "live").await;
    for n in 0..5 {
        sender.send(&n.to_string()).await;
        sender.next_message().await;
    }
    let before = lines_until(&mut live, "4").await.last().expect("lines").1.clone();

    // Redis restarts empty (no persistence): the stream and everything in it are gone.
    redis.stop().await;
    redis.restart().await;
    send_until_accepted(&mut sender, "after the loss").await;
    let reset = live_reset(&mut live).await;
    let texts: Vec<String> =
        reset["lines"].as_array().into_iter().flatten().filter_map(chat_text).map(|(text, _)| text).collect();
    assert!(!texts.contains(&"3".to_owned()), "the lost lines are not shown again: {texts:?}");
    for url in [node1.url(), node2.url()] {
        assert_eq!(resumed_kind(&url, &before).await, "reset", "a position from before the loss, on {url}");
    }

    // The same after FLUSHALL, with the nodes still connected.
    let newest = live_line(&mut sender, &mut live, "marker 1").await;
    let _: () = redis.connection().await.flushall().await.expect("FLUSHALL");
    send_until_accepted(&mut sender, "after the flush").await;
    live_reset(&mut live).await;
    assert_eq!(resumed_kind(&node1.url(), &newest).await, "reset");

    // The nodes keep serving: a line now is a plain live line, and resumes work again.
    let current = live_line(&mut sender, &mut live, "marker 2").await;
    live_line(&mut sender, &mut live, "still here").await;
    assert_eq!(resumed_kind(&node2.url(), &current).await, "resume");
}

/// Sends `text` and waits until `viewer` gets it as a live line; returns its position.
async fn live_line(sender: &mut Client, viewer: &mut Client, text: &str) -> String {
    sender.send(text).await;
    lines_until(viewer, text).await.last().expect("the line").1.clone()
}

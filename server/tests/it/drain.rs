//! A graceful drain on SIGTERM: the node turns not ready, refuses new connections, and
//! lets its clients go only after they got every line, so that nothing is lost or
//! duplicated for them when they resume elsewhere.

use crate::support::{
    Client, Node, RedisServer, Transport, assert_exactly_once, chat_text, eventually, get_json, host_of, http_get,
    lines_until, resumed_through,
};
use serde_json::json;
use std::time::{Duration, Instant};

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
        viewers.push(Client::user(&node1.url(), &format!("viewer-{n}")).await);
    }
    let mut sender = Client::named(&node2.url(), "s").await;
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
    let mut again = Client::user(&node1.url(), "viewer-9").await;
    sender.send("after the restart").await;
    lines_until(&mut again, "after the restart").await;
}

//! Many nodes, one room: real node processes sharing a real redis-server that each test
//! starts for itself, driven by the official JavaScript client and python-socketio.

use crate::support::{Client, Kind, Node, RedisServer, Transport, eventually};
use redis::AsyncCommands;
use serde_json::json;
use server::backend::SessionId;
use server::backend::redis::session_key;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);
const UNAVAILABLE: &str = "Failed to send the message: the chat service is unavailable, try again.";

async fn session_username(redis: &RedisServer, sid: &SessionId) -> Option<String> {
    redis.connection().await.hget(session_key(sid), "username").await.expect("HGET")
}

async fn session_ttl(redis: &RedisServer, sid: &SessionId) -> i64 {
    redis.connection().await.ttl(session_key(sid)).await.expect("TTL")
}

#[tokio::test]
async fn the_legacy_contract_holds_across_two_nodes() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &[]).await;

    let mut ann = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut bob = Client::connect(Kind::Python, &node2.url(), Transport::WebSocket).await;
    assert_eq!(ann.next_message().await, "Welcome to the chatroom!");
    assert_eq!(bob.next_message().await, "Welcome to the chatroom!");

    // The session hash exists from the connection on, with an empty name and a TTL.
    let recorded = eventually(Duration::from_secs(5), || async {
        session_username(&redis, &ann.sid).await.as_deref() == Some("")
    });
    assert!(recorded.await.is_some(), "no session hash for a new connection");
    assert!(session_ttl(&redis, &ann.sid).await > 0, "the session has a TTL");

    ann.send("too early").await;
    assert_eq!(ann.next_message().await, "Failed to send the message. Specify a username first.");
    ann.set_username("ann").await;
    assert_eq!(ann.next_message().await, "Your username is set to ann");
    bob.set_username("bob").await;
    assert_eq!(bob.next_message().await, "Your username is set to bob");
    assert_eq!(session_username(&redis, &ann.sid).await.as_deref(), Some("ann"));
    assert_eq!(session_username(&redis, &bob.sid).await.as_deref(), Some("bob"));

    ann.send("hello from node 1").await;
    assert_eq!(bob.next_message().await, "ann: hello from node 1");
    assert_eq!(ann.next_message().await, "ann: hello from node 1");
    bob.send("hello from node 2").await;
    assert_eq!(ann.next_message().await, "bob: hello from node 2");
    assert_eq!(bob.next_message().await, "bob: hello from node 2");

    // Refusals stay with their sender, on every node.
    ann.emit("message", json!(["   "])).await;
    assert_eq!(ann.next_message().await, "Message cannot be empty.");
    bob.emit("set_username", json!([""])).await;
    assert_eq!(bob.next_message().await, "Username cannot be empty.");
    ann.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;

    // A leave crosses nodes, and the session hash goes.
    let ann_sid = ann.sid.clone();
    ann.close().await;
    assert_eq!(bob.next_message().await, "ann left the chatroom.");
    let gone =
        eventually(Duration::from_secs(5), || async { session_username(&redis, &ann_sid).await.is_none() }).await;
    assert!(gone.is_some(), "the session hash outlived the leave");
    bob.close().await;
}

#[tokio::test]
async fn chatroom_clients_are_told_their_node() {
    let redis = RedisServer::start().await;
    let node = Node::spawn(&redis.url(), "blue-7", &[]).await;
    let mut client = Client::connect_chatroom(&node.url(), Transport::WebSocket).await;
    let limits = json!({"name_chars": 32, "message_chars": 2000});
    assert_eq!(client.next_event().await, ("hello".into(), json!([{"node": "blue-7", "limits": limits}])));
    // Legacy clients get the legacy strings only.
    let mut legacy = Client::connect(Kind::Js, &node.url(), Transport::WebSocket).await;
    assert_eq!(legacy.next_message().await, "Welcome to the chatroom!");
    legacy.expect_silence(QUIET).await;
}

#[tokio::test]
async fn five_hundred_messages_reach_the_other_node_in_order() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &[]).await;
    let mut sender = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut viewer = Client::connect(Kind::Js, &node2.url(), Transport::WebSocket).await;
    sender.set_username("fast").await;
    sender.next_messages(2).await;
    viewer.next_message().await;
    for n in 0..500 {
        sender.send(&format!("line {n}")).await;
    }
    let expected: Vec<String> = (0..500).map(|n| format!("fast: line {n}")).collect();
    assert_eq!(viewer.next_messages(500).await, expected);
    assert_eq!(sender.next_messages(500).await, expected);
}

#[tokio::test]
async fn viewers_on_both_nodes_see_interleaved_senders_in_one_order() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &[]).await;
    let mut a = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut b = Client::connect(Kind::Python, &node2.url(), Transport::WebSocket).await;
    let mut viewers = vec![
        Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await,
        Client::connect(Kind::Js, &node2.url(), Transport::WebSocket).await,
        Client::connect(Kind::Python, &node2.url(), Transport::Polling).await,
    ];
    a.set_username("a").await;
    b.set_username("b").await;
    a.next_messages(2).await;
    b.next_messages(2).await;
    for viewer in &mut viewers {
        viewer.next_message().await;
    }
    // Both senders fire at once, so their lines interleave at Redis.
    for n in 0..100 {
        a.send(&format!("{n}")).await;
        b.send(&format!("{n}")).await;
    }
    let mut sequences = Vec::new();
    for viewer in &mut viewers {
        sequences.push(viewer.next_messages(200).await);
    }
    assert_eq!(sequences[0], sequences[1], "viewers on node 1 and node 2 disagree");
    assert_eq!(sequences[0], sequences[2], "the polling viewer disagrees");
    for sender in ["a", "b"] {
        let own: Vec<String> = sequences[0].iter().filter(|l| l.starts_with(&format!("{sender}: "))).cloned().collect();
        let expected: Vec<String> = (0..100).map(|n| format!("{sender}: {n}")).collect();
        assert_eq!(own, expected, "{sender}'s lines are not in the order sent");
    }
    let switches = sequences[0].windows(2).filter(|w| w[0][..1] != w[1][..1]).count();
    println!("interleaving: {switches} switches between senders in 200 lines");
}

/// What a client saw: chat lines from `sender` by number, and refusals.
fn tally(lines: &[String], sender: &str) -> (Vec<u32>, usize) {
    let prefix = format!("{sender}: ");
    let numbers = lines.iter().filter_map(|l| l.strip_prefix(&prefix)).map(|n| n.parse().expect("a number")).collect();
    let refused = lines.iter().filter(|l| l.as_str() == UNAVAILABLE).count();
    (numbers, refused)
}

#[tokio::test]
async fn a_redis_outage_loses_nothing_that_was_accepted() {
    let mut redis = RedisServer::start().await;
    let ttl = ["--session-ttl-secs", "3"];
    let node1 = Node::spawn(&redis.url(), "node-1", &ttl).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &ttl).await;
    let mut sender = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut viewers = [
        Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await,
        Client::connect(Kind::Js, &node2.url(), Transport::WebSocket).await,
    ];
    sender.set_username("s").await;
    sender.next_messages(2).await;
    for viewer in &mut viewers {
        viewer.next_message().await;
    }

    // 200 lines, one every 50 ms; Redis is down from the 2nd to the 7th second.
    let total = 200u32;
    let start = Instant::now();
    let mut stopped = false;
    let mut restarted = false;
    for n in 0..total {
        let at = start.elapsed();
        if !stopped && at >= Duration::from_secs(2) {
            redis.stop().await;
            stopped = true;
        }
        if stopped && !restarted && at >= Duration::from_secs(7) {
            redis.restart().await;
            restarted = true;
        }
        sender.send(&n.to_string()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restarted, "the outage did not happen during the run");

    // Every line got an answer: the line itself (accepted) or a refusal.
    let mut seen = Vec::new();
    loop {
        let (accepted, refused) = tally(&seen, "s");
        if accepted.len() + refused >= total as usize {
            break;
        }
        seen.push(sender.next_message().await);
    }
    let (accepted, refused) = tally(&seen, "s");
    println!("outage: {} accepted, {refused} refused with a reason, of {total}", accepted.len());
    assert!(refused > 0, "nothing was refused: was Redis really down?");
    assert!(accepted.len() > 100, "too few accepted: {}", accepted.len());
    let mut sorted = accepted.clone();
    sorted.sort_unstable();
    assert_eq!(accepted, sorted, "the sender's own lines came back out of order");
    assert_eq!(accepted.iter().collect::<HashSet<_>>().len(), accepted.len(), "duplicates at the sender");

    // Both nodes delivered exactly the accepted lines, once each, in order.
    for viewer in &mut viewers {
        let lines = viewer.next_messages(accepted.len()).await;
        assert_eq!(tally(&lines, "s").0, accepted);
        viewer.expect_silence(QUIET).await;
    }

    // The restarted Redis lost the session records; their nodes wrote them back.
    let written_back = eventually(Duration::from_secs(10), || async {
        session_username(&redis, &sender.sid).await.as_deref() == Some("s")
    })
    .await;
    assert!(written_back.is_some(), "the sender's session was not written back");
    // So was who is online: the sender is listed again, with its name.
    let listed = eventually(Duration::from_secs(10), || async {
        let mut look = Client::connect_chatroom(&node2.url(), Transport::WebSocket).await;
        look.joined().await.online == ["s"]
    })
    .await;
    assert!(listed.is_some(), "the sender is missing from the presence list after Redis lost its data");
}

#[tokio::test]
async fn a_killed_node_s_sessions_expire_and_the_other_node_carries_on() {
    let redis = RedisServer::start().await;
    let ttl = ["--session-ttl-secs", "3"];
    let node1 = Node::spawn(&redis.url(), "node-1", &ttl).await;
    let mut node2 = Node::spawn(&redis.url(), "node-2", &ttl).await;
    let mut survivor = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut doomed = Client::connect(Kind::Python, &node2.url(), Transport::WebSocket).await;
    survivor.set_username("survivor").await;
    doomed.set_username("doomed").await;
    survivor.next_messages(2).await;
    doomed.next_messages(2).await;
    assert_eq!(session_username(&redis, &doomed.sid).await.as_deref(), Some("doomed"));

    // Kept alive by node 2 past its TTL...
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(session_username(&redis, &doomed.sid).await.as_deref(), Some("doomed"));

    // ...and gone within the TTL once node 2 dies.
    node2.kill9().await;
    doomed.expect_disconnected().await;
    let gone = eventually(Duration::from_secs(10), || async { session_username(&redis, &doomed.sid).await.is_none() })
        .await
        .expect("the dead node's session never expired");
    println!("the dead node's session expired {gone:?} after the kill (TTL 3 s)");
    assert!(session_username(&redis, &survivor.sid).await.is_some(), "the live node's session expired too");

    survivor.send("still here").await;
    assert_eq!(survivor.next_message().await, "survivor: still here");
}

#[tokio::test]
async fn a_node_does_not_start_without_its_redis() {
    let port = crate::support::free_port();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", "127.0.0.1:0", "--redis-url", &format!("redis://:hunter2@127.0.0.1:{port}/")])
        .output()
        .await
        .expect("run the server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot use Redis at redis://:***@127.0.0.1:"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}

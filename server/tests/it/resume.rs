//! The structured protocol of chatroom clients: history on joining, and gap-free resume
//! after a reconnect, on one node and across nodes, driven by the official JS client.

use crate::support::{
    Client, Node, RedisServer, Transport, assert_exactly_once, backlog_of, chat_text, lines_until, resumed_through,
    spawn_app, spawn_app_with,
};
use serde_json::json;

#[tokio::test]
async fn a_joining_chatroom_client_gets_the_history_then_a_welcome() {
    let app = spawn_app().await;
    let mut ann = Client::named(&app.url(), "ann").await;
    for n in 0..3 {
        ann.send(&format!("old {n}")).await;
        ann.next_message().await;
    }
    let mut client = Client::connect_chatroom(&app.url(), Transport::WebSocket).await;
    let (kind, lines) = backlog_of(&mut client).await;
    assert_eq!(kind, "history");
    let texts: Vec<String> = lines.iter().filter_map(chat_text).map(|(text, _)| text).collect();
    assert_eq!(texts, ["old 0", "old 1", "old 2"]);
    for line in &lines {
        assert_eq!(line["author"], "ann");
        assert!(line["ts"].as_u64().unwrap_or(0) > 1_600_000_000_000, "server time in ms: {line}");
    }
    assert_eq!(
        client.next_event().await,
        ("notice".into(), json!([{"kind": "welcome", "text": "Welcome to the chatroom!"}]))
    );

    // Its own actions are answered with notices; room events come as lines.
    client.set_username("carol").await;
    // The answer to it alone, and the room's news of the join (in either order).
    let mut answers = [client.next_event().await, client.next_event().await];
    answers.sort_by_key(|(event, _)| event.clone());
    assert_eq!(answers[0].0, "line");
    assert_eq!((&answers[0].1[0]["kind"], &answers[0].1[0]["author"]), (&json!("joined"), &json!("carol")));
    assert_eq!(
        answers[1],
        ("notice".into(), json!([{"kind": "name_set", "name": "carol", "text": "Your username is set to carol"}]))
    );
    client.emit("message", json!([""])).await;
    assert_eq!(
        client.next_event().await,
        ("notice".into(), json!([{"kind": "refused", "text": "Message cannot be empty."}]))
    );
    client.send("hi").await;
    let (event, args) = client.next_event().await;
    assert_eq!(
        (event.as_str(), &args[0]["kind"], &args[0]["author"], &args[0]["text"]),
        ("line", &json!("chat"), &json!("carol"), &json!("hi"))
    );
    // The legacy client in the same room still gets the legacy string.
    assert_eq!(ann.next_message().await, "carol: hi");
}

/// A client that saw up to some line drops; lines go on being sent while it is away and
/// while it comes back; it must get each exactly once, in order.
async fn resume_across_a_cut(away_url: &str, back_url: &str, sender_url: &str) {
    let mut sender = Client::named(sender_url, "s").await;
    let key = "carol-key-0123456789";
    let mut client = Client::connect_with_auth(away_url, Transport::WebSocket, json!({"v": 1, "key": key})).await;
    backlog_of(&mut client).await;
    client.set_username("carol").await;
    for n in 0..10 {
        sender.send(&n.to_string()).await;
    }
    let seen = lines_until(&mut client, "9").await;
    let last_pos = seen.last().expect("lines").1.clone();
    client.close().await;

    // 100 more lines; the client reconnects while they are still being sent.
    for n in 10..110 {
        sender.send(&n.to_string()).await;
    }
    let auth = json!({"v": 1, "after": last_pos, "name": "carol", "key": key});
    let mut back = Client::connect_with_auth(back_url, Transport::WebSocket, auth).await;
    let got = resumed_through(&mut back, "109").await;
    assert_exactly_once("resume", &got, 10, 109);
    // The name came back with the connection, without a new confirmation to show.
    let (event, args) = back.next_event().await;
    assert_eq!((event.as_str(), &args[0]["kind"]), ("notice", &json!("name_set")));
    back.send("i am back").await;
    let mut heard = Vec::new();
    while heard.last().map(String::as_str) != Some("carol: i am back") {
        assert!(heard.len() < 200, "the sender never heard the client again: {heard:?}");
        heard.push(sender.next_message().await);
    }
}

#[tokio::test]
async fn a_client_that_reconnects_gets_every_missed_line_exactly_once() {
    let app = spawn_app().await;
    resume_across_a_cut(&app.url(), &app.url(), &app.url()).await;
}

#[tokio::test]
async fn a_client_resumes_on_another_node_after_its_node_is_killed() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let mut node2 = Node::spawn(&redis.url(), "node-2", &[]).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut client = Client::connect_chatroom(&node2.url(), Transport::WebSocket).await;
    backlog_of(&mut client).await;
    for n in 0..10 {
        sender.send(&n.to_string()).await;
    }
    let last_pos = lines_until(&mut client, "9").await.last().expect("lines").1.clone();
    node2.kill9().await;
    client.expect_disconnected().await;
    for n in 10..60 {
        sender.send(&n.to_string()).await;
    }
    let mut back =
        Client::connect_with_auth(&node1.url(), Transport::WebSocket, json!({"v": 1, "after": last_pos})).await;
    let got = resumed_through(&mut back, "59").await;
    assert_exactly_once("resume after kill -9", &got, 10, 59);
}

#[tokio::test]
async fn a_position_older_than_the_kept_events_gets_an_explicit_reset() {
    let app = spawn_app_with(|s| {
        s.room.stream_max_len = 100;
        s.room.history_len = 20;
    })
    .await;
    let mut sender = Client::named(&app.url(), "s").await;
    let mut client = Client::connect_chatroom(&app.url(), Transport::WebSocket).await;
    backlog_of(&mut client).await;
    sender.send("first").await;
    let first_pos = lines_until(&mut client, "first").await[0].1.clone();
    client.close().await;
    sender.next_message().await; // "first"
    // One at a time: a burst larger than the 100 kept events would outrun this node's
    // own delivery too, which is not what this test is about.
    for n in 0..150 {
        sender.send(&n.to_string()).await;
        sender.next_message().await;
    }
    let mut back =
        Client::connect_with_auth(&app.url(), Transport::WebSocket, json!({"v": 1, "after": first_pos})).await;
    let (kind, lines) = backlog_of(&mut back).await;
    assert_eq!(kind, "reset", "the client must be told that it missed events");
    let texts: Vec<String> = lines.iter().filter_map(chat_text).map(|(text, _)| text).collect();
    let expected: Vec<String> = (130..150).map(|n| n.to_string()).collect();
    assert_eq!(texts, expected, "a reset carries the recent history");

    // Nonsense positions are answered the same way.
    let mut odd =
        Client::connect_with_auth(&app.url(), Transport::WebSocket, json!({"v": 1, "after": "yesterday"})).await;
    assert_eq!(backlog_of(&mut odd).await.0, "reset");
}

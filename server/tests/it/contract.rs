//! The legacy event contract (docs/legacy-protocol.md) and the validation answers, exact strings
//! included, driven by the official JavaScript client and python-socketio over
//! WebSocket and over HTTP long-polling against a real node.

use crate::support::{Client, Kind, Transport, eventually, spawn_app};
use serde_json::json;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

/// Every row of the legacy contract plus the validation answers, for one client kind
/// and transport.
async fn legacy_contract(kind: Kind, transport: Transport) {
    let app = spawn_app().await;
    let url = app.url();

    // Connect: a welcome to that client only, and an unnamed session.
    let mut ann = Client::connect(kind, &url, transport).await;
    assert_eq!(ann.next_message().await, "Welcome to the chatroom!");
    let sessions = app.chat.sessions().clone();
    // The welcome is sent as the socket joins; the session record follows at once.
    let recorded = eventually(Duration::from_secs(5), || async {
        sessions.username(&ann.sid).await.unwrap().as_deref() == Some("")
    });
    assert!(recorded.await.is_some(), "no unnamed session for a new connection");

    // A message before a username: refused to the sender only.
    let mut bob = Client::connect(kind, &url, transport).await;
    assert_eq!(bob.next_message().await, "Welcome to the chatroom!");
    ann.expect_silence(QUIET).await;
    ann.send("too early").await;
    assert_eq!(ann.next_message().await, "Failed to send the message. Specify a username first.");

    // set_username: stored in the session and confirmed to that client only.
    ann.set_username("ann").await;
    assert_eq!(ann.next_message().await, "Your username is set to ann");
    assert_eq!(app.chat.sessions().username(&ann.sid).await.unwrap().as_deref(), Some("ann"));
    bob.set_username("bob").await;
    assert_eq!(bob.next_message().await, "Your username is set to bob");

    // A message: to every client, the sender included, unaltered.
    ann.send("hello <b>world</b> & \"you\"").await;
    assert_eq!(ann.next_message().await, "ann: hello <b>world</b> & \"you\"");
    assert_eq!(bob.next_message().await, "ann: hello <b>world</b> & \"you\"");

    // Validation answers go to the sender only and nothing is broadcast.
    let refusals = [
        ("set_username", json!([""]), "Username cannot be empty."),
        ("set_username", json!(["   "]), "Username cannot be empty."),
        ("set_username", json!(["x".repeat(33)]), "Username is too long (maximum 32 characters)."),
        ("set_username", json!(["bad\u{7}name"]), "Username cannot contain control characters."),
        ("set_username", json!(["bad\nname"]), "Username cannot contain control characters."),
        ("set_username", json!([42]), "Username must be a string."),
        ("set_username", json!([]), "Username must be a string."),
        ("message", json!([""]), "Message cannot be empty."),
        ("message", json!([" \t "]), "Message cannot be empty."),
        ("message", json!(["x".repeat(2001)]), "Message is too long (maximum 2000 characters)."),
        ("message", json!(["é".repeat(10_000)]), "Message is too long (maximum 2000 characters)."),
        ("message", json!([{"text": "hi"}]), "Message must be a string."),
        ("message", json!([null]), "Message must be a string."),
        ("message", json!([]), "Message must be a string."),
    ];
    for (event, args, expected) in refusals {
        ann.emit(event, args.clone()).await;
        assert_eq!(ann.next_message().await, expected, "{event} {args}");
    }
    bob.expect_silence(QUIET).await;
    // The refused names did not replace the good one.
    assert_eq!(app.chat.sessions().username(&ann.sid).await.unwrap().as_deref(), Some("ann"));

    // A message of exactly the limit passes, and a name can be changed.
    let longest = "y".repeat(2000);
    ann.send(&longest).await;
    assert_eq!(ann.next_message().await, format!("ann: {longest}"));
    assert_eq!(bob.next_message().await, format!("ann: {longest}"));
    ann.set_username("  Zoë 🦀  ").await;
    assert_eq!(ann.next_message().await, "Your username is set to Zoë 🦀");
    ann.send("renamed").await;
    assert_eq!(bob.next_message().await, "Zoë 🦀: renamed");
    assert_eq!(ann.next_message().await, "Zoë 🦀: renamed");

    // A client without a name leaves silently; its session goes.
    let anon = Client::connect(kind, &url, transport).await;
    let anon_sid = anon.sid.clone();
    anon.close().await;
    bob.expect_silence(QUIET).await;
    let gone = eventually(Duration::from_secs(5), || async { sessions.username(&anon_sid).await.unwrap().is_none() });
    assert!(gone.await.is_some(), "the unnamed session outlived its connection");

    // A named client's leave is announced to every remaining client; its session goes.
    let ann_sid = ann.sid.clone();
    ann.close().await;
    assert_eq!(bob.next_message().await, "Zoë 🦀 left the chatroom.");
    let gone = eventually(Duration::from_secs(5), || async { sessions.username(&ann_sid).await.unwrap().is_none() });
    assert!(gone.await.is_some(), "the named session outlived its leave");
    bob.close().await;
}

/// One client sends `count` messages as fast as it can; another must see them all, in order.
async fn rapid_messages_keep_their_order(kind: Kind, transport: Transport, count: usize) {
    let app = spawn_app().await;
    let url = app.url();
    let mut sender = Client::connect(kind, &url, transport).await;
    let mut viewer = Client::connect(kind, &url, transport).await;
    sender.set_username("fast").await;
    sender.next_messages(2).await; // welcome, name confirmation
    viewer.next_message().await; // welcome
    for n in 0..count {
        sender.send(&format!("line {n}")).await;
    }
    let expected: Vec<String> = (0..count).map(|n| format!("fast: line {n}")).collect();
    assert_eq!(viewer.next_messages(count).await, expected);
    assert_eq!(sender.next_messages(count).await, expected);
    sender.close().await;
    viewer.close().await;
}

#[tokio::test]
async fn js_client_over_websocket_keeps_the_legacy_contract() {
    legacy_contract(Kind::Js, Transport::WebSocket).await;
}

#[tokio::test]
async fn js_client_over_polling_keeps_the_legacy_contract() {
    legacy_contract(Kind::Js, Transport::Polling).await;
}

#[tokio::test]
async fn python_client_over_websocket_keeps_the_legacy_contract() {
    legacy_contract(Kind::Python, Transport::WebSocket).await;
}

#[tokio::test]
async fn python_client_over_polling_keeps_the_legacy_contract() {
    legacy_contract(Kind::Python, Transport::Polling).await;
}

#[tokio::test]
async fn js_client_upgrading_from_polling_keeps_the_legacy_contract() {
    legacy_contract(Kind::Js, Transport::Upgrade).await;
}

#[tokio::test]
async fn two_hundred_js_messages_over_websocket_arrive_in_order() {
    rapid_messages_keep_their_order(Kind::Js, Transport::WebSocket, 200).await;
}

#[tokio::test]
async fn two_hundred_js_messages_over_polling_arrive_in_order() {
    rapid_messages_keep_their_order(Kind::Js, Transport::Polling, 200).await;
}

#[tokio::test]
async fn two_hundred_python_messages_over_websocket_arrive_in_order() {
    rapid_messages_keep_their_order(Kind::Python, Transport::WebSocket, 200).await;
}

#[tokio::test]
async fn two_hundred_python_messages_over_polling_arrive_in_order() {
    rapid_messages_keep_their_order(Kind::Python, Transport::Polling, 200).await;
}

#[tokio::test]
async fn a_python_client_over_polling_takes_a_burst_of_500_lines_from_another() {
    let app = spawn_app().await;
    let mut viewer = Client::connect(Kind::Python, &app.url(), Transport::Polling).await;
    viewer.next_message().await;
    let mut sender = Client::named(&app.url(), "burst").await;
    for n in 0..500 {
        sender.send(&format!("line {n}")).await;
    }
    // python-engineio drops a connection whose poll answer holds more than 16 packets.
    let expected: Vec<String> = (0..500).map(|n| format!("burst: line {n}")).collect();
    assert_eq!(viewer.next_messages(500).await, expected, "all of it, in order");
    viewer.send("still connected").await;
    assert_eq!(viewer.next_message().await, "Failed to send the message. Specify a username first.");
}

#[tokio::test]
async fn clients_of_both_libraries_share_the_room() {
    let app = spawn_app().await;
    let url = app.url();
    let mut js = Client::connect(Kind::Js, &url, Transport::WebSocket).await;
    let mut py = Client::connect(Kind::Python, &url, Transport::Polling).await;
    js.next_message().await;
    py.next_message().await;
    js.set_username("js").await;
    py.set_username("py").await;
    js.next_message().await;
    py.next_message().await;
    py.send("from python").await;
    assert_eq!(js.next_message().await, "py: from python");
    assert_eq!(py.next_message().await, "py: from python");
    js.send("from node").await;
    assert_eq!(py.next_message().await, "js: from node");
    assert_eq!(js.next_message().await, "js: from node");
    py.close().await;
    assert_eq!(js.next_message().await, "py left the chatroom.");
    js.close().await;
}

/// A payload over the Engine.IO limit cannot be answered inside the protocol: the
/// server closes that connection, and only that one.
async fn an_oversized_payload_closes_only_its_connection(transport: Transport) {
    let app = spawn_app().await;
    let url = app.url();
    let mut big = Client::connect(Kind::Js, &url, transport).await;
    let mut other = Client::connect(Kind::Js, &url, transport).await;
    big.set_username("big").await;
    other.set_username("other").await;
    big.next_messages(2).await;
    other.next_messages(2).await;
    big.send(&"x".repeat(150_000)).await;
    big.expect_disconnected().await;
    assert_eq!(other.next_message().await, "big left the chatroom.");
    other.send("still here").await;
    assert_eq!(other.next_message().await, "other: still here");
    other.close().await;
}

#[tokio::test]
async fn an_oversized_payload_over_websocket_closes_only_its_connection() {
    an_oversized_payload_closes_only_its_connection(Transport::WebSocket).await;
}

#[tokio::test]
async fn an_oversized_payload_over_polling_closes_only_its_connection() {
    an_oversized_payload_closes_only_its_connection(Transport::Polling).await;
}

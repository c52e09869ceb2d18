//! Reading back: a chatroom client asks for the lines of a room before the oldest it has
//! (`history`) and gets them in bounded packets (`older`) until the room's beginning;
//! the requests are checked, rate-limited and kept to the rooms the client is in. And
//! `hello` tells the limits of what a client may send.

use crate::support::{Client, Transport, spawn_app_with};
use serde_json::{Value, json};
use std::num::NonZeroU32;

/// Waits for the answer to a `history` request: its lines' texts and whether it is complete.
async fn older(client: &mut Client) -> (Vec<String>, Value, bool) {
    let older = client.wait_for("older", |_| true, |_, _| {}).await;
    let texts =
        older["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap_or("-").to_owned()).collect();
    (texts, older["lines"][0]["pos"].clone(), older["complete"].as_bool().unwrap())
}

async fn refusal(client: &mut Client) -> String {
    client.wait_for("notice", |n| n["kind"] == "refused", |_, _| {}).await["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn older_lines_come_page_by_page_until_the_rooms_beginning() {
    let app = spawn_app_with(|s| s.room.history_len = 20).await;
    let auth = json!({"v": 2, "key": "ann-key-0123456789", "name": "ann", "after": {"ops": null}});
    let mut ann = Client::connect_with_auth(&app.url(), Transport::WebSocket, auth).await;
    let hello = ann.wait_for("hello", |_| true, |_, _| {}).await;
    assert_eq!(hello["limits"], json!({"name_chars": 32, "message_chars": 2000}));
    ann.wait_for("presence", |p| p["room"] == "ops", |_, _| {}).await;
    for n in 0..150 {
        ann.emit("message", json!([{"room": "ops", "text": n.to_string()}])).await;
    }
    ann.wait_for("line", |l| l["text"] == "149", |_, _| {}).await;

    // A new connection sees the newest 20 (its history), then reads back 100 and 100.
    let auth = json!({"v": 2, "key": "bob-key-0123456789", "after": {"ops": null}});
    let mut bob = Client::connect_with_auth(&app.url(), Transport::WebSocket, auth).await;
    let backlog = bob.wait_for("backlog", |b| b["room"] == "ops", |_, _| {}).await;
    let lines = backlog["lines"].as_array().unwrap();
    assert_eq!((lines.len(), lines[0]["text"].as_str()), (20, Some("130")));
    bob.emit("history", json!([{"room": "ops", "before": lines[0]["pos"], "limit": 100}])).await;
    let (texts, oldest, complete) = older(&mut bob).await;
    let wanted: Vec<String> = (30..130).map(|n| n.to_string()).collect();
    assert_eq!((texts, complete), (wanted, false));
    bob.emit("history", json!([{"room": "ops", "before": oldest, "limit": 100}])).await;
    let older_lines = bob.wait_for("older", |_| true, |_, _| {}).await;
    assert_eq!(older_lines["room"], "ops");
    let lines = older_lines["lines"].as_array().unwrap();
    assert_eq!(lines[0]["kind"], "joined", "the room's first event: ann joined");
    assert_eq!(lines.last().unwrap()["text"], "29");
    assert_eq!((lines.len(), older_lines["complete"].as_bool()), (31, Some(true)));

    // Bad requests are refused with the reason; a room one is not in is not read.
    for bad in [
        json!({"room": "ops", "before": "x", "limit": 10}),
        json!({"room": "ops", "before": "5-0", "limit": 0}),
        json!({"room": "ops", "before": "5-0", "limit": 101}),
        json!({"room": "ops"}),
    ] {
        bob.emit("history", json!([bad])).await;
        assert_eq!(refusal(&mut bob).await, "Could not load older lines: ask for 1 to 100 lines before a position.");
    }
    bob.emit("history", json!([{"room": "lobby", "before": "5-0", "limit": 10}])).await;
    assert_eq!(refusal(&mut bob).await, "You are not in the room lobby. Join it first.");
    bob.emit("history", json!([{"room": "ops", "before": "0-0", "limit": 10}])).await;
    let (texts, _, complete) = older(&mut bob).await;
    assert!(texts.is_empty() && complete, "nothing before the first position");
}

#[tokio::test]
async fn history_requests_are_rate_limited_and_version_1_reads_the_lobby() {
    let app = spawn_app_with(|s| {
        (s.limits.history_rate, s.limits.history_burst) = (NonZeroU32::MIN, NonZeroU32::new(2).unwrap());
    })
    .await;
    let mut ann = Client::named(&app.url(), "ann").await;
    for n in 0..3 {
        ann.send(&format!("line {n}")).await;
    }
    let auth = json!({"v": 1, "key": "bob-key-0123456789"});
    let mut bob = Client::connect_with_auth(&app.url(), Transport::WebSocket, auth).await;
    let backlog = bob.wait_for("backlog", |_| true, |_, _| {}).await;
    let newest = backlog["lines"].as_array().unwrap().last().unwrap()["pos"].clone();
    bob.emit("history", json!([{"before": newest, "limit": 2}])).await;
    let (texts, _, complete) = older(&mut bob).await;
    assert_eq!((texts, complete), (vec!["line 0".to_owned(), "line 1".to_owned()], false));
    bob.emit("history", json!([{"before": newest, "limit": 2}])).await;
    older(&mut bob).await;
    bob.emit("history", json!([{"before": newest, "limit": 2}])).await;
    assert_eq!(refusal(&mut bob).await, "Could not load older lines: too many requests. Wait a moment.");
}

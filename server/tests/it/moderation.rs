//! Operators at work through the admin API, on two nodes sharing a real Redis: a line
//! deleted, a user muted, kicked, banned (and the ban lifted), everything a user wrote
//! forgotten, each seen from chatroom and legacy clients on the other node; the token
//! checks; retention.

use crate::support::{Client, Node, RedisServer, Transport, host_of, http_request, key_auth};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789-abcdefghij";
const QUIET: Duration = Duration::from_millis(400);

/// An admin request with the token; the status and the JSON answer.
async fn admin(node: &Node, method: &str, path: &str) -> (u16, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = http_request(host_of(&node.url()), method, path, &[("Authorization", &bearer)]).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn refused(client: &mut Client) -> String {
    client.wait_for("notice", |n| n["kind"] == "refused", |_, _| {}).await["text"].as_str().unwrap().to_owned()
}

async fn chat_line(client: &mut Client, text: &str) -> Value {
    client.wait_for("line", |l| l["kind"] == "chat" && l["text"] == text, |_, _| {}).await
}

#[tokio::test]
async fn operators_delete_mute_ban_and_forget_across_two_nodes() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &["--admin-token", TOKEN]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &["--admin-token", TOKEN]).await;

    // The token: none is 401, a wrong one 403.
    let host = node1.url();
    let host = host_of(&host);
    assert_eq!(http_request(host, "GET", "/admin/audit", &[]).await.0, 401);
    assert_eq!(http_request(host, "GET", "/admin/audit", &[("Authorization", "Bearer wrong")]).await.0, 403);

    let mut watcher = Client::user(&node2.url(), "watcher").await.with_name("watcher").await;
    let mut legacy = Client::named(&node2.url(), "legacy").await;
    let mut mal = Client::user(&node1.url(), "mal").await.with_name("mal").await;

    // A deleted line: announced to structured clients on the other node, gone from history.
    mal.send("buy cheap pills").await;
    let line = chat_line(&mut watcher, "buy cheap pills").await;
    assert_eq!(legacy.next_message().await, "mal: buy cheap pills");
    let pos = line["pos"].as_str().unwrap().to_owned();
    let (status, done) = admin(&node1, "POST", &format!("/admin/lines/{pos}/delete")).await;
    assert_eq!((status, done["action"].as_str()), (200, Some("delete")), "{done}");
    let deleted = watcher.wait_for("line", |l| l["kind"] == "deleted", |_, _| {}).await;
    assert_eq!(deleted["line"], pos);
    legacy.expect_silence(QUIET).await;
    let mut fresh = Client::connect_with_auth(&node2.url(), Transport::WebSocket, json!({"v": 1})).await;
    let backlog = fresh.wait_for("backlog", |_| true, |_, _| {}).await;
    assert!(!backlog.to_string().contains("cheap pills"), "{backlog}");
    assert_eq!(admin(&node2, "POST", &format!("/admin/lines/{pos}/delete")).await.0, 404, "deleted once");

    // A mute holds on every node and across a reconnect (a new sid, the same key).
    let (status, _) = admin(&node2, "POST", "/admin/users/mal/mute?minutes=5").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    mal.send("still here").await;
    assert_eq!(refused(&mut mal).await, "You are muted for 5 more minutes.");
    mal.close().await;
    let mut mal = Client::user(&node2.url(), "mal").await;
    mal.send("from elsewhere").await;
    assert_eq!(refused(&mut mal).await, "You are muted for 5 more minutes.");
    watcher.expect_silence(QUIET).await;

    // A ban closes its connections and refuses new ones from the key, until lifted.
    let (status, _) = admin(&node1, "POST", "/admin/users/mal/ban?minutes=10").await;
    assert_eq!(status, 200);
    mal.until_disconnected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Client::connect_with_auth(&node1.url(), Transport::WebSocket, key_auth("mal")).await;
    assert_eq!(refused(&mut again).await, "You are banned from the chat for 10 more minutes.");
    again.until_disconnected().await;
    let (status, bans) = admin(&node2, "GET", "/admin/bans").await;
    assert_eq!(status, 200);
    assert!(bans["sanctions"].as_array().unwrap().iter().any(|s| s["kind"] == "ban" && s["name"] == "mal"), "{bans}");
    assert_eq!(admin(&node2, "DELETE", "/admin/bans/mal").await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = Client::user(&node1.url(), "mal").await;
    back.close().await;

    // Forget: every line the user wrote, under each of its names, on every node.
    let mut pat = Client::user(&node1.url(), "pat").await.with_name("pat").await;
    pat.send("first words").await;
    pat = pat.with_name("patricia").await;
    pat.send("second words").await;
    chat_line(&mut watcher, "second words").await;
    let (status, done) = admin(&node2, "DELETE", "/admin/users/patricia/lines").await;
    assert_eq!((status, done["outcome"].as_str()), (200, Some("2 lines deleted")), "{done}");
    let mut fresh = Client::connect_with_auth(&node1.url(), Transport::WebSocket, json!({"v": 1})).await;
    let backlog = fresh.wait_for("backlog", |_| true, |_, _| {}).await;
    assert!(!backlog.to_string().contains("words"), "{backlog}");

    // Every action is in the audit trail.
    let (status, audit) = admin(&node1, "GET", "/admin/audit").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["audit"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    for action in ["delete", "mute", "ban", "unban", "forget"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn without_a_token_the_api_is_off_and_retention_deletes_old_events() {
    let redis = RedisServer::start().await;
    // 0.00004 days is 3.5 s, checked every second.
    let node = Node::spawn(&redis.url(), "node-1", &["--retention-days", "0.00004"]).await;
    let (status, _, _) = http_request(host_of(&node.url()), "GET", "/admin/audit", &[]).await;
    assert_eq!(status, 404);
    let mut ann = Client::named(&node.url(), "ann").await;
    ann.send("soon gone").await;
    assert_eq!(ann.next_message().await, "ann: soon gone");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut fresh = Client::connect_with_auth(&node.url(), Transport::WebSocket, json!({"v": 1})).await;
    let backlog = fresh.wait_for("backlog", |_| true, |_, _| {}).await;
    assert!(!backlog.to_string().contains("soon gone"), "{backlog}");
}

#[tokio::test]
async fn a_legacy_client_is_kicked_and_then_muted_by_its_address_from_the_other_node() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &["--admin-token", TOKEN]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &["--admin-token", TOKEN]).await;
    let mut watcher = Client::user(&node2.url(), "watcher").await.with_name("watcher").await;
    let mut leg = Client::named(&node2.url(), "leg").await;
    watcher.wait_for("line", |l| l["kind"] == "joined" && l["author"] == "leg", |_, _| {}).await;

    // Kicked from node-1: its connection on node-2 closes, and the room hears it leave.
    assert_eq!(admin(&node1, "POST", "/admin/users/leg/kick").await.0, 200);
    leg.until_disconnected().await;
    watcher.wait_for("line", |l| l["kind"] == "left" && l["author"] == "leg", |_, _| {}).await;

    // Muted: a keyless client is a user of one connection, so the mute holds its address,
    // on a new connection under another name too.
    let mut leg = Client::named(&node2.url(), "leg").await;
    assert_eq!(admin(&node1, "POST", "/admin/users/leg/mute?minutes=3").await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    leg.send("can I talk?").await;
    assert_eq!(leg.next_message().await, "You are muted for 3 more minutes.");
    leg.close().await;
    let mut again = Client::named(&node1.url(), "leg-again").await;
    again.send("and now?").await;
    assert_eq!(again.next_message().await, "You are muted for 3 more minutes.");
    let heard = watcher.events_within(QUIET).await;
    assert!(!heard.iter().any(|(_, arg)| arg.to_string().contains("now?")), "{heard:?}");

    // Banned: closed, and a new connection from its address refused before the handshake.
    assert_eq!(admin(&node2, "POST", "/admin/users/leg-again/ban?minutes=2").await.0, 200);
    again.until_disconnected().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&node1, &node2] {
        let (status, _, body) =
            http_request(host_of(&node.url()), "GET", "/socket.io/?EIO=4&transport=polling", &[]).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("You are banned from the chat for 2 more minutes."), "{body}");
    }
}

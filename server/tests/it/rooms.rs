//! Rooms through the structured protocol's version 2, with the official JS client: one
//! connection in several rooms, each room with its own order, history, presence and
//! resume, on one node and across nodes sharing a real Redis; legacy clients stay in
//! the lobby and see nothing of other rooms.

use crate::support::{Client, Node, RedisServer, Transport, eventually, host_of, http_get, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

/// A version 2 client of user `who` (its own client key), named `who`, in `rooms`
/// (`{room: position or null}`).
async fn v2(url: &str, who: &str, rooms: Value) -> Client {
    let auth = json!({"v": 2, "key": format!("{who}-key-0123456789"), "name": who, "after": rooms});
    Client::connect_with_auth(url, Transport::WebSocket, auth).await
}

/// What a version 2 client is sent on joining one room.
#[derive(Debug, Default)]
struct RoomJoin {
    kind: String,
    lines: Vec<Value>,
    users: Vec<String>,
}

/// Reads events until the backlog and presence of `n` rooms came; returns them by room.
async fn joined_rooms(client: &mut Client, n: usize) -> BTreeMap<String, RoomJoin> {
    let mut rooms: BTreeMap<String, RoomJoin> = BTreeMap::new();
    let mut with_presence = 0;
    while with_presence < n {
        let (event, args) = client.next_event().await;
        let room = args[0]["room"].as_str().unwrap_or_default().to_owned();
        match event.as_str() {
            "backlog" => {
                let join = rooms.entry(room).or_default();
                join.kind = args[0]["kind"].as_str().unwrap_or_default().to_owned();
                join.lines = args[0]["lines"].as_array().cloned().unwrap_or_default();
            }
            "presence" => {
                let users = args[0]["users"].as_array().cloned().unwrap_or_default();
                rooms.entry(room).or_default().users =
                    users.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect();
                with_presence += 1;
            }
            _ => {}
        }
    }
    rooms
}

/// Waits for a `line` of `room` of this kind and author; returns it.
async fn line_in(client: &mut Client, room: &str, kind: &str, author: &str) -> Value {
    client.wait_for("line", |l| l["room"] == room && l["kind"] == kind && l["author"] == author, |_, _| {}).await
}

/// Waits for a chat line of `room` with this text; returns it.
async fn chat_in(client: &mut Client, room: &str, text: &str) -> Value {
    client.wait_for("line", |l| l["room"] == room && l["kind"] == "chat" && l["text"] == text, |_, _| {}).await
}

/// Waits for a refusal notice; returns it.
async fn refusal(client: &mut Client) -> Value {
    client.wait_for("notice", |n| n["kind"] == "refused", |_, _| {}).await
}

fn say(room: &str, text: &str) -> Value {
    json!([{"room": room, "text": text}])
}

#[tokio::test]
async fn a_connection_is_in_several_rooms_each_with_its_own_order_and_presence() {
    let app = spawn_app().await;
    let url = app.url();
    let mut ann = v2(&url, "ann", json!({"lobby": null, "ops": null})).await;
    let rooms = joined_rooms(&mut ann, 2).await;
    assert_eq!(rooms.keys().collect::<Vec<_>>(), ["lobby", "ops"]);
    assert_eq!((rooms["ops"].kind.as_str(), rooms["ops"].users.clone()), ("history", vec!["ann".to_owned()]));
    assert_eq!(rooms["lobby"].users, ["ann"]);

    let mut bob = v2(&url, "bob", json!({"ops": null})).await;
    let rooms = joined_rooms(&mut bob, 1).await;
    assert_eq!(rooms["ops"].users, ["ann", "bob"]);
    let history: Vec<String> = rooms["ops"].lines.iter().map(|l| format!("{} {}", l["kind"], l["author"])).collect();
    assert_eq!(history, [r#""joined" "ann""#, r#""joined" "bob""#], "ops's own history");
    line_in(&mut ann, "ops", "joined", "bob").await;

    // A legacy client is in the lobby: it hears the lobby, and nothing of ops.
    let mut carl = Client::named(&url, "carl").await;
    line_in(&mut ann, "lobby", "joined", "carl").await;
    ann.emit("message", say("ops", "deploy at 5")).await;
    let line = chat_in(&mut bob, "ops", "deploy at 5").await;
    assert_eq!(line["author"], "ann");
    chat_in(&mut ann, "ops", "deploy at 5").await;
    ann.send("hello lobby").await;
    assert_eq!(carl.next_message().await, "ann: hello lobby", "ops's line never reached the lobby");
    chat_in(&mut ann, "lobby", "hello lobby").await;

    // Only rooms one is in: bob hears nothing of the lobby and cannot post there.
    let heard = bob.events_within(QUIET).await;
    assert!(heard.iter().all(|(_, arg)| arg["room"] != "lobby"), "bob is not in the lobby: {heard:?}");
    bob.emit("message", say("lobby", "let me in")).await;
    let refused = refusal(&mut bob).await;
    assert_eq!(refused["room"], "lobby");
    assert_eq!(refused["text"], "You are not in the room lobby. Join it first.");
    for (bad, why) in [
        ("Ops", "Room name can only hold lower-case letters, digits, - and _."),
        ("", "Room name cannot be empty."),
        (&*"x".repeat(33), "Room name is too long (maximum 32 characters)."),
    ] {
        bob.emit("join", json!([{"room": bad}])).await;
        assert_eq!(refusal(&mut bob).await["text"], why, "{bad:?}");
    }

    // Leaving a room is heard there only, and the one who left hears no more of it.
    ann.emit("leave", json!([{"room": "ops"}])).await;
    let left = ann.wait_for("notice", |n| n["kind"] == "room_left", |_, _| {}).await;
    assert_eq!(left["room"], "ops");
    line_in(&mut bob, "ops", "left", "ann").await;
    bob.emit("message", say("ops", "still there?")).await;
    chat_in(&mut bob, "ops", "still there?").await;
    let heard = ann.events_within(QUIET).await;
    assert!(heard.iter().all(|(_, arg)| arg["room"] != "ops"), "ann left ops: {heard:?}");

    // A rename is heard in every room the user is in, and only there.
    ann.set_username("anna").await;
    let renamed = line_in(&mut ann, "lobby", "renamed", "anna").await;
    assert_eq!(renamed["from"], "ann");
    let heard = bob.events_within(QUIET).await;
    assert!(heard.iter().all(|(event, _)| event != "line"), "bob shares no room with anna now: {heard:?}");

    // Joining the lobby later: its own history and who is there.
    bob.emit("join", json!([{"room": "lobby"}])).await;
    let rooms = joined_rooms(&mut bob, 1).await;
    assert_eq!(rooms["lobby"].users, ["anna", "bob", "carl"]);
    let texts: Vec<&str> = rooms["lobby"].lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(texts, ["hello lobby"], "the lobby's chat, without ops's");
    carl.close().await;
    line_in(&mut bob, "lobby", "left", "carl").await;
    for client in [ann, bob] {
        client.close().await;
    }
}

#[tokio::test]
async fn a_connection_is_in_at_most_the_configured_number_of_rooms() {
    let app = spawn_app_with(|settings| settings.room.max_rooms_per_connection = 2).await;
    let mut ann = v2(&app.url(), "ann", json!({"a": null, "b": null, "c": null})).await;
    let refused = refusal(&mut ann).await;
    assert_eq!(
        (refused["room"].as_str(), refused["text"].as_str()),
        (Some("c"), Some("You are in too many rooms (maximum 2). Leave one first."))
    );
    let rooms = joined_rooms(&mut ann, 2).await;
    assert_eq!(rooms.keys().collect::<Vec<_>>(), ["a", "b"]);
    // The node reads the rooms it has members in (and the lobby), and stops with the last.
    let delivered = |n: u32| {
        let host = host_of(&app.url()).to_owned();
        async move {
            let metrics = http_get(&host, "/metrics").await.1;
            metrics.contains(&format!("chatroom_rooms_delivered {n}\n"))
        }
    };
    assert!(delivered(3).await, "lobby, a and b");
    ann.emit("join", json!([{"room": "c"}])).await;
    assert_eq!(refusal(&mut ann).await["room"], "c");
    ann.emit("leave", json!([{"room": "a"}])).await;
    ann.wait_for("notice", |n| n["kind"] == "room_left" && n["room"] == "a", |_, _| {}).await;
    assert!(eventually(Duration::from_secs(5), || delivered(2)).await.is_some(), "a is no longer read");
    ann.emit("join", json!([{"room": "c"}])).await;
    assert_eq!(joined_rooms(&mut ann, 1).await["c"].users, ["ann"]);
    ann.close().await;
}

#[tokio::test]
async fn rooms_are_shared_across_nodes_and_resumed_room_by_room() {
    let redis = RedisServer::start().await;
    let grace = ["--presence-grace-secs", "1"];
    let node1 = Node::spawn(&redis.url(), "node-1", &grace).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &grace).await;

    let mut ann = v2(&node1.url(), "ann", json!({"ops": null})).await;
    joined_rooms(&mut ann, 1).await;
    let mut bob = v2(&node2.url(), "bob", json!({"ops": null, "lobby": null})).await;
    let rooms = joined_rooms(&mut bob, 2).await;
    assert_eq!(rooms["ops"].users, ["ann", "bob"], "one presence list per room, across nodes");
    assert_eq!(rooms["lobby"].users, ["bob"]);
    line_in(&mut ann, "ops", "joined", "bob").await;

    // One order in ops on both nodes; the lobby's lines stay in the lobby.
    let mut carl = Client::named(&node1.url(), "carl").await;
    for n in 0..5 {
        ann.emit("message", say("ops", &format!("ops {n}"))).await;
    }
    carl.send("lobby line").await;
    let mut seen = Vec::new();
    let mut last_ops = String::new();
    while seen.len() < 6 {
        let line = bob.wait_for("line", |l| l["kind"] == "chat", |_, _| {}).await;
        if line["room"] == "ops" {
            last_ops = line["pos"].as_str().unwrap_or_default().to_owned();
        }
        seen.push(format!(
            "{} {}",
            line["room"].as_str().unwrap_or_default(),
            line["text"].as_str().unwrap_or_default()
        ));
    }
    let ops: Vec<&String> = seen.iter().filter(|l| l.starts_with("ops ")).collect();
    assert_eq!(ops, ["ops ops 0", "ops ops 1", "ops ops 2", "ops ops 3", "ops ops 4"], "ops in the order sent");
    assert!(seen.contains(&"lobby lobby line".to_owned()), "{seen:?}");
    let heard = ann.events_within(QUIET).await;
    assert!(heard.iter().all(|(_, arg)| arg["room"] != "lobby"), "ann is not in the lobby: {heard:?}");

    // bob goes; ops goes on without him; he comes back on the other node, resuming ops
    // after the last line he saw and joining the lobby afresh.
    bob.close().await;
    line_in(&mut ann, "ops", "left", "bob").await;
    ann.emit("message", say("ops", "missed 1")).await;
    ann.emit("message", say("ops", "missed 2")).await;
    chat_in(&mut ann, "ops", "missed 2").await;
    let mut bob = v2(&node1.url(), "bob", json!({"ops": last_ops, "lobby": null})).await;
    let rooms = joined_rooms(&mut bob, 2).await;
    assert_eq!(rooms["ops"].kind, "resume");
    let missed: Vec<&str> = rooms["ops"].lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(missed, ["missed 1", "missed 2"], "exactly what bob missed in ops, once");
    assert_eq!(rooms["lobby"].kind, "history");

    // Every key a room uses carries the room in its hash tag; the rest are global.
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("chatroom:*").query_async(&mut redis.connection().await).await.expect("KEYS");
    assert!(keys.iter().any(|k| k == "chatroom:{room:ops}:events"), "{keys:?}");
    for key in &keys {
        let tagged = key.starts_with("chatroom:{room:") || key.starts_with("chatroom:{global}:");
        assert!(tagged, "a key without its slot's hash tag: {key}");
    }
    for client in [ann, bob, carl] {
        client.close().await;
    }
}

/// Asks for the room list until `wanted` holds (nodes report their rooms every few
/// seconds); returns it as `room online` strings.
async fn room_list_until(client: &mut Client, wanted: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut last = Vec::new();
    for _ in 0..40 {
        client.emit("rooms", json!([{}])).await;
        let list = client.wait_for("rooms", |_| true, |_, _| {}).await;
        last = list["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{} {}", r["room"].as_str().unwrap_or_default(), r["online"]))
            .collect();
        if wanted(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the room list never became what was wanted: {last:?}");
}

#[tokio::test]
async fn the_room_list_counts_who_is_in_each_room_across_nodes_and_new_rooms_are_bounded() {
    let redis = RedisServer::start().await;
    let args = ["--max-rooms", "3"];
    let node1 = Node::spawn(&redis.url(), "node-1", &args).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &args).await;
    let mut ann = v2(&node1.url(), "ann", json!({"lobby": null, "ops": null})).await;
    joined_rooms(&mut ann, 2).await;
    let mut bob = v2(&node2.url(), "bob", json!({"ops": null, "dev": null})).await;
    joined_rooms(&mut bob, 2).await;
    let list = room_list_until(&mut ann, |list| list == ["ops 2", "dev 1", "lobby 1"]).await;
    assert_eq!(list, ["ops 2", "dev 1", "lobby 1"], "most people first, then by name");

    // Three rooms are open, the most this service holds: a fourth is refused clearly.
    bob.emit("join", json!([{"room": "fourth"}])).await;
    let refused = refusal(&mut bob).await;
    assert_eq!(refused["room"], "fourth");
    assert_eq!(refused["text"], "No new room can be opened: the chat holds as many as it may (3).");
    // An open room can still be joined.
    bob.emit("join", json!([{"room": "lobby"}])).await;
    joined_rooms(&mut bob, 1).await;

    // Leaving is counted too, on the other node's list.
    bob.emit("leave", json!([{"room": "ops"}])).await;
    let list = room_list_until(&mut ann, |list| list.contains(&"ops 1".to_owned())).await;
    assert_eq!(list, ["lobby 2", "dev 1", "ops 1"]);
    for client in [ann, bob] {
        client.close().await;
    }
}

#[tokio::test]
async fn a_room_nobody_is_in_is_forgotten_with_its_keys_after_the_idle_time() {
    use server::backend::redis::keys::RoomKeys;
    use server::backend::redis::{PresenceTimings, RedisLink, RedisPresence, RedisTarget};
    use server::backend::{Presence, RoomPolicy, SessionId, UserId};
    let redis = RedisServer::start().await;
    let link = RedisLink::open(&RedisTarget::Single { url: redis.url(), ca_pem: None }).await.unwrap();
    let timings = PresenceTimings { grace: Duration::ZERO, node_timeout: Duration::from_secs(10) };
    let idle = Duration::from_secs(2);
    let presence = RedisPresence::connect(&link, "node-1", 100, timings)
        .await
        .unwrap()
        .with_policy(RoomPolicy { max_rooms: 10, idle });
    let ops = app::protocol::RoomName::parse("ops").unwrap();
    let (sid, user) = (SessionId::new("s1"), UserId::of_connection(&SessionId::new("s1")));
    presence.connect(&user, &sid).await.unwrap();
    presence.claim(&user, &sid, &app::protocol::Username::parse("ann").unwrap()).await.unwrap();
    presence.enter(&ops, &user, &sid).await.unwrap();
    presence.report(std::slice::from_ref(&ops)).await.unwrap();
    presence.exit(&ops, &user, &sid).await.unwrap();
    presence.report(std::slice::from_ref(&ops)).await.unwrap();
    let listed = presence.rooms().await.unwrap();
    assert_eq!((listed.len(), listed[0].online), (1, 0), "listed, nobody in it: {listed:?}");
    let keys = RoomKeys::of(&ops);
    let mut conn = redis.connection().await;
    let ttl: i64 = redis::cmd("PTTL").arg(&keys.stream).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl <= 2_000, "the room's stream lives the idle time more: {ttl} ms");
    tokio::time::sleep(idle + Duration::from_millis(500)).await;
    presence.sweep().await.unwrap();
    assert!(presence.rooms().await.unwrap().is_empty(), "no longer listed");
    let left: usize = redis::cmd("EXISTS").arg(keys.all().as_slice()).query_async(&mut conn).await.unwrap();
    assert_eq!(left, 0, "its keys expired");
}

//! Redis without a single point of failure: nodes that find the master through Sentinel
//! follow a failover by themselves, and nodes on a Redis Cluster spread the rooms over
//! its masters and go on when one of them fails.

use crate::support::{
    Client, Node, RedisCluster, SentinelGroup, Transport, chat_text, eventually, get_json, key_auth,
    send_until_accepted,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Two nodes that find the master through `group`'s sentinels; the first takes `extra` flags.
async fn two_nodes(group: &SentinelGroup, extra: &[&str]) -> (Node, Node) {
    let flags = group.node_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (Node::spawn_on_redis(&flags, "node-1", extra).await, Node::spawn_on_redis(&flags, "node-2", &[]).await)
}

/// Two nodes that find the master through `group`'s sentinels, both with `extra` flags.
async fn two_nodes_with(group: &SentinelGroup, extra: &[&str]) -> (Node, Node) {
    let flags = group.node_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (Node::spawn_on_redis(&flags, "node-1", extra).await, Node::spawn_on_redis(&flags, "node-2", extra).await)
}

/// The chat lines a structured client is sent live, as (text, position), up to `last`.
async fn chat_until(client: &mut Client, last: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let (event, args) = client.next_event().await;
        assert!(
            !(event == "backlog" && args[0]["kind"] == "reset"),
            "{last}: no line was lost, yet a client was reset: {args}"
        );
        if let Some(line) = (event == "line").then(|| chat_text(&args[0])).flatten() {
            let done = line.0 == last;
            got.push(line);
            if done {
                return got;
            }
        }
    }
}

#[tokio::test]
async fn chat_goes_on_after_the_sentinels_promote_the_replica() {
    let mut group = SentinelGroup::start().await;
    let (node1, node2) = two_nodes(&group, &[]).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut near = Client::user(&node1.url(), "near").await;
    let mut far = Client::user(&node2.url(), "far").await;
    for n in 0..5 {
        send_until_accepted(&mut sender, &format!("before {n}")).await;
    }
    chat_until(&mut far, "before 4").await;
    chat_until(&mut near, "before 4").await;
    // The replica has every line before the master dies.
    let mut master = group.master.connection().await;
    let acked: u64 = redis::cmd("WAIT").arg(1).arg(400).query_async(&mut master).await.unwrap();
    assert_eq!(acked, 1, "the replica follows the master");

    let old = group.master.port;
    group.master.stop().await;
    let killed = Instant::now();
    let (status, body) = get_json(&node2.url(), "/readyz").await;
    assert_eq!(status, 503, "a node without a master is not ready: {body}");
    let refused = send_until_accepted(&mut sender, "0").await;
    let accepted = killed.elapsed();
    let promoted = group.wait_for_failover_from(old).await;
    assert_eq!(promoted, group.replica().port, "the sentinels promoted the replica");
    for n in 1..20 {
        send_until_accepted(&mut sender, &n.to_string()).await;
    }
    let far_lines = chat_until(&mut far, "19").await;
    let seen_far = killed.elapsed();
    let near_lines = chat_until(&mut near, "19").await;
    println!(
        "failover: the first line accepted {:.1} s after kill -9 of the master ({refused} refused meanwhile), \
         seen on the other node within {:.1} s",
        accepted.as_secs_f64(),
        seen_far.as_secs_f64()
    );
    assert!(accepted < Duration::from_secs(15), "chat resumed only after {accepted:?}");
    assert_eq!(get_json(&node2.url(), "/readyz").await.0, 200, "ready again on the new master");

    // Both nodes deliver the lines after the failover once each, in one order.
    let texts: Vec<&str> = far_lines.iter().map(|(text, _)| text.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(texts, expected, "every line once, in the order sent");
    assert_eq!(far_lines, near_lines, "both nodes deliver the same lines at the same positions");
    let positions: Vec<&str> = far_lines.iter().map(|(_, pos)| pos.as_str()).collect();
    let mut sorted = positions.clone();
    sorted.sort_by_key(|pos| {
        pos.split_once('-').map(|(ms, seq)| (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap()))
    });
    assert_eq!(positions, sorted, "positions rise");

    // A client joining now gets the lines from before the failover too: the replica had them.
    let mut late = Client::connect_with_auth(&node2.url(), Transport::WebSocket, key_auth("late")).await;
    let joined = late.joined().await;
    let history: Vec<String> = joined.lines.iter().filter_map(chat_text).map(|(text, _)| text).collect();
    assert!(history.contains(&"before 4".to_owned()) && history.contains(&"19".to_owned()), "{history:?}");
}

#[tokio::test]
async fn a_failover_that_lost_lines_resets_the_clients_that_saw_them() {
    let mut group = SentinelGroup::start().await;
    let (node1, node2) = two_nodes(&group, &[]).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut far = Client::user(&node2.url(), "far").await;
    send_until_accepted(&mut sender, "kept").await;
    chat_until(&mut far, "kept").await;

    // The replica stops following the master: what the master accepts now, only it has.
    group.replica().signal("STOP").await;
    let mut master = group.master.connection().await;
    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica").query_async(&mut master).await.unwrap();
    for n in 0..3 {
        send_until_accepted(&mut sender, &format!("lost {n}")).await;
    }
    let seen = chat_until(&mut far, "lost 2").await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let old = group.master.port;
    group.master.stop().await;
    group.replica().signal("CONT").await;
    for n in 0..5 {
        send_until_accepted(&mut sender, &format!("after {n}")).await;
    }
    assert_eq!(group.wait_for_failover_from(old).await, group.replica().port);

    // The client that saw the lost lines is told: a reset whose history lacks them; and
    // it misses none of the lines that follow.
    let mut reset: Option<Vec<String>> = None;
    let mut live = Vec::new();
    while !live.contains(&"after 4".to_owned()) && reset.as_ref().is_none_or(|h| !h.contains(&"after 4".to_owned())) {
        let (event, args) = far.next_event().await;
        let arg: &Value = &args[0];
        if event == "backlog" && arg["kind"] == "reset" {
            let lines = arg["lines"].as_array().cloned().unwrap_or_default();
            reset = Some(lines.iter().filter_map(chat_text).map(|(text, _)| text).collect());
            live.clear();
        } else if let Some((text, _)) = (event == "line").then(|| chat_text(arg)).flatten() {
            live.push(text);
        }
    }
    let history = reset.expect("a reset after the failover lost lines it had shown");
    assert!(history.contains(&"kept".to_owned()), "{history:?}");
    assert!(!history.iter().any(|text| text.starts_with("lost")), "{history:?}");
    let after: Vec<String> = history.iter().chain(&live).filter(|t| t.starts_with("after")).cloned().collect();
    let expected: Vec<String> = (0..5).map(|n| format!("after {n}")).collect();
    assert_eq!(after, expected, "every line after the failover once, in order");
}

#[tokio::test]
async fn a_master_restarted_empty_gets_presence_and_sessions_back_and_clients_a_reset() {
    let mut group = SentinelGroup::start().await;
    let (node1, node2) = two_nodes(&group, &["--session-ttl-secs", "3"]).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut live = Client::user(&node2.url(), "live").await;
    send_until_accepted(&mut sender, "before").await;
    let before = chat_until(&mut live, "before").await.pop().expect("the line").1;

    // Restarted within the sentinels' patience, without persistence: the master comes
    // back empty, and its replica copies the emptiness.
    group.master.stop().await;
    group.master.restart().await;
    send_until_accepted(&mut sender, "after").await;
    live.wait_for("backlog", |backlog| backlog["kind"] == "reset", |_, _| {}).await;
    let session = format!("session:{}", sender.sid);
    let written_back = eventually(Duration::from_secs(10), || async {
        let name: Option<String> = redis::cmd("HGET")
            .arg(&session)
            .arg("username")
            .query_async(&mut group.master.connection().await)
            .await
            .unwrap();
        name.as_deref() == Some("s")
    });
    assert!(written_back.await.is_some(), "the sender's session record was not written back");
    let listed = eventually(Duration::from_secs(10), || async {
        let mut look = Client::connect_with_auth(&node2.url(), Transport::WebSocket, key_auth("look")).await;
        let online = look.joined().await.online;
        look.close().await;
        online.contains(&"s".to_owned())
    });
    assert!(listed.await.is_some(), "the sender is missing from who is online after the master lost its data");
    let auth = serde_json::json!({"v": 1, "key": "back-key-0123456789", "after": before});
    let mut back = Client::connect_with_auth(&node1.url(), Transport::WebSocket, auth).await;
    assert_eq!(back.joined().await.kind, "reset", "a position from before the loss gets a reset");
}

/// What a legacy sender is told when its line is published but no replica has it.
const NOT_YET_SAFE: &str =
    "Your message was sent but is not yet safe: it appears once the chat's store has a copy. Do not send it again.";

#[tokio::test]
async fn under_replica_durability_no_line_shown_is_lost_in_a_failover() {
    // Two replicas: after the failover, one follows the new master and confirms lines.
    let mut group = SentinelGroup::start_with_replicas(2).await;
    let (node1, node2) =
        two_nodes_with(&group, &["--redis-durability", "replica", "--redis-replica-wait-ms", "300"]).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut far = Client::user(&node2.url(), "far").await;
    send_until_accepted(&mut sender, "kept").await;
    chat_until(&mut far, "kept").await;

    // The replicas stop following: lines are published on the master, but nobody sees
    // them, and their sender is told they are not yet safe.
    for replica in &group.replicas {
        replica.signal("STOP").await;
    }
    let mut master = group.master.connection().await;
    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica").query_async(&mut master).await.unwrap();
    for n in 0..3 {
        sender.send(&format!("unsafe {n}")).await;
        assert_eq!(sender.next_message().await, NOT_YET_SAFE);
    }
    let shown = far.events_within(Duration::from_secs(1)).await;
    assert!(!shown.iter().any(|(event, _)| event == "line"), "a line no replica has was shown: {shown:?}");
    let old = group.master.port;
    group.master.stop().await;
    for replica in &group.replicas {
        replica.signal("CONT").await;
    }
    for n in 0..5 {
        send_until_accepted(&mut sender, &format!("after {n}")).await;
    }
    let promoted = group.wait_for_failover_from(old).await;
    assert!(group.replicas.iter().any(|replica| replica.port == promoted), "a replica was promoted");

    // Nothing anyone saw was lost: no reset, no line "unsafe", every later line once.
    let lines = chat_until(&mut far, "after 4").await;
    let texts: Vec<&str> = lines.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(texts, ["after 0", "after 1", "after 2", "after 3", "after 4"]);
    println!("replica durability: 3 lines published while no replica followed, 0 of them shown, 0 shown lines lost");
}

/// Sends `text` in `room` from a version 2 client until it hears the line back; returns
/// how many tries were refused first.
async fn say_until_accepted(sender: &mut Client, room: &str, text: &str) -> u32 {
    for refused in 0..80 {
        sender.emit("message", json!([{"room": room, "text": text}])).await;
        loop {
            let (event, args) = sender.next_event().await;
            let arg = &args[0];
            if event == "line" && arg["room"] == room && arg["text"] == text {
                return refused;
            }
            if event == "notice" && arg["kind"] == "refused" && arg["room"] == room {
                tokio::time::sleep(Duration::from_millis(250)).await;
                break;
            }
            assert!(
                !(event == "backlog" && arg["room"] == room && arg["kind"] == "reset"),
                "{room} was reset while {text:?} was on its way: the room lost events: {arg}"
            );
        }
    }
    panic!("{text:?} was never accepted in {room}");
}

/// A version 2 client of user `who`, named `who`, in `rooms` (fresh joins).
async fn in_rooms(url: &str, who: &str, rooms: &[String]) -> Client {
    let after: serde_json::Map<String, Value> = rooms.iter().map(|room| (room.clone(), Value::Null)).collect();
    let auth = json!({"v": 2, "key": format!("{who}-key-0123456789"), "name": who, "after": after});
    let mut client = Client::connect_with_auth(url, Transport::WebSocket, auth).await;
    let mut with_presence = 0;
    while with_presence < rooms.len() {
        if client.next_event().await.0 == "presence" {
            with_presence += 1;
        }
    }
    client
}

#[tokio::test]
async fn rooms_spread_over_a_redis_cluster_and_chat_goes_on_when_a_master_dies() {
    let mut cluster = RedisCluster::start().await;
    // One room on each third of the slots, so on each of the three masters.
    let mut rooms: Vec<String> = Vec::new();
    let mut thirds = [false; 3];
    for n in 0..100 {
        let room = format!("r{n}");
        let third = usize::from(cluster.slot_of(&format!("chatroom:{{room:{room}}}:events")).await / 5_462);
        if !thirds[third] {
            thirds[third] = true;
            rooms.push(room);
        }
    }
    assert_eq!(rooms.len(), 3, "rooms for each third of the slots: {rooms:?}");
    let seeds = cluster.seeds();
    let flags = ["--redis-cluster", seeds.as_str()];
    let node1 = Node::spawn_on_redis(&flags, "node-1", &[]).await;
    let node2 = Node::spawn_on_redis(&flags, "node-2", &[]).await;
    let mut sender = in_rooms(&node1.url(), "ann", &rooms).await;
    let mut far = in_rooms(&node2.url(), "bob", &rooms).await;
    let mut legacy = Client::named(&node2.url(), "s").await;
    for room in &rooms {
        say_until_accepted(&mut sender, room, &format!("hello {room}")).await;
        far.wait_for("line", |l| l["room"] == room.as_str() && l["text"] == format!("hello {room}"), |_, _| {}).await;
    }
    // The legacy contract on the cluster: the lobby, and its exact session key.
    send_until_accepted(&mut legacy, "legacy hello").await;
    let session = format!("session:{}", legacy.sid);
    let holder = cluster.master_of(&session).await;
    let name: Option<String> = redis::cmd("HGET")
        .arg(&session)
        .arg("username")
        .query_async(&mut cluster.nodes[holder].connection().await)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("s"));

    // Each room's keys sit on one master, and the three rooms on three masters.
    let mut masters = std::collections::BTreeSet::new();
    for room in &rooms {
        masters.insert(cluster.master_of(&format!("chatroom:{{room:{room}}}:events")).await);
    }
    assert_eq!(masters.len(), 3, "the rooms sit on {masters:?}");

    // kill -9 the master of the first room: its replica takes over, and chat goes on there.
    let dead = cluster.master_of(&format!("chatroom:{{room:{}}}:events", rooms[0])).await;
    cluster.nodes[dead].stop().await;
    let killed = Instant::now();
    let refused = say_until_accepted(&mut sender, &rooms[0], "after the failover").await;
    let resumed = killed.elapsed();
    far.wait_for("line", |l| l["room"] == rooms[0].as_str() && l["text"] == "after the failover", |_, _| {}).await;
    println!(
        "cluster failover: a line accepted again {:.1} s after kill -9 of a master ({refused} refused meanwhile)",
        resumed.as_secs_f64()
    );
    assert!(resumed < Duration::from_secs(15), "chat resumed only after {resumed:?}");
    assert_ne!(cluster.master_of(&format!("chatroom:{{room:{}}}:events", rooms[0])).await, dead);
    for room in &rooms[1..] {
        say_until_accepted(&mut sender, room, &format!("still {room}")).await;
        far.wait_for("line", |l| l["room"] == room.as_str() && l["text"] == format!("still {room}"), |_, _| {}).await;
    }
}

//! Who is online: the presence list across nodes, its healing after a node dies, the
//! grace period that makes a reconnect silent, tabs of one user, and unique names.

use crate::support::{Client, Kind, Node, RedisServer, Transport, key_auth, line_kind_author, spawn_app_with};
use serde_json::json;
use std::time::{Duration, Instant};

/// Waits until `client` sees the room line `kind author` (for example `joined ann`),
/// returning the room lines (as `kind author`) it saw before.
async fn wait_for_line(client: &mut Client, wanted: &str) -> Vec<String> {
    let mut before = Vec::new();
    client
        .wait_for(
            "line",
            |line| line_kind_author(line) == wanted,
            |event, arg| {
                if event == "line" {
                    before.push(line_kind_author(arg));
                }
            },
        )
        .await;
    before
}

/// The room lines (as `kind author`) that arrive within `within`.
async fn lines_within(client: &mut Client, within: Duration) -> Vec<String> {
    client.events_within(within).await.iter().filter(|(e, _)| e == "line").map(|(_, l)| line_kind_author(l)).collect()
}

#[tokio::test]
async fn a_reconnect_within_the_grace_period_is_silent_and_a_longer_absence_is_a_leave() {
    let app = spawn_app_with(|s| s.room.presence_grace_secs = 2).await;
    let mut watcher = Client::user(&app.url(), "watcher").await.with_name("watcher").await;
    let carol = Client::user(&app.url(), "carol").await.with_name("carol").await;
    wait_for_line(&mut watcher, "joined carol").await;

    // Carol's network drops; she is back a moment later with her key and no name.
    carol.close().await;
    let mut carol = Client::connect_with_auth(&app.url(), Transport::WebSocket, key_auth("carol")).await;
    let joined = carol.joined().await;
    assert_eq!(joined.online, ["carol", "watcher"], "she never left the list");
    let welcome = carol.next_event().await;
    assert_eq!(welcome.1[0]["kind"], "welcome");
    let (event, notice) = carol.next_event().await;
    assert_eq!(
        (event.as_str(), &notice[0]["kind"], &notice[0]["name"]),
        ("notice", &json!("name_set"), &json!("carol"))
    );
    let seen = lines_within(&mut watcher, Duration::from_secs(4)).await;
    assert!(seen.is_empty(), "a reconnect within the grace period must be silent, the watcher saw {seen:?}");

    // She goes for good: after the grace period, her leave.
    carol.close().await;
    let gone_at = Instant::now();
    wait_for_line(&mut watcher, "left carol").await;
    let took = gone_at.elapsed();
    println!("leave announced {took:?} after the last connection closed (grace 2 s)");
    assert!(took >= Duration::from_millis(1_900), "announced before the grace period was over: {took:?}");

    // A legacy client cannot come back: its leave is announced at once.
    let mut legacy = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
    legacy.next_message().await;
    legacy.set_username("old").await;
    legacy.next_message().await;
    wait_for_line(&mut watcher, "joined old").await;
    legacy.close().await;
    let gone_at = Instant::now();
    wait_for_line(&mut watcher, "left old").await;
    assert!(gone_at.elapsed() < Duration::from_secs(1), "a legacy leave waited {:?}", gone_at.elapsed());
}

#[tokio::test]
async fn presence_spans_nodes_and_heals_when_a_node_dies() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let mut node2 = Node::spawn(&redis.url(), "node-2", &[]).await;
    let mut watcher = Client::user(&node1.url(), "watcher").await.with_name("watcher").await;
    let mut doomed = Client::user(&node2.url(), "doomed").await.with_name("doomed").await;
    let mut mover = Client::user(&node2.url(), "mover").await.with_name("mover").await;
    let mut legacy = Client::connect(Kind::Python, &node2.url(), Transport::WebSocket).await;
    legacy.next_message().await;
    legacy.set_username("old").await;
    legacy.next_message().await;
    wait_for_line(&mut watcher, "joined old").await;

    // Anyone joining on either node sees everyone, wherever they are.
    for node in [&node1, &node2] {
        let mut look = Client::connect_with_auth(&node.url(), Transport::WebSocket, key_auth("look")).await;
        assert_eq!(look.joined().await.online, ["doomed", "mover", "old", "watcher"]);
        look.close().await;
    }

    // node-2 dies. The mover's client comes back on node-1 at once; the others do not.
    let last_pos = mover.wait_for("line", |_| true, |_, _| {}).await.get("pos").cloned().unwrap_or(json!(null));
    node2.kill9().await;
    let killed_at = Instant::now();
    for client in [&mut doomed, &mut mover, &mut legacy] {
        client.until_disconnected().await;
    }
    let auth = json!({"v": 1, "key": "mover-key-0123456789", "after": last_pos, "name": "mover"});
    let mut mover = Client::connect_with_auth(&node1.url(), Transport::WebSocket, auth).await;
    mover.joined().await;

    // The bound is 30 s: the watcher waits that long for each leave, not the usual 10 s.
    watcher.set_patience(Duration::from_secs(30));
    let mut seen = Vec::new();
    for gone in ["left doomed", "left old"] {
        if !seen.iter().any(|line| line == gone) {
            seen.extend(wait_for_line(&mut watcher, gone).await);
            seen.push(gone.to_owned());
        }
    }
    let healed = killed_at.elapsed();
    println!("presence heal time after kill -9 of a node: {:.1} s (node timeout 10 s)", healed.as_secs_f64());
    assert!(healed <= Duration::from_secs(30), "the dead node's users left the list only after {healed:?}");
    seen.extend(lines_within(&mut watcher, Duration::from_millis(1_500)).await);
    assert!(!seen.iter().any(|line| line.ends_with(" mover")), "the mover came back in time, yet: {seen:?}");

    let mut look = Client::connect_with_auth(&node1.url(), Transport::WebSocket, key_auth("look")).await;
    assert_eq!(look.joined().await.online, ["mover", "watcher"]);
}

#[tokio::test]
async fn tabs_with_one_key_are_one_user_with_one_name() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &["--presence-grace-secs", "1"]).await;
    let mut watcher = Client::user(&node1.url(), "watcher").await.with_name("watcher").await;
    let mut tab1 = Client::user(&node1.url(), "ann").await.with_name("ann").await;
    wait_for_line(&mut watcher, "joined ann").await;

    // A second tab, on the other node, is ann already, and the list has her once.
    let mut tab2 = Client::connect_with_auth(&node2.url(), Transport::WebSocket, key_auth("ann")).await;
    assert_eq!(tab2.joined().await.online, ["ann", "watcher"]);
    tab2.wait_for("notice", |n| n["kind"] == "name_set" && n["name"] == "ann", |_, _| {}).await;

    // A rename in one tab is the name of the other tab too.
    tab2.set_username("anna").await;
    tab2.wait_for("notice", |n| n["kind"] == "name_set" && n["name"] == "anna", |_, _| {}).await;
    tab1.wait_for("notice", |n| n["kind"] == "name_set" && n["name"] == "anna", |_, _| {}).await;
    let renamed = watcher.wait_for("line", |l| l["kind"] == "renamed", |_, _| {}).await;
    assert_eq!((&renamed["from"], &renamed["author"]), (&json!("ann"), &json!("anna")));
    tab1.send("from the first tab").await;
    let line = watcher.wait_for("line", |l| l["kind"] == "chat", |_, _| {}).await;
    assert_eq!((&line["author"], &line["text"]), (&json!("anna"), &json!("from the first tab")));

    // Closing one tab is not leaving.
    tab1.close().await;
    let seen = lines_within(&mut watcher, Duration::from_secs(2)).await;
    assert!(seen.is_empty(), "one tab closed while another is open: {seen:?}");
    tab2.close().await;
    wait_for_line(&mut watcher, "left anna").await;
}

#[tokio::test]
async fn a_name_in_use_is_refused_on_every_node_and_a_race_has_exactly_one_winner() {
    let redis = RedisServer::start().await;
    let node1 = Node::spawn(&redis.url(), "node-1", &[]).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &[]).await;
    let mut ann = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    ann.next_message().await;
    ann.set_username("Ann").await;
    assert_eq!(ann.next_message().await, "Your username is set to Ann");

    let mut other = Client::connect(Kind::Python, &node2.url(), Transport::WebSocket).await;
    other.next_message().await;
    other.set_username(" ann ").await;
    assert_eq!(other.next_message().await, r#"Username "ann" is already taken. Choose another one."#);
    let mut chatroom = Client::connect_with_auth(&node2.url(), Transport::WebSocket, key_auth("x")).await;
    chatroom.joined().await;
    chatroom.set_username("ＡＮＮ").await;
    let refused = chatroom.wait_for("notice", |n| n["kind"] == "refused", |_, _| {}).await;
    assert_eq!(refused["text"], r#"Username "ＡＮＮ" is already taken. Choose another one."#);
    // Look-alikes of it are the same name, also on the other node: Cyrillic, a hidden mark,
    // capital I for small l.
    let mut bill = Client::named(&node1.url(), "Bill").await;
    for same in ["\u{412}ill", "Bill\u{FE0F}", "BiII", "BILL"] {
        other.set_username(same).await;
        assert_eq!(other.next_message().await, format!(r#"Username "{same}" is already taken. Choose another one."#));
    }
    bill.set_username("Bil").await;
    assert_eq!(bill.next_message().await, "Your username is set to Bil");
    // Without a name it still cannot post; its own case change is fine for the owner.
    other.send("hello").await;
    assert_eq!(other.next_message().await, "Failed to send the message. Specify a username first.");
    ann.set_username("ANN").await;
    assert_eq!(ann.next_message().await, "Your username is set to ANN");

    // Two clients on two nodes claim one name at the same moment, again and again.
    let mut one = Client::connect(Kind::Js, &node1.url(), Transport::WebSocket).await;
    let mut two = Client::connect(Kind::Js, &node2.url(), Transport::WebSocket).await;
    one.next_message().await;
    two.next_message().await;
    let rounds = 20;
    for round in 0..rounds {
        let name = format!("racer{round}");
        let (a, b) = tokio::join!(one.set_username(&name), two.set_username(&name));
        let ((), ()) = (a, b);
        let answers = [one.next_message().await, two.next_message().await];
        let won = answers.iter().filter(|a| **a == format!("Your username is set to {name}")).count();
        let lost = answers.iter().filter(|a| a.contains("is already taken")).count();
        assert_eq!((won, lost), (1, 1), "round {round}: {answers:?}");
    }
    println!("name race: {rounds} rounds across two nodes, exactly one winner in each");
}

#[tokio::test]
async fn a_sync_writes_back_the_node_as_it_is_when_it_writes() {
    use server::backend::redis::keys::RoomKeys;
    use server::backend::redis::{PresenceTimings, RedisLink, RedisPresence, RedisTarget};
    use server::backend::{Presence, SessionId, UserId};
    let redis = RedisServer::start().await;
    let link = RedisLink::open(&RedisTarget::Single { url: redis.url(), ca_pem: None }).await.unwrap();
    let timings = PresenceTimings { grace: Duration::ZERO, node_timeout: Duration::from_secs(10) };
    let presence = RedisPresence::connect(&link, "node-1", 100, timings).await.unwrap();
    let lobby = app::protocol::RoomName::parse("lobby").unwrap();
    let arrive = async |sid: &str, name: &str| {
        let (sid, user) = (SessionId::new(sid), UserId::of_connection(&SessionId::new(sid)));
        presence.connect(&user, &sid).await.unwrap();
        presence.claim(&user, &sid, &app::protocol::Username::parse(name).unwrap()).await.unwrap();
        presence.enter(&lobby, &user, &sid).await.unwrap();
        (user, sid)
    };
    let mut conn = redis.connection().await;
    let stream = RoomKeys::of(&lobby).stream;
    let mut lines = async || -> Vec<String> {
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
        let line = |id: &redis::streams::StreamId| {
            let event: serde_json::Value = serde_json::from_str(&id.get::<String>("e").unwrap()).unwrap();
            format!("{} {}", event["kind"].as_str().unwrap(), event["author"].as_str().unwrap())
        };
        reply.ids.iter().map(line).collect()
    };
    arrive("s-ann", "ann").await;
    let (cid, cid_sid) = arrive("s-cid", "cid").await;
    let (dan, dan_sid) = arrive("s-dan", "dan").await;

    // A sweep's sync takes the node's list; before it is written back, Bob resumes into
    // the lobby, Cid's connection closes and Dan leaves the lobby.
    let list = presence.live_list();
    arrive("s-bob", "bob").await;
    presence.disconnect(&cid, &cid_sid, std::slice::from_ref(&lobby), Duration::ZERO).await.unwrap();
    presence.exit(&lobby, &dan, &dan_sid).await.unwrap();
    let before = lines().await;
    assert_eq!(before[3..], ["joined bob", "left cid", "left dan"]);
    let swept = presence.write_back(list).await.unwrap();

    assert_eq!(presence.snapshot(&lobby).await.unwrap().users, ["ann", "bob"], "the lobby as the node has it");
    assert_eq!(lines().await, before, "the sync announced nothing: nobody left, came back or left again");
    assert_eq!(swept.left, 0);
}

//! Faults of the Redis under the nodes: a Redis that loses its data must not leave a
//! silent gap for anyone.

use crate::support::{Client, Node, RedisServer, Transport, chat_text, lines_until, send_until_accepted};
use redis::AsyncCommands;
use serde_json::{Value, json};
use server::backend::redis::keys::RoomKeys;
use std::time::{Duration, Instant};

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

/// How Redis stalls in a test.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// `CLIENT PAUSE 15000 ALL`: Redis answers nothing, and runs what waited afterwards.
    Paused,
    /// The process is stopped (SIGSTOP) and continued (SIGCONT) 15 s later.
    Stopped,
}

/// Four clients on two nodes, a sender that keeps sending while Redis stalls for 15 s:
/// nobody still connected is announced as left, the chat goes on after the stall, and
/// the viewers see exactly the lines the sender was not told failed.
async fn a_redis_stall(stall: Stall) {
    let redis = RedisServer::start().await;
    let flags = ["--node-timeout-secs", "3", "--presence-grace-secs", "2"];
    let node1 = Node::spawn(&redis.url(), "node-1", &flags).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &flags).await;
    let mut sender = Client::named(&node1.url(), "s").await;
    let mut ann = Client::user(&node1.url(), "ann").await.with_name("ann").await;
    let mut bob = Client::user(&node2.url(), "bob").await.with_name("bob").await;
    let mut carl = Client::named(&node2.url(), "carl").await;

    let stalled_at = Instant::now();
    match stall {
        Stall::Paused => {
            let _: () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(15_000)
                .arg("ALL")
                .query_async(&mut redis.connection().await)
                .await
                .expect("CLIENT PAUSE");
        }
        Stall::Stopped => redis.signal("STOP").await,
    }
    // One line every 300 ms for 25 s: through the stall and well after it.
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut continued = false;
    for n in 0..80 {
        if matches!(stall, Stall::Stopped) && !continued && stalled_at.elapsed() >= Duration::from_secs(15) {
            redis.signal("CONT").await;
            continued = true;
        }
        let text = n.to_string();
        sender.send(&text).await;
        let answer = sender.next_message().await;
        if answer == format!("s: {text}") {
            accepted.push(text);
        } else {
            assert!(answer.starts_with("Failed"), "neither the line nor a refusal: {answer}");
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("{stall:?} for 15 s: {} lines accepted, {refused} refused", accepted.len());
    assert!(refused > 0, "nothing was refused: did Redis stall?");
    assert!(accepted.len() > 20, "the chat did not go on after the stall: {} accepted", accepted.len());
    let last = accepted.last().expect("accepted lines").clone();

    // Each viewer saw exactly the accepted lines, in order, and nobody leave.
    for viewer in [&mut ann, &mut bob] {
        let got: Vec<String> = lines_until(viewer, &last).await.into_iter().map(|(text, _)| text).collect();
        assert_eq!(got, accepted, "{stall:?}: a viewer's lines differ from those accepted");
    }
    let legacy: Vec<String> = carl.next_messages(accepted.len()).await;
    assert!(legacy.iter().all(|line| !line.ends_with("left the chatroom.")), "{stall:?}: {legacy:?}");
    assert_eq!(legacy, accepted.iter().map(|text| format!("s: {text}")).collect::<Vec<_>>());
    // Nobody left, also after the node timeout has passed again with Redis back.
    let later = ann.events_within(Duration::from_secs(5)).await;
    assert!(later.iter().all(|(event, line)| !(event == "line" && line["kind"] == "left")), "{stall:?}: {later:?}");
    let online = online_on(&node2.url()).await;
    assert_eq!(online, ["ann", "bob", "carl", "s"], "{stall:?}: who is online after the stall");
}

#[tokio::test]
async fn a_redis_paused_for_15_s_announces_no_false_leave_and_publishes_no_refused_line() {
    a_redis_stall(Stall::Paused).await;
}

#[tokio::test]
async fn a_redis_stopped_for_15_s_announces_no_false_leave_and_publishes_no_refused_line() {
    a_redis_stall(Stall::Stopped).await;
}

#[tokio::test]
async fn a_name_taken_while_its_node_was_taken_for_dead_is_lost_not_shared() {
    let redis = RedisServer::start().await;
    let flags = ["--node-timeout-secs", "3", "--presence-grace-secs", "0"];
    let node1 = Node::spawn(&redis.url(), "node-1", &flags).await;
    let node2 = Node::spawn(&redis.url(), "node-2", &flags).await;
    let mut watcher = Client::user(&node1.url(), "watcher").await.with_name("watcher").await;
    let mut ann = Client::user(&node2.url(), "ann").await.with_name("ann").await;
    let mut leg = Client::named(&node2.url(), "leg").await;

    // node-2 stops answering past the node timeout: node-1 takes it for dead.
    node2.signal("STOP").await;
    wait_for_room_line(&mut watcher, "left", "ann").await;
    let _eve = Client::user(&node1.url(), "eve").await.with_name("ann").await;
    let mut leg2 = Client::named(&node1.url(), "leg2").await;
    leg2.set_username("leg").await;
    assert_eq!(leg2.next_message().await, "Your username is set to leg");
    node2.signal("CONT").await;

    // Back, node-2 finds both names taken: its clients are told, and have none.
    let lost = ann.wait_for("notice", |notice| notice["kind"] == "name_lost", |_, _| {}).await;
    assert_eq!(lost["name"], "ann");
    assert_eq!(lost["text"], "Your username ann was taken while you were away. Choose another one.");
    let mut told = Vec::new();
    while told.last().map(String::as_str)
        != Some("Your username leg was taken while you were away. Choose another one.")
    {
        assert!(told.len() < 20, "the legacy client was not told: {told:?}");
        told.push(leg.next_message().await);
    }
    ann.send("still ann?").await;
    let refused = ann.wait_for("notice", |notice| notice["kind"] == "refused", |_, _| {}).await;
    assert_eq!(refused["text"], "Failed to send the message. Specify a username first.");
    leg.send("still leg?").await;
    assert_eq!(leg.next_message().await, "Failed to send the message. Specify a username first.");
    // Nobody else heard either of them.
    let heard = watcher.events_within(Duration::from_secs(1)).await;
    assert!(heard.iter().all(|(_, line)| line["kind"] != "chat"), "{heard:?}");
}

/// Who a new chatroom client on `url` is told is online.
async fn online_on(url: &str) -> Vec<String> {
    let mut look = Client::connect_chatroom(url, Transport::WebSocket).await;
    let online = look.joined().await.online;
    look.close().await;
    online
}

/// Waits until `client` sees the room line `kind author`.
async fn wait_for_room_line(client: &mut Client, kind: &str, author: &str) {
    client.wait_for("line", |line| line["kind"] == kind && line["author"] == author, |_, _| {}).await;
}

#[tokio::test]
async fn a_line_that_reaches_redis_after_its_deadline_is_dropped_there() {
    let redis = RedisServer::start().await;
    let mut conn = redis.connection().await;
    let script = server::backend::redis::bus_script();
    let keys = RoomKeys::of(&app::protocol::RoomName::lobby());
    let publish = |deadline: i64| {
        let mut invocation = script.key(&keys.stream);
        invocation.key(&keys.epoch).arg("publish").arg("lobby").arg(100).arg(deadline);
        invocation.arg(r#"{"kind":"chat","author":"s","text":"late"}"#);
        invocation
    };
    let late: Option<String> = publish(1).invoke_async(&mut conn).await.expect("the script runs");
    assert_eq!(late, None, "a line past its deadline is not appended");
    let len: usize = conn.xlen(&keys.stream).await.expect("XLEN");
    assert_eq!(len, 0);
    let in_time: Option<String> = publish(i64::MAX).invoke_async(&mut conn).await.expect("the script runs");
    let id = in_time.expect("a line within its deadline is appended");
    let epoch: String = conn.get(&keys.epoch).await.expect("GET");
    assert_eq!(epoch, id, "the append that created the stream started its epoch");
}

//! The node against clients that mean harm or just misbehave: nothing they send may
//! make it build unbounded packets, hold unbounded memory, crash it, or slow the others
//! down. (The attacks with a home of their own: forged origins in `node.rs`, look-alike
//! names in `presence.rs`, reconnects and connection floods against the limits in
//! `limits.rs`, slow TLS handshakes in `tls.rs`.)

use crate::support::{
    Client, Kind, Node, RawSocket, RedisServer, Transport, get_json, raw_socket, spawn_app, spawn_app_with,
};
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Reads frames until the `backlog` packet; returns its text.
async fn backlog_frame(socket: &mut RawSocket) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = frame
            && text.starts_with(r#"42["backlog""#)
        {
            return text.to_string();
        }
    }
}

#[tokio::test]
async fn a_flood_of_heavy_lines_and_clients_resuming_that_never_read_stay_bounded() {
    let redis = RedisServer::start().await;
    let node = Node::spawn(&redis.url(), "node-1", &[]).await;
    let mut sender = Client::named(&node.url(), "s").await;
    // 1,500 lines of 1,900 control characters: each escapes to 6 bytes in JSON.
    let heavy = "\u{1}".repeat(1_900);
    for _ in 0..1_500 {
        sender.send(&heavy).await;
    }
    sender.next_messages(1_500).await;
    let oldest: String = {
        let mut conn = redis.connection().await;
        let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(server::backend::redis::keys::RoomKeys::of(&app::protocol::RoomName::lobby()).stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .expect("XRANGE");
        first.ids[0].id.clone()
    };
    let auth = format!(r#"{{"v":1,"after":"{oldest}"}}"#);
    let rss_before = node.rss_kib();

    // 30 clients resume from the oldest position and never read a byte.
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(raw_socket(&node.url(), Some(&auth), &[]).await.expect("admitted"));
    }
    // Meanwhile a calm client chats and the node stays ready.
    let mut calm = Client::named(&node.url(), "calm").await;
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let sent = Instant::now();
        calm.send(&format!("calm {n}")).await;
        while calm.next_message().await != format!("calm: calm {n}") {}
        slowest = slowest.max(sent.elapsed());
        assert_eq!(get_json(&node.url(), "/readyz").await.0, 200, "ready while clients resume");
    }
    // One that reads: what every one of them was sent.
    let mut reader = raw_socket(&node.url(), Some(&auth), &[]).await.expect("admitted");
    let frame = backlog_frame(&mut reader).await;
    let rss_after = node.rss_kib();
    println!(
        "30 silent resumes: backlog packet {} bytes, node RSS {rss_before} -> {rss_after} KiB, slowest round trip {slowest:?}",
        frame.len()
    );
    assert!(frame.len() <= 256 * 1024, "a backlog packet of {} bytes", frame.len());
    assert!(frame.contains(r#""kind":"reset""#), "too much was missed for one packet: a reset");
    assert!(rss_after < rss_before + 64 * 1024, "the node grew from {rss_before} to {rss_after} KiB");
    // Speed is the benchmark's to measure (the round trips are printed above); here only
    // that the node was never stuck serving the others.
    assert!(slowest < Duration::from_secs(2), "a calm client waited {slowest:?} for its line");
    drop(silent);
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let app = spawn_app().await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("write a part of a head");
    let started = Instant::now();
    let mut rest = Vec::new();
    // The node answers 408 or closes once the head is 10 s late; either way the socket ends.
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the socket was still open after 20 s");
    println!("a trickled head was cut off after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(9), "cut off before the 10 s header timeout");
}

/// What a client with a raw socket sends that no library would.
fn malformed_frames() -> Vec<(&'static str, Message)> {
    let utf8_broken =
        Frame::message(vec![b'4', b'2', b'[', b'"', 0xff, 0xfe, b'"', b']'], OpCode::Data(Data::Text), true);
    vec![
        ("an empty frame", Message::text("")),
        ("an unknown packet type", Message::text("9")),
        ("a message without a Socket.IO packet", Message::text("4")),
        ("cut JSON", Message::text("42[\"message\"")),
        ("an event that is an object", Message::text("42{}")),
        ("an event named by a number", Message::text("42[1,2]")),
        ("a name that is an object", Message::text(r#"42["set_username",{"a":[1,2]}]"#)),
        ("a binary attachment", Message::text(r#"451-["message",{"_placeholder":true,"num":0}]"#)),
        ("a binary frame", Message::binary(vec![0xff, 0xfe, 0x00, 0x42])),
        ("a text frame that is not UTF-8", Message::Frame(utf8_broken)),
        ("deeply nested JSON", Message::text(format!(r#"42["message",{}1{}]"#, "[".repeat(5_000), "]".repeat(5_000)))),
        ("a huge object", Message::text(format!(r#"42["message",{{"a":"{}"}}]"#, "x".repeat(90_000)))),
        ("a frame over the payload limit", Message::text(format!(r#"42["message","{}"]"#, "x".repeat(200_000)))),
        ("another namespace", Message::text(r#"4/admin,42["message","x"]"#)),
        ("an ack nobody asked for", Message::text(r#"43["ack"]"#)),
        ("a disconnect of another namespace", Message::text("41/admin,")),
    ]
}

#[tokio::test]
async fn malformed_frames_and_payloads_hurt_no_one_but_their_sender() {
    let app = spawn_app().await;
    let mut calm = Client::named(&app.url(), "calm").await;
    for (n, (what, frame)) in malformed_frames().into_iter().enumerate() {
        let mut socket = raw_socket(&app.url(), None, &[]).await.expect("admitted");
        // Whatever happens to this connection (refused, ignored or closed), the node goes on.
        let _ = socket.send(frame).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
        let text = format!("after {what} ({n})");
        calm.send(&text).await;
        assert_eq!(calm.next_message().await, format!("calm: {text}"), "after {what}");
    }
    assert_eq!(get_json(&app.url(), "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_second_connect_on_one_session_is_ignored() {
    let app = spawn_app().await;
    let mut socket = raw_socket(&app.url(), None, &[]).await.expect("admitted");
    socket.send(Message::text(r#"40{"v":1}"#)).await.expect("a second CONNECT");
    socket.send(Message::text(r#"42["set_username","twice"]"#)).await.expect("a name");
    socket.send(Message::text(r#"42["message","once"]"#)).await.expect("a line");
    // One connection, one welcome, one confirmation, one echo: the second CONNECT did nothing.
    let mut events = Vec::new();
    // Generous for the three expected (other tests load the machine), short for a fourth.
    let mut patience = Duration::from_secs(10);
    while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(patience, socket.next()).await {
        if text.starts_with("42") {
            events.push(text.to_string());
        }
        if events.len() >= 3 {
            patience = Duration::from_millis(500);
        }
    }
    assert_eq!(
        events,
        [
            r#"42["message","Welcome to the chatroom!"]"#,
            r#"42["message","Your username is set to twice"]"#,
            r#"42["message","twice: once"]"#
        ]
    );
    let metrics = crate::support::http_get(&app.addr.to_string(), "/metrics").await.1;
    assert!(metrics.contains(r#"chatroom_connected_clients{transport="websocket",protocol="legacy"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_made_up_session_id_on_a_full_node_gets_no_session() {
    let app = spawn_app_with(|s| s.limits.max_connections = 1).await;
    let _only = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
    let addr = app.addr.to_string();
    for made_up in ["AAAAAAAAAAAAAAAA", "../../etc/passwd", "x"] {
        let (status, _) =
            crate::support::http_get(&addr, &format!("/socket.io/?EIO=4&transport=polling&sid={made_up}")).await;
        assert_eq!(status, 400, "a session nobody opened: {made_up}");
    }
    let (status, _) = crate::support::http_get(&addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 503, "still full");
}

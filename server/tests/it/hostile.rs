//! The node against clients that mean harm or just misbehave: nothing they send may
//! make it build unbounded packets, hold unbounded memory, or slow the others down.

use crate::support::{Client, Node, RawSocket, RedisServer, get_json, raw_socket, spawn_app};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

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
            .arg("chatroom:events")
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
    assert!(slowest < Duration::from_millis(100), "a calm client's round trip took {slowest:?}");
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

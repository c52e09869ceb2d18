//! Limits that keep one client from hurting the others: rate limits on chat lines and
//! renames, the flood disconnect, and the most connections a node takes.

use crate::support::{Client, Kind, Transport, eventually, http_get, spawn_app_with};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

const TOO_FAST: &str = "Failed to send the message: you are sending too fast. Slow down.";

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("not zero")
}

/// Sends `count` lines at `every`, each timed from its sending to its echo; returns the
/// round trips in milliseconds, sorted. Lines of others are skipped; a refusal fails.
async fn timed_lines(client: &mut Client, name: &str, label: &str, count: usize, every: Duration) -> Vec<f64> {
    let mut took = Vec::new();
    for i in 0..count {
        let text = format!("{label} {i}");
        let sent = Instant::now();
        client.send(&text).await;
        let expected = format!("{name}: {text}");
        loop {
            let got = client.next_message().await;
            assert!(!got.starts_with("Failed"), "{name} was refused: {got}");
            if got == expected {
                break;
            }
        }
        took.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(every).await;
    }
    took.sort_by(f64::total_cmp);
    took
}

#[tokio::test]
async fn a_flooding_client_is_refused_then_disconnected_and_the_others_chat_on() {
    let app = spawn_app_with(|s| {
        (s.limits.message_rate, s.limits.message_burst) = (n(10), n(20));
        s.limits.flood_disconnect_after = 100;
    })
    .await;
    let mut calm = Client::named(&app.url(), "calm").await;
    let mut flooder = Client::named(&app.url(), "flood").await;
    let before = timed_lines(&mut calm, "calm", "before", 10, Duration::from_millis(200)).await;

    // 3000 lines as fast as the client can write them.
    for i in 0..3_000 {
        flooder.send(&format!("spam {i}")).await;
    }
    let during = timed_lines(&mut calm, "calm", "during", 10, Duration::from_millis(200)).await;

    let (mut accepted, mut refused) = (0, 0);
    loop {
        let (kind, arg) = flooder.next_any().await;
        match (kind.as_str(), arg.as_str()) {
            ("disconnected", _) => break,
            ("message", Some(TOO_FAST)) => refused += 1,
            ("message", Some(text)) if text.starts_with("flood: spam") => accepted += 1,
            ("message", Some(text)) if text.starts_with("calm: ") => {}
            other => panic!("unexpected for the flooder: {other:?}"),
        }
    }
    println!(
        "flood: {accepted} lines accepted, {refused} refused, then disconnected; the calm client's round trips \
         (ms) before: median {:.1}, max {:.1}; during: median {:.1}, max {:.1}",
        before[before.len() / 2],
        before[before.len() - 1],
        during[during.len() / 2],
        during[during.len() - 1],
    );
    assert!((20..200).contains(&accepted), "the burst and rate were not applied: {accepted} accepted");
    assert!(refused >= 99, "too few refusals before the disconnect: {refused}");

    let (_, text) = http_get(&app.addr.to_string(), "/metrics").await;
    assert!(text.contains(r#"chatroom_refusals_total{reason="too_fast"}"#), "refusals not counted");
    assert!(text.contains(r#"chatroom_refusals_total{reason="flood_disconnect"} 1"#), "disconnect not counted");
}

#[tokio::test]
async fn renames_have_their_own_limit() {
    let app = spawn_app_with(|s| (s.limits.renames_per_minute, s.limits.rename_burst) = (n(1), n(3))).await;
    let mut client = Client::named(&app.url(), "a0").await;
    for i in 1..3 {
        client.set_username(&format!("a{i}")).await;
        assert_eq!(client.next_message().await, format!("Your username is set to a{i}"));
    }
    client.set_username("a3").await;
    assert_eq!(client.next_message().await, "Could not set the username: too many changes. Wait a moment.");
    // Chat lines are not held back by it.
    client.send("still here").await;
    assert_eq!(client.next_message().await, "a2: still here");
}

#[tokio::test]
async fn a_full_node_refuses_new_connections_until_one_closes() {
    let app = spawn_app_with(|s| s.limits.max_connections = 2).await;
    let first = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
    let _second = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let (status, body) = http_get(&app.addr.to_string(), handshake).await;
    assert_eq!(status, 503, "a third connection must be refused: {body}");
    assert!(body.contains(r#""status":"full""#), "{body}");
    first.close().await;
    let admitted =
        eventually(Duration::from_secs(5), || async { http_get(&app.addr.to_string(), handshake).await.0 == 200 });
    assert!(admitted.await.is_some(), "a place freed up, yet new connections are still refused");
}

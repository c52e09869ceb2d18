//! Limits that keep one client from hurting the others: rate limits on chat lines and
//! renames (per user and per source address, so that reconnecting or opening more
//! connections gains nothing), the flood disconnect, and the most connections a node
//! and one address take.

use crate::support::{Client, Kind, Transport, eventually, http_get, raw_socket, spawn_app_with};
use serde_json::json;
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

/// Sends `text` from a chatroom client; whether it was accepted (its own line came back)
/// or refused as too fast.
async fn accepted(client: &mut Client, text: &str) -> bool {
    client.send(text).await;
    loop {
        let (event, arg) = client.next_event().await;
        match event.as_str() {
            "line" if arg[0]["text"] == text => return true,
            "notice" if arg[0]["kind"] == "refused" => {
                assert_eq!(arg[0]["text"], TOO_FAST);
                return false;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_user_s_other_connections_get_no_more_rate() {
    let app = spawn_app_with(|s| {
        (s.limits.message_rate, s.limits.message_burst) = (n(1), n(5));
        s.limits.address_limit_factor = n(100);
    })
    .await;
    let mut tab1 = Client::user(&app.url(), "ann").await.with_name("ann").await;
    let mut tab2 = Client::user(&app.url(), "ann").await;
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(accepted(&mut tab1, &format!("tab1 {i}")).await);
    }
    assert_eq!(sent, [true, true, true, true, true, false], "a burst of 5");
    // The same user on another connection (a second tab, or a reconnect) draws from the same bucket.
    assert!(!accepted(&mut tab2, "tab2").await, "another connection of the user gets no fresh burst");
    let mut bob = Client::user(&app.url(), "bob").await.with_name("bob").await;
    assert!(accepted(&mut bob, "bob").await, "another user has a bucket of its own");
}

#[tokio::test]
async fn connections_from_one_address_share_its_rate() {
    let app = spawn_app_with(|s| {
        (s.limits.message_rate, s.limits.message_burst) = (n(1), n(2));
        s.limits.address_limit_factor = n(2);
    })
    .await;
    // Legacy clients have no key: each is a user of its own, the address is what they share.
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(Client::named(&app.url(), &format!("c{i}")).await);
    }
    let mut answers = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        for j in 0..2 {
            client.send(&format!("{i}.{j}")).await;
            loop {
                let got = client.next_message().await;
                if got == format!("c{i}: {i}.{j}") || got == TOO_FAST {
                    answers.push(got != TOO_FAST);
                    break;
                }
            }
        }
    }
    let accepted = answers.iter().filter(|ok| **ok).count();
    assert_eq!(accepted, 4, "the address's burst (2 x 2), not 3 x 2: {answers:?}");
}

#[tokio::test]
async fn a_name_presented_on_connecting_counts_as_a_rename() {
    let app = spawn_app_with(|s| {
        (s.limits.renames_per_minute, s.limits.rename_burst) = (n(1), n(2));
        s.limits.address_limit_factor = n(1);
    })
    .await;
    let mut answers = Vec::new();
    for name in ["a1", "a2", "a3"] {
        let mut client =
            Client::connect_with_auth(&app.url(), Transport::WebSocket, json!({"v": 1, "name": name})).await;
        client.joined().await;
        let (_, welcome) = client.next_event().await;
        assert_eq!(welcome[0]["kind"], "welcome", "a fresh join is greeted");
        let (_, notice) = client.next_event().await;
        answers.push(notice[0]["kind"].as_str().unwrap_or_default().to_owned());
        if name == "a3" {
            assert_eq!(notice[0]["text"], "Could not set the username: too many changes. Wait a moment.");
        }
    }
    assert_eq!(answers, ["name_set", "name_set", "refused"]);
}

#[tokio::test]
async fn an_address_with_too_many_connections_is_refused_with_429() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_address = 2).await;
    let first = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
    let _second = Client::connect(Kind::Js, &app.url(), Transport::WebSocket).await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let (status, body) = http_get(&app.addr.to_string(), handshake).await;
    assert_eq!(status, 429, "a third connection from the address: {body}");
    first.close().await;
    let admitted =
        eventually(Duration::from_secs(5), || async { http_get(&app.addr.to_string(), handshake).await.0 == 200 });
    assert!(admitted.await.is_some(), "a place freed up, yet the address is still refused");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts_and_a_forged_one_does_not() {
    let app = spawn_app_with(|s| {
        s.limits.max_connections_per_address = 1;
        s.listen.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let from = |chain: &'static str| [("X-Forwarded-For", chain)];
    let _a = raw_socket(&app.url(), None, &from("203.0.113.1")).await.expect("the first client");
    let _b = raw_socket(&app.url(), None, &from("203.0.113.2")).await.expect("another client");
    let counted = eventually(Duration::from_secs(5), || async {
        raw_socket(&app.url(), None, &from("6.6.6.6, 203.0.113.1")).await.err() == Some(429)
    });
    assert!(counted.await.is_some(), "the rightmost forwarded address is the client, whatever it wrote before");

    // Without trusted proxies the header is the client's own words: the peer counts.
    let app = spawn_app_with(|s| s.limits.max_connections_per_address = 1).await;
    let _a = raw_socket(&app.url(), None, &from("203.0.113.1")).await.expect("the first client");
    let counted = eventually(Duration::from_secs(5), || async {
        raw_socket(&app.url(), None, &from("203.0.113.2")).await.err() == Some(429)
    });
    assert!(counted.await.is_some(), "a forged X-Forwarded-For from an untrusted peer is ignored");
}

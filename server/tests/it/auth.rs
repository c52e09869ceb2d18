//! Who may join, on two nodes sharing a real Redis: connection tokens signed as an
//! application's backend would (HS256, RS256), the three policies, bad tokens of every
//! kind refused with their reason, refresh before expiry, private rooms that never reach
//! anyone without them, and legacy clients with a token in the query string.

use crate::support::{Client, Kind, Node, RedisServer, Transport, host_of, http_request, key_auth, workspace_root};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "the-application-secret-0123456789-abcdef";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789-abcdefghij";
const QUIET: Duration = Duration::from_millis(500);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A token as the application's backend signs it with the shared secret.
fn token(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("a secret");
    encode(&Header::new(Algorithm::HS256), claims, &key).expect("signed")
}

/// A token of user `sub`, named `name`, valid for ten minutes, with more `claims`.
fn user_token(sub: &str, name: &str, claims: &Value) -> String {
    let mut all = json!({"sub": sub, "name": name, "exp": now() + 600});
    if let (Some(all), Some(more)) = (all.as_object_mut(), claims.as_object()) {
        all.extend(more.clone());
    }
    token(&all)
}

/// Two nodes on one Redis, checking tokens with the shared secret under `policy`.
async fn two_nodes(redis: &RedisServer, policy: &str) -> (Node, Node) {
    let args = ["--auth", policy, "--token-hmac-secret", SECRET, "--admin-token", ADMIN_TOKEN];
    (Node::spawn(&redis.url(), "node-1", &args).await, Node::spawn(&redis.url(), "node-2", &args).await)
}

/// A chatroom client (version 2, no room yet) presenting `token`.
async fn with_token(url: &str, token: &str) -> Client {
    Client::connect_with_auth(url, Transport::WebSocket, json!({"v": 2, "token": token})).await
}

/// A version 2 client presenting `token`, in the lobby, its name confirmed.
async fn signed_in(url: &str, token: &str, name: &str) -> Client {
    let mut client = with_token(url, token).await;
    let signed = client.wait_for("notice", |n| n["kind"] == "signed_in", |_, _| {}).await;
    assert_eq!(signed["name"], name);
    client.wait_for("notice", |n| n["kind"] == "name_set" && n["name"] == name, |_, _| {}).await;
    join(&mut client, "lobby").await;
    client
}

/// Joins `room` and waits for its presence list.
async fn join(client: &mut Client, room: &str) -> Value {
    client.emit("join", json!([{"room": room}])).await;
    client.wait_for("presence", |p| p["room"] == room, |_, _| {}).await
}

async fn refused(client: &mut Client) -> String {
    client.wait_for("notice", |n| n["kind"] == "refused", |_, _| {}).await["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A chatroom client is told why it may not connect, then let go.
async fn turned_away(url: &str, token: Option<&str>) -> String {
    let auth = token.map_or_else(|| json!({"v": 2}), |token| json!({"v": 2, "token": token}));
    let mut client = Client::connect_with_auth(url, Transport::WebSocket, auth).await;
    let (event, notice) = client.next_event().await;
    assert_eq!((event.as_str(), notice[0]["kind"].as_str()), ("notice", Some("refused")), "{notice}");
    client.until_disconnected().await;
    notice[0]["text"].as_str().unwrap_or_default().to_owned()
}

async fn say(client: &mut Client, room: &str, text: &str) {
    client.emit("message", json!([{"room": room, "text": text}])).await;
}

async fn chat_line(client: &mut Client, text: &str) -> Value {
    client.wait_for("line", |l| l["kind"] == "chat" && l["text"] == text, |_, _| {}).await
}

#[tokio::test]
async fn with_auth_token_only_signed_in_users_connect_and_legacy_ones_use_the_query() {
    let redis = RedisServer::start().await;
    let (node1, node2) = two_nodes(&redis, "token").await;

    assert_eq!(turned_away(&node1.url(), None).await, "Not allowed: a sign-in token is required.");
    let mut legacy = Client::connect(Kind::Python, &node2.url(), Transport::Polling).await;
    assert_eq!(legacy.next_message().await, "Not allowed: a sign-in token is required.");
    legacy.until_disconnected().await;

    // The token's name is the user's, on every node; it cannot be changed.
    let mut ada = signed_in(&node1.url(), &user_token("u-ada", "Ada", &json!({})), "Ada").await;
    ada.set_username("Eve").await;
    assert_eq!(refused(&mut ada).await, "Your username is set by your sign-in and cannot be changed.");

    // Legacy clients, both libraries, with the token in the query string.
    let query = format!("{}/?token={}", node2.url(), user_token("u-bob", "Bob", &json!({})));
    let mut bob = Client::connect(Kind::Js, &query, Transport::WebSocket).await;
    assert_eq!(bob.next_messages(2).await, ["Welcome to the chatroom!", "Your username is set to Bob"]);
    let query = format!("{}/?token={}", node2.url(), user_token("u-cy", "Cy", &json!({})));
    let mut cy = Client::connect(Kind::Python, &query, Transport::Polling).await;
    assert_eq!(cy.next_messages(2).await, ["Welcome to the chatroom!", "Your username is set to Cy"]);
    bob.send("hello from a legacy client").await;
    assert_eq!(chat_line(&mut ada, "hello from a legacy client").await["author"], "Bob");
    say(&mut ada, "lobby", "hi Bob").await;
    loop {
        let got = cy.next_message().await;
        if got == "Ada: hi Bob" {
            break;
        }
    }
    let query = format!("{}/?token=not-a-token", node1.url());
    let mut forged = Client::connect(Kind::Js, &query, Transport::WebSocket).await;
    assert_eq!(forged.next_message().await, "Not allowed: the sign-in token is not a valid JWT.");
    forged.until_disconnected().await;
}

#[tokio::test]
async fn one_user_is_all_its_devices_and_open_lets_anonymous_users_chat() {
    let redis = RedisServer::start().await;
    let (node1, node2) = two_nodes(&redis, "open").await;
    let ada = user_token("u-ada", "Ada", &json!({}));
    let mut laptop = signed_in(&node1.url(), &ada, "Ada").await;
    let mut phone = signed_in(&node2.url(), &ada, "Ada").await;
    let mut anon = Client::named(&node2.url(), "anon").await;
    let mut watcher = Client::connect_with_auth(&node1.url(), Transport::WebSocket, key_auth("watcher")).await;
    let mut online = watcher.joined().await.online;
    online.sort();
    assert_eq!(online, ["Ada", "anon"], "one Ada for two devices");
    anon.send("anonymous lines still go").await;
    chat_line(&mut laptop, "anonymous lines still go").await;
    say(&mut phone, "lobby", "from the phone").await;
    chat_line(&mut laptop, "from the phone").await;
}

#[tokio::test]
async fn with_mixed_readonly_anonymous_users_read_but_do_not_post() {
    let redis = RedisServer::start().await;
    let (node1, node2) = two_nodes(&redis, "mixed-readonly").await;
    let mut ada = signed_in(&node1.url(), &user_token("u-ada", "Ada", &json!({})), "Ada").await;
    let mut reader = Client::connect_with_auth(&node2.url(), Transport::WebSocket, json!({"v": 2})).await;
    join(&mut reader, "lobby").await;
    let mut legacy = Client::connect(Kind::Js, &node2.url(), Transport::WebSocket).await;
    assert_eq!(legacy.next_message().await, "Welcome to the chatroom!");

    say(&mut ada, "lobby", "read me").await;
    chat_line(&mut reader, "read me").await;
    assert_eq!(legacy.next_message().await, "Ada: read me");
    say(&mut reader, "lobby", "may I?").await;
    assert_eq!(refused(&mut reader).await, "Sign in to send messages: you can read, but not post.");
    reader.set_username("lurker").await;
    assert_eq!(refused(&mut reader).await, "Sign in to send messages: you can read, but not post.");
    legacy.set_username("lurker").await;
    assert_eq!(legacy.next_message().await, "Sign in to send messages: you can read, but not post.");
    legacy.send("me too?").await;
    assert_eq!(legacy.next_message().await, "Sign in to send messages: you can read, but not post.");
    let seen = format!("{:?}", ada.events_within(QUIET).await);
    assert!(!seen.contains("lurker") && !seen.contains("may I?") && !seen.contains("me too?"), "{seen}");
}

#[tokio::test]
async fn expired_tampered_unsigned_confused_and_foreign_tokens_are_refused() {
    let redis = RedisServer::start().await;
    let (node1, _node2) = two_nodes(&redis, "open").await;
    let url = node1.url();
    let expired = token(&json!({"sub": "u", "exp": now() - 5}));
    assert_eq!(turned_away(&url, Some(&expired)).await, "Not allowed: the sign-in token has expired.");
    let valid = user_token("u", "Ada", &json!({}));
    let mut parts: Vec<&str> = valid.split('.').collect();
    let admin_claims = base64_url(&json!({"sub": "u", "name": "Ada", "exp": now() + 600, "admin": true}));
    parts[1] = &admin_claims;
    assert_eq!(
        turned_away(&url, Some(&parts.join("."))).await,
        "Not allowed: the sign-in token's signature is not valid."
    );
    let unsigned = format!("{}.{}.", base64_url(&json!({"alg": "none", "typ": "JWT"})), admin_claims);
    assert_eq!(turned_away(&url, Some(&unsigned)).await, "Not allowed: the sign-in token is not a valid JWT.");
    let foreign = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "exp": now() + 600}),
        &EncodingKey::from_secret(b"some-other-application-secret-0123456789").expect("a secret"),
    )
    .expect("signed");
    assert_eq!(turned_away(&url, Some(&foreign)).await, "Not allowed: the sign-in token's signature is not valid.");

    // With a public key: RS256 is taken, HS256 "signed" with that public key is not.
    let fixtures = workspace_root().join("server/tests/fixtures");
    let public = fixtures.join("token-rsa-public.pem");
    let args = ["--auth", "token", "--token-public-key", public.to_str().expect("a path")];
    let rsa_node = Node::spawn(&redis.url(), "node-3", &args).await;
    let claims = json!({"sub": "u-rsa", "name": "Rsa", "exp": now() + 600});
    let private = std::fs::read(fixtures.join("token-rsa-private.pem")).expect("the test key");
    let rs256 = encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(&private).expect("key"))
        .expect("signed");
    signed_in(&rsa_node.url(), &rs256, "Rsa").await;
    let public_pem = std::fs::read(&public).expect("the public key");
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem).expect("bytes as a secret"),
    )
    .expect("signed");
    assert_eq!(
        turned_away(&rsa_node.url(), Some(&confused)).await,
        "Not allowed: the sign-in token is not signed with an accepted algorithm."
    );
}

/// Base64url without padding, as in a JWT.
fn base64_url(value: &Value) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = value.to_string().into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test]
async fn a_refresh_before_expiry_keeps_the_connection_and_without_one_it_closes() {
    let redis = RedisServer::start().await;
    let (node1, node2) = two_nodes(&redis, "token").await;
    let short = |sub: &str, name: &str| token(&json!({"sub": sub, "name": name, "exp": now() + 3}));
    let mut kept = signed_in(&node1.url(), &short("u-kept", "Kept"), "Kept").await;
    let mut dropped = signed_in(&node2.url(), &short("u-dropped", "Dropped"), "Dropped").await;

    // A token of another user is no refresh.
    kept.emit("refresh", json!([{"token": user_token("u-other", "Other", &json!({}))}])).await;
    assert_eq!(refused(&mut kept).await, "Not allowed: the new sign-in token is not for the same user.");
    kept.emit("refresh", json!([{"token": user_token("u-kept", "Kept", &json!({}))}])).await;
    let signed = kept.wait_for("notice", |n| n["kind"] == "signed_in", |_, _| {}).await;
    assert!(signed["expires"].as_u64().is_some_and(|exp| exp > now() + 500), "{signed}");

    assert_eq!(refused(&mut dropped).await, "Not allowed: the sign-in token has expired.");
    dropped.until_disconnected().await;
    say(&mut kept, "lobby", "still here").await;
    chat_line(&mut kept, "still here").await;
}

#[tokio::test]
async fn a_private_room_reaches_only_its_members_on_either_node() {
    let redis = RedisServer::start().await;
    let (node1, node2) = two_nodes(&redis, "open").await;
    let ops = json!({"rooms": ["private-ops"]});
    let mut ada = signed_in(&node1.url(), &user_token("u-ada", "Ada", &ops), "Ada").await;
    let mut bob = signed_in(&node2.url(), &user_token("u-bob", "Bob", &ops), "Bob").await;
    let mut eve = signed_in(&node2.url(), &user_token("u-eve", "Eve", &json!({})), "Eve").await;
    let mut anon = Client::connect_with_auth(&node1.url(), Transport::WebSocket, json!({"v": 2})).await;
    join(&mut anon, "lobby").await;
    let mut legacy = Client::named(&node1.url(), "legacy").await;

    assert_eq!(join(&mut ada, "private-ops").await["users"], json!(["Ada"]));
    assert_eq!(join(&mut bob, "private-ops").await["users"], json!(["Ada", "Bob"]));
    for outsider in [&mut eve, &mut anon] {
        outsider.emit("join", json!([{"room": "private-ops"}])).await;
        assert_eq!(refused(outsider).await, "You may not join the room private-ops.");
        outsider.emit("history", json!([{"room": "private-ops", "before": "9999999999999-0", "limit": 10}])).await;
        assert_eq!(refused(outsider).await, "You are not in the room private-ops. Join it first.");
    }
    // Its name is listed to its members only.
    let listed = |rooms: &Value| rooms["rooms"].to_string().contains("private-ops");
    eve.emit("rooms", json!([{}])).await;
    assert!(!listed(&eve.wait_for("rooms", |_| true, |_, _| {}).await));
    bob.emit("rooms", json!([{}])).await;
    assert!(listed(&bob.wait_for("rooms", |_| true, |_, _| {}).await));

    say(&mut ada, "private-ops", "the launch code is 0000").await;
    chat_line(&mut bob, "the launch code is 0000").await;
    say(&mut ada, "lobby", "and hello lobby").await;
    let mut seen_by_outsiders = String::new();
    for outsider in [&mut eve, &mut anon] {
        let seen = outsider
            .wait_for(
                "line",
                |l| l["text"] == "and hello lobby",
                |event, arg| {
                    seen_by_outsiders.push_str(&format!("{event} {arg}\n"));
                },
            )
            .await;
        assert_eq!(seen["room"], "lobby");
    }
    let mut lobby = Vec::new();
    loop {
        let got = legacy.next_message().await;
        if got == "Ada: and hello lobby" {
            break;
        }
        lobby.push(got);
    }
    seen_by_outsiders += &format!("{:?}{:?}{lobby:?}", eve.events_within(QUIET).await, anon.events_within(QUIET).await);
    assert!(!seen_by_outsiders.contains("launch code"), "{seen_by_outsiders}");
    assert!(!seen_by_outsiders.contains("private-ops"), "{seen_by_outsiders}");
}

#[tokio::test]
async fn a_token_with_the_admin_claim_opens_the_admin_api() {
    let redis = RedisServer::start().await;
    let (node1, _node2) = two_nodes(&redis, "open").await;
    let url = node1.url();
    let bearer = |token: &str| format!("Bearer {token}");
    let admin = bearer(&user_token("op", "Op", &json!({"admin": true})));
    let user = bearer(&user_token("u", "U", &json!({})));
    assert_eq!(http_request(host_of(&url), "GET", "/admin/bans", &[("Authorization", &admin)]).await.0, 200);
    assert_eq!(http_request(host_of(&url), "GET", "/admin/bans", &[("Authorization", &user)]).await.0, 403);
}

#[tokio::test]
async fn an_operator_adds_a_user_to_a_private_room_and_takes_them_off_on_every_node() {
    let redis = RedisServer::start().await;
    let (node1, node2) = two_nodes(&redis, "open").await;
    let admin = |method: &'static str, path: &'static str| {
        let url = node1.url();
        async move {
            let bearer = format!("Bearer {ADMIN_TOKEN}");
            http_request(host_of(&url), method, path, &[("Authorization", &bearer)]).await
        }
    };
    let mut ada = signed_in(&node1.url(), &user_token("u-ada", "Ada", &json!({"rooms": ["private-ops"]})), "Ada").await;
    let mut eve = signed_in(&node2.url(), &user_token("u-eve", "Eve", &json!({})), "Eve").await;
    join(&mut ada, "private-ops").await;
    eve.emit("join", json!([{"room": "private-ops"}])).await;
    assert_eq!(refused(&mut eve).await, "You may not join the room private-ops.");

    assert_eq!(admin("POST", "/admin/rooms/lobby/members/u-eve").await.0, 422, "only private rooms have members");
    assert_eq!(admin("POST", "/admin/rooms/private-ops/members/u-eve").await.0, 200);
    let (_, _, listed) = admin("GET", "/admin/members").await;
    assert!(listed.contains(r#"{"room":"private-ops","sub":"u-eve"}"#), "{listed}");
    // Every node reads the members again on the operator's order, within moments.
    let mut presence = Value::Null;
    for _ in 0..25 {
        eve.emit("join", json!([{"room": "private-ops"}])).await;
        let (event, arg) = eve.next_any().await;
        if event == "notice" && arg["kind"] == "refused" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        presence = eve.wait_for("presence", |p| p["room"] == "private-ops", |_, _| {}).await;
        break;
    }
    assert_eq!(presence["users"], json!(["Ada", "Eve"]));
    say(&mut ada, "private-ops", "welcome, Eve").await;
    chat_line(&mut eve, "welcome, Eve").await;

    assert_eq!(admin("DELETE", "/admin/rooms/private-ops/members/u-eve").await.0, 200);
    eve.wait_for("notice", |n| n["kind"] == "room_left" && n["room"] == "private-ops", |_, _| {}).await;
    let left = ada.wait_for("line", |l| l["kind"] == "left", |_, _| {}).await;
    assert_eq!((left["room"].as_str(), left["author"].as_str()), (Some("private-ops"), Some("Eve")));
    say(&mut ada, "private-ops", "Eve is gone").await;
    chat_line(&mut ada, "Eve is gone").await;
    let seen = format!("{:?}", eve.events_within(QUIET).await);
    assert!(!seen.contains("Eve is gone"), "{seen}");
    eve.emit("join", json!([{"room": "private-ops"}])).await;
    assert_eq!(refused(&mut eve).await, "You may not join the room private-ops.");
    assert_eq!(admin("DELETE", "/admin/rooms/private-ops/members/u-eve").await.0, 404);
}

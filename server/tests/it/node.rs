//! The node as a whole: the page and its assets on the Socket.IO port, configuration
//! errors, and a clean stop on SIGTERM.

use crate::support::{http_get, http_get_with, spawn_app, spawn_app_with, workspace_root};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::Command;

/// A plain HTTP/1.1 GET; returns the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get(&addr.to_string(), path).await
}

#[tokio::test]
async fn the_page_is_server_rendered_on_the_socket_port() {
    let app = spawn_app().await;
    let (status, body) = get(app.addr, "/").await;
    assert_eq!(status, 200);
    for expected in
        ["<title>Online Chatroom</title>", "Online Chatroom</h1>", "Set as Username", "Send", "/pkg/chatroom"]
    {
        assert!(body.contains(expected), "the page lacks {expected:?}:\n{body}");
    }
    let (status, _) = get(app.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 200, "Socket.IO answers on the same port");
}

#[tokio::test]
async fn the_built_assets_are_served() {
    let site = workspace_root().join("target/site");
    assert!(
        site.join("pkg/chatroom.wasm").exists(),
        "{} has no build: run `cargo leptos build --release` first (scripts/test.sh does)",
        site.display()
    );
    let app = spawn_app().await;
    for path in ["/pkg/chatroom.wasm", "/pkg/chatroom.js", "/pkg/chatroom.css", "/favicon.svg"] {
        assert_eq!(get(app.addr, path).await.0, 200, "{path}");
    }
    assert_eq!(get(app.addr, "/no-such-file").await.0, 404);
}

#[tokio::test]
async fn a_bad_setting_stops_the_binary_with_a_clear_message() {
    for (args, expected) in [
        (&["--max-message-chars", "0"][..], "invalid value '0' for '--max-message-chars"),
        (&["--addr", "nowhere"], "invalid value 'nowhere' for '--addr"),
        (&["--max-message-chars", "30000", "--max-payload-bytes", "100000"], "must hold a message"),
        (&["--max-message-chars", "90000"], "90000 is not in 1..=40000"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_server")).args(args).output().await.expect("run server");
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn the_binary_stops_cleanly_on_sigterm() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let addr = probe.local_addr().expect("address");
    drop(probe);
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", &addr.to_string()])
        .current_dir(workspace_root())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start server");
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the server did not listen on {addr}");
    assert_eq!(get(addr, "/").await.0, 200);
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert!(killed.success());
    let status =
        tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("stops in time").expect("wait");
    assert!(status.success(), "exit status {status}");
}

const WS_UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// The status of a WebSocket handshake (and of a polling one) sent with `origin`.
async fn handshakes_from(addr: std::net::SocketAddr, origin: Option<&str>) -> (u16, u16) {
    let mut headers: Vec<(&str, &str)> = WS_UPGRADE.to_vec();
    headers.extend(origin.map(|origin| ("Origin", origin)));
    let ws = http_get_with(&addr.to_string(), "/socket.io/?EIO=4&transport=websocket", &headers).await.0;
    let polling_headers: Vec<(&str, &str)> = origin.map(|origin| ("Origin", origin)).into_iter().collect();
    let polling = http_get_with(&addr.to_string(), "/socket.io/?EIO=4&transport=polling", &polling_headers).await.0;
    (ws, polling)
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_allowed_ones_get_cors() {
    let app = spawn_app().await;
    let own = format!("http://{}", app.addr);
    assert_eq!(handshakes_from(app.addr, Some(&own)).await, (101, 200), "same origin");
    assert_eq!(handshakes_from(app.addr, None).await, (101, 200), "no origin: not a browser");
    assert_eq!(handshakes_from(app.addr, Some("https://evil.example")).await, (403, 403));
    // Loopback is a loopback host, not a name that starts like one.
    assert_eq!(handshakes_from(app.addr, Some("http://127.evil.example")).await, (403, 403));
    assert_eq!(handshakes_from(app.addr, Some("http://127.0.0.2:3000")).await, (101, 200));
    let (status, _, _) = http_get_with(&app.addr.to_string(), "/", &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403, "the page too");

    let app = spawn_app_with(|s| s.listen.allowed_origins = vec!["https://app.example".parse().unwrap()]).await;
    assert_eq!(handshakes_from(app.addr, Some("https://app.example")).await, (101, 200));
    assert_eq!(handshakes_from(app.addr, Some("http://localhost:3000")).await, (403, 403), "a list replaces loopback");
    let (_, head, _) = http_get_with(
        &app.addr.to_string(),
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", "https://app.example")],
    )
    .await;
    assert!(head.contains("access-control-allow-origin: https://app.example"), "{head}");
}

#[tokio::test]
async fn the_page_has_a_content_security_policy_with_a_fresh_script_nonce() {
    let app = spawn_app().await;
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let (status, head, body) = http_get_with(&app.addr.to_string(), "/", &[]).await;
        assert_eq!(status, 200);
        let csp = head.lines().find_map(|l| l.strip_prefix("content-security-policy: ")).expect("a CSP header");
        assert!(csp.contains("'wasm-unsafe-eval'") && !csp.contains("unsafe-inline"), "{csp}");
        let nonce = csp.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).expect("a nonce");
        // Leptos's hydration script carries it (the header is lower-cased here, the page is not).
        assert!(body.to_ascii_lowercase().contains(&format!("nonce=\"{nonce}\"")), "script without the nonce");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        nonces.push(nonce.to_owned());
    }
    assert_ne!(nonces[0], nonces[1], "a nonce is used once");
}

//! The browser's link to the server: a WebSocket carrying Engine.IO/Socket.IO frames,
//! reopened with backoff whenever it drops. Framing, heartbeats and the link's state are
//! in [`crate::protocol::codec`] and [`crate::protocol::session`]; this module only moves
//! frames between them and the browser's socket.

use crate::protocol::codec::encode_event;
use crate::protocol::session::{Backoff, ClientSession, ConnState, Step};
use crate::protocol::{ClientAuth, ClientEvent, ClientKey, Notice, Refresh, ServerEvent};
use futures::channel::mpsc::UnboundedReceiver;
use futures::future::{Fuse, LocalBoxFuture};
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt, select};
use gloo_net::websocket::{Message, futures::WebSocket};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::JsCast;

/// The Socket.IO endpoint of the server that served this page.
pub fn socket_url() -> String {
    let location = web_sys::window().map(|w| w.location());
    let protocol = location.as_ref().and_then(|l| l.protocol().ok()).unwrap_or_default();
    let host = location.as_ref().and_then(|l| l.host().ok()).unwrap_or_default();
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{host}/socket.io/?EIO=4&transport=websocket")
}

/// The path of the page's address (`/`, `/r/ops`).
pub fn current_path() -> Option<String> {
    web_sys::window()?.location().pathname().ok()
}

/// Shows `path` in the address bar as a new history entry, unless it is there already.
pub fn show_path(path: &str) {
    if current_path().as_deref() == Some(path) {
        return;
    }
    if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(path));
    }
}

/// Calls `changed` with the new path whenever the person goes back or forward.
pub fn on_path_change(changed: impl Fn(String) + 'static) {
    let handle = leptos::prelude::window_event_listener(leptos::ev::popstate, move |_| {
        if let Some(path) = current_path() {
            changed(path);
        }
    });
    // For the life of the page.
    std::mem::forget(handle);
}

/// Calls `tick` every `period` for the life of the page.
pub fn every(period: std::time::Duration, tick: impl Fn() + 'static) {
    let _ = leptos::prelude::set_interval_with_handle(tick, period);
}

/// Where the client key is kept in the browser's local storage.
const KEY_STORAGE: &str = "chatroom.key";

/// This browser's client key, kept in local storage so that its tabs and reloads are one
/// user; a new random one when there is none (with storage off, it lasts for this page).
pub fn client_key() -> ClientKey {
    let window = web_sys::window();
    let storage = window.as_ref().and_then(|w| w.local_storage().ok().flatten());
    if let Some(key) = storage.as_ref().and_then(|s| s.get_item(KEY_STORAGE).ok().flatten())
        && let Ok(key) = key.parse()
    {
        return key;
    }
    let mut bytes = [0u8; 16];
    let random = window.and_then(|w| w.crypto().ok()).and_then(|c| c.get_random_values_with_u8_array(&mut bytes).ok());
    if random.is_none() {
        // No Web Crypto: the key only needs to differ from other browsers' keys.
        #[expect(clippy::cast_possible_truncation, reason = "a number in [0, 256) to a byte")]
        let random_byte = || (js_sys::Math::random() * 256.0) as u8;
        for byte in &mut bytes {
            *byte = random_byte();
        }
    }
    let key = ClientKey::from_random(bytes);
    if let Some(storage) = storage {
        let _ = storage.set_item(KEY_STORAGE, key.as_str());
    }
    key
}

/// Where the node says the page fetches its connection token (its `<meta>` tag), if it does.
pub fn token_url() -> Option<String> {
    let selector = format!("meta[name=\"{}\"]", crate::TOKEN_URL_META);
    web_sys::window()?.document()?.query_selector(&selector).ok()??.get_attribute("content")
}

/// Fetches a connection token from `url` with the browser's cookies: the application's
/// backend answers `{"token": "…"}` for a signed-in person.
async fn fetch_token(url: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: String,
    }
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_credentials(web_sys::RequestCredentials::Include);
    let failed = |err: wasm_bindgen::JsValue| format!("{err:?}");
    let response =
        wasm_bindgen_futures::JsFuture::from(window.fetch_with_str_and_init(url, &init)).await.map_err(failed)?;
    let response: web_sys::Response = response.dyn_into().map_err(failed)?;
    if !response.ok() {
        return Err(format!("HTTP {}", response.status()));
    }
    let text = wasm_bindgen_futures::JsFuture::from(response.text().map_err(failed)?).await.map_err(failed)?;
    let answer: Answer = serde_json::from_str(&text.as_string().unwrap_or_default()).map_err(|err| err.to_string())?;
    Ok(answer.token)
}

/// How long before its expiry a token is refreshed: a quarter of its life left, but at
/// most a minute before, and no sooner than in a second.
fn refresh_delay_ms(expires_secs: u64, now_ms: f64) -> u64 {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a positive time in ms")]
    let now_ms = now_ms.max(0.0) as u64;
    let left = expires_secs.saturating_mul(1_000).saturating_sub(now_ms);
    (left - (left / 4).min(60_000)).max(1_000)
}

/// Runs the connection in the background for the life of the page.
/// `auth` is asked anew for each connection, so that it presents the latest position;
/// with a `token_url`, a fresh token is fetched for each connection and before it expires.
pub fn spawn(
    url: String,
    token_url: Option<String>,
    auth: impl Fn() -> ClientAuth + 'static,
    outbox: UnboundedReceiver<ClientEvent>,
    on_state: impl Fn(ConnState) + 'static,
    on_event: impl Fn(ServerEvent) + 'static,
) {
    wasm_bindgen_futures::spawn_local(run(url, token_url, auth, outbox, on_state, on_event));
}

async fn run(
    url: String,
    token_url: Option<String>,
    auth: impl Fn() -> ClientAuth,
    mut outbox: UnboundedReceiver<ClientEvent>,
    on_state: impl Fn(ConnState),
    on_event: impl Fn(ServerEvent),
) {
    let mut backoff = Backoff::default();
    let mut was_online = false;
    loop {
        on_state(if was_online { ConnState::Reconnecting } else { ConnState::Connecting });
        let mut auth = auth();
        if let Some(token_url) = &token_url {
            // Without one the node says why it may not connect (or lets the person read).
            auth.token = fetch_token(token_url)
                .await
                .map_err(|err| web_sys::console::warn_1(&format!("no sign-in token: {err}").into()))
                .ok();
        }
        let auth = serde_json::to_value(auth).unwrap_or_default();
        let link = Link { url: &url, token_url: token_url.as_deref() };
        let outcome = connect_once(link, auth, &mut outbox, &on_state, &on_event).await;
        if outcome.reached_online {
            was_online = true;
            backoff.reset();
        }
        match outcome.end {
            End::PageGone => return,
            End::Dropped(reason) => web_sys::console::warn_1(&format!("chat connection lost: {reason}").into()),
        }
        if was_online {
            on_state(ConnState::Reconnecting);
        }
        // Events typed while offline are not kept: the page only sends when online.
        while outbox.try_recv().is_ok() {}
        sleep_ms(backoff.next_delay_ms(js_sys::Math::random())).await;
    }
}

enum End {
    /// The page dropped its sender: stop for good.
    PageGone,
    /// The link failed or was closed: try again.
    Dropped(String),
}

struct Outcome {
    reached_online: bool,
    end: End,
}

/// Where a connection goes, and where its tokens come from.
#[derive(Clone, Copy)]
struct Link<'a> {
    url: &'a str,
    token_url: Option<&'a str>,
}

async fn connect_once(
    link: Link<'_>,
    auth: serde_json::Value,
    outbox: &mut UnboundedReceiver<ClientEvent>,
    on_state: &impl Fn(ConnState),
    on_event: &impl Fn(ServerEvent),
) -> Outcome {
    let mut session = ClientSession::with_auth(auth);
    let end = match WebSocket::open(link.url) {
        Err(err) => End::Dropped(err.to_string()),
        Ok(socket) => pump(socket, link.token_url, &mut session, outbox, on_state, on_event).await,
    };
    Outcome { reached_online: session.is_online(), end }
}

/// Moves frames both ways until the link ends, then closes the socket.
async fn pump(
    socket: WebSocket,
    token_url: Option<&str>,
    session: &mut ClientSession,
    outbox: &mut UnboundedReceiver<ClientEvent>,
    on_state: &impl Fn(ConnState),
    on_event: &impl Fn(ServerEvent),
) -> End {
    let (mut sink, mut stream) = socket.split();
    let end = pump_frames(&mut sink, &mut stream, token_url, session, outbox, on_state, on_event).await;
    // Dropping a gloo WebSocket leaves the browser's socket open: close it.
    if let Ok(socket) = sink.reunite(stream) {
        let _ = socket.close(None, None);
    }
    end
}

async fn pump_frames(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    token_url: Option<&str>,
    session: &mut ClientSession,
    outbox: &mut UnboundedReceiver<ClientEvent>,
    on_state: &impl Fn(ConnState),
    on_event: &impl Fn(ServerEvent),
) -> End {
    let mut silence = sleep_ms(session.heartbeat_deadline_ms()).fuse();
    // The next refresh of the connection's token, and the fetch of it under way.
    let mut refresh_due = Fuse::<TimeoutFuture>::terminated();
    let mut fetching: Fuse<LocalBoxFuture<'_, Result<String, String>>> = Fuse::terminated();
    loop {
        select! {
            frame = stream.next().fuse() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Bytes(_))) => continue,
                    Some(Err(err)) => return End::Dropped(err.to_string()),
                    None => return End::Dropped("the connection closed".into()),
                };
                let step = match session.on_frame(&text) {
                    Ok(step) => step,
                    Err(err) => return End::Dropped(format!("bad frame from server: {err}")),
                };
                // Any frame proves the link alive; the deadline follows the handshake's timings.
                silence = sleep_ms(session.heartbeat_deadline_ms()).fuse();
                match step {
                    Step::Idle => {}
                    Step::Reply(frame) => {
                        if let Err(err) = sink.send(Message::Text(frame)).await {
                            return End::Dropped(err.to_string());
                        }
                    }
                    Step::Online => on_state(ConnState::Online),
                    Step::Event(event) => {
                        if let (ServerEvent::Notice(Notice::SignedIn { expires, .. }), Some(_)) = (&event, token_url) {
                            refresh_due = sleep_ms(refresh_delay_ms(*expires, js_sys::Date::now())).fuse();
                        }
                        on_event(event);
                    }
                    Step::Closed(reason) => return End::Dropped(reason),
                }
            }
            () = refresh_due => {
                if let Some(token_url) = token_url {
                    fetching = fetch_token(token_url).boxed_local().fuse();
                }
            }
            token = fetching => match token {
                Ok(token) => {
                    let frame = match encode_event(&ClientEvent::Refresh(Refresh { token })) {
                        Ok(frame) => frame,
                        Err(err) => return End::Dropped(format!("cannot encode a refresh: {err}")),
                    };
                    if let Err(err) = sink.send(Message::Text(frame)).await {
                        return End::Dropped(err.to_string());
                    }
                }
                // Tried again shortly; if the token expires first, the node closes the
                // connection and the next one fetches a token anew.
                Err(err) => {
                    web_sys::console::warn_1(&format!("cannot refresh the sign-in token: {err}").into());
                    refresh_due = sleep_ms(10_000).fuse();
                }
            },
            event = outbox.next() => {
                let Some(event) = event else { return End::PageGone };
                let frame = match encode_event(&event) {
                    Ok(frame) => frame,
                    Err(err) => return End::Dropped(format!("cannot encode {}: {err}", event.name())),
                };
                if let Err(err) = sink.send(Message::Text(frame)).await {
                    return End::Dropped(err.to_string());
                }
            }
            _ = silence => return End::Dropped("no heartbeat from the server".into()),
        }
    }
}

/// A browser timer of `ms` milliseconds (at most about 49 days, the timer's own limit).
fn sleep_ms(ms: u64) -> TimeoutFuture {
    TimeoutFuture::new(u32::try_from(ms).unwrap_or(u32::MAX))
}

/// Where the name the person chose last is kept in local storage.
const NAME_STORAGE: &str = "chatroom.name";

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// The name the person chose on an earlier visit, to offer again.
pub fn remembered_name() -> Option<String> {
    local_storage()?.get_item(NAME_STORAGE).ok().flatten().filter(|name| !name.is_empty())
}

/// Keeps `name` for the next visit.
pub fn remember_name(name: &str) {
    if let Some(storage) = local_storage() {
        let _ = storage.set_item(NAME_STORAGE, name);
    }
}

/// Whether the page is hidden now (another tab, a minimised window).
pub fn page_hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.visibility_state() == web_sys::VisibilityState::Hidden)
}

/// Calls `changed` with whether the page is hidden whenever that changes.
pub fn on_visibility_change(changed: impl Fn(bool) + 'static) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return };
    let closure = wasm_bindgen::closure::Closure::<dyn Fn()>::new(move || changed(page_hidden()));
    let _ = document
        .add_event_listener_with_callback("visibilitychange", wasm_bindgen::JsCast::unchecked_ref(closure.as_ref()));
    // For the life of the page.
    closure.forget();
}

/// Whether desktop notifications can be asked for here (and were not refused).
pub fn notifications_available() -> bool {
    let supported = js_sys::Reflect::has(&js_sys::global(), &"Notification".into()).unwrap_or(false);
    supported && web_sys::Notification::permission() != web_sys::NotificationPermission::Denied
}

/// Whether the person allowed desktop notifications.
pub fn notifications_allowed() -> bool {
    notifications_available() && web_sys::Notification::permission() == web_sys::NotificationPermission::Granted
}

/// Asks the person to allow desktop notifications; `answered` gets whether they did.
pub fn ask_for_notifications(answered: impl Fn(bool) + 'static) {
    let Ok(asked) = web_sys::Notification::request_permission() else { return };
    wasm_bindgen_futures::spawn_local(async move {
        let granted = wasm_bindgen_futures::JsFuture::from(asked)
            .await
            .ok()
            .and_then(|answer| answer.as_string())
            .is_some_and(|answer| answer == "granted");
        answered(granted);
    });
}

/// Shows a desktop notification, if they are allowed.
pub fn notify(title: &str, body: &str) {
    if !notifications_allowed() {
        return;
    }
    let options = web_sys::NotificationOptions::new();
    options.set_body(body);
    let _ = web_sys::Notification::new_with_options(title, &options);
}

//! The status page's moderation view for operators (`/status/moderate`): a room's recent
//! lines, each with a delete button, and who is in the room with kick, mute and ban.
//! Server-rendered forms, no script. The operator signs in with the admin token once; it
//! is kept in an `HttpOnly`, `SameSite=Strict` cookie scoped to this view, so another site
//! cannot post its forms. Each form calls the same [`Moderator`] actions as the API.

use crate::chat::ChatService;
use crate::configuration::AdminToken;
use crate::moderation::{ModerationError, Moderator};
use app::protocol::{Position, RoomEvent, RoomName, Username};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use leptos::prelude::*;
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The cookie holding the operator's token.
const COOKIE: &str = "chatroom_admin";
/// Where the view lives (and the cookie's path).
const PATH: &str = "/status/moderate";
/// How many of a room's newest events the view shows.
const SHOWN: usize = 50;

/// What the view's handlers share.
#[derive(Clone)]
struct View {
    moderator: Arc<Moderator>,
    chat: Arc<ChatService>,
    token: AdminToken,
}

/// `/status/moderate` and its forms.
pub fn routes(moderator: Arc<Moderator>, chat: Arc<ChatService>, token: AdminToken) -> Router {
    Router::new()
        .route(PATH, get(page))
        .route("/status/moderate/sign-in", post(sign_in))
        .route("/status/moderate/act", post(act))
        .with_state(View { moderator, chat, token })
}

impl View {
    /// Whether the request carries the token in its cookie.
    fn signed_in(&self, request: &Request) -> bool {
        request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|cookie| cookie.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
            .any(|presented| self.accepts(presented))
    }

    fn accepts(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.token.expose().as_bytes()))
    }
}

/// The view's query: the room shown, and the outcome of the last action.
#[derive(Debug, Deserialize)]
struct Shown {
    room: Option<String>,
    done: Option<String>,
}

async fn page(State(view): State<View>, Query(shown): Query<Shown>, request: Request) -> Response {
    if !view.signed_in(&request) {
        return Html(render_sign_in(None)).into_response();
    }
    let room = shown.room.as_deref().and_then(|raw| RoomName::parse(raw).ok()).unwrap_or_else(RoomName::lobby);
    let lines = match view.chat.bus(&room).newest(None, SHOWN).await {
        Ok(lines) => lines,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, format!("cannot read #{room}: {err}")).into_response(),
    };
    let lines = lines
        .into_iter()
        .filter_map(|d| match d.event {
            RoomEvent::Chat { author, text } => Some((d.position, author, text)),
            _ => None,
        })
        .collect();
    let online = view.chat.online(&room).await.map(|list| list.users).unwrap_or_default();
    Html(render(&room, lines, online, shown.done)).into_response()
}

/// The sign-in form's field.
#[derive(Debug, Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(view): State<View>, Form(form): Form<SignIn>) -> Response {
    if !view.accepts(&form.token) {
        tracing::warn!(target: "audit", "a moderation sign-in with a wrong token was refused");
        return (StatusCode::FORBIDDEN, Html(render_sign_in(Some("Wrong token.")))).into_response();
    }
    let cookie = format!("{COOKIE}={}; Path={PATH}; HttpOnly; SameSite=Strict", form.token);
    ([(header::SET_COOKIE, cookie)], Redirect::to(PATH)).into_response()
}

/// One of the view's forms.
#[derive(Debug, Deserialize)]
struct Act {
    action: String,
    room: String,
    pos: Option<String>,
    name: Option<String>,
    minutes: Option<u64>,
}

async fn act(State(view): State<View>, request: Request) -> Response {
    if !view.signed_in(&request) {
        return (StatusCode::FORBIDDEN, Html(render_sign_in(Some("Sign in first.")))).into_response();
    }
    let Ok(Form(form)) = Form::<Act>::from_request(request, &()).await else {
        return (StatusCode::BAD_REQUEST, "not one of the view's forms").into_response();
    };
    let room = RoomName::parse(&form.room).unwrap_or_else(|_| RoomName::lobby());
    let name = form.name.as_deref().and_then(|raw| Username::parse(raw).ok());
    let minutes = form.minutes.unwrap_or(10).clamp(1, 525_600);
    let moderator = &view.moderator;
    let outcome = match (form.action.as_str(), name) {
        ("delete", _) => match form.pos.as_deref().and_then(|pos| pos.parse::<Position>().ok()) {
            Some(position) => moderator.delete_line(&room, position).await,
            None => Err(ModerationError::NotALine(Position::default())),
        },
        ("kick", Some(name)) => moderator.kick(&name).await,
        ("mute", Some(name)) => moderator.mute(&name, minutes).await,
        ("ban", Some(name)) => moderator.ban(&name, minutes).await,
        _ => return (StatusCode::BAD_REQUEST, "not one of the view's forms").into_response(),
    };
    let done = match outcome {
        Ok(done) => format!("{} {}: {}", done.action, done.subject, done.outcome),
        Err(err) => format!("failed: {err}"),
    };
    let query = serde_urlencoded::to_string([("room", room.as_str()), ("done", done.as_str())]).unwrap_or_default();
    Redirect::to(&format!("{PATH}?{query}")).into_response()
}

/// The sign-in page, with why the last try failed.
fn render_sign_in(why: Option<&str>) -> String {
    let why = why.map(|why| view! { <p class="error" role="alert">{why.to_owned()}</p> });
    document(
        "Moderation · sign in",
        view! {
            <main>
                <h1>"Moderation"</h1>
                {why}
                <form method="post" action="/status/moderate/sign-in">
                    <label for="token">"Admin token"</label>
                    <input type="password" id="token" name="token" autocomplete="current-password" required />
                    <button type="submit">"Sign in"</button>
                </form>
            </main>
        }
        .to_html(),
    )
}

/// The view of `room`: its newest chat lines (newest first) and who is in it.
fn render(
    room: &RoomName,
    lines: Vec<(Position, String, String)>,
    online: Vec<String>,
    done: Option<String>,
) -> String {
    let room_name = room.to_string();
    let lines = lines
        .into_iter()
        .map(|(position, author, text)| {
            let room = room_name.clone();
            view! {
                <tr>
                    <td>
                        <time datetime=app::text::iso_time(position.ms)>{app::text::iso_time(position.ms)}</time>
                    </td>
                    <th scope="row">{author}</th>
                    <td class="text">{text}</td>
                    <td>
                        <form method="post" action="/status/moderate/act">
                            <input type="hidden" name="action" value="delete" />
                            <input type="hidden" name="room" value=room />
                            <input type="hidden" name="pos" value=position.to_string() />
                            <button type="submit">"Delete"</button>
                        </form>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let people = online
        .into_iter()
        .map(|name| {
            let forms = ["kick", "mute", "ban"].map(|action| {
                let (room, name) = (room_name.clone(), name.clone());
                let label = format!("{action} {name}");
                view! {
                    <form method="post" action="/status/moderate/act" class="inline">
                        <input type="hidden" name="action" value=action />
                        <input type="hidden" name="room" value=room />
                        <input type="hidden" name="name" value=name />
                        {(action != "kick")
                            .then(|| {
                                view! {
                                    <input
                                        type="number"
                                        name="minutes"
                                        value="10"
                                        min="1"
                                        aria-label=format!("minutes to {label}")
                                    />
                                }
                            })}
                        <button type="submit" aria-label=label.clone()>{action}</button>
                    </form>
                }
            });
            view! {
                <tr>
                    <th scope="row">{name.clone()}</th>
                    <td>{forms.into_iter().collect_view()}</td>
                </tr>
            }
        })
        .collect_view();
    let done = done.map(|done| view! { <p id="done" role="status">{done}</p> });
    document(
        &format!("Moderation · #{room}"),
        view! {
            <header>
                <h1>{format!("Moderation · #{room}")}</h1>
                <p><a href="/status">"Status"</a></p>
            </header>
            <main>
                {done}
                <form method="get" action="/status/moderate">
                    <label for="room">"Room"</label>
                    <input type="text" id="room" name="room" value=room_name.clone() />
                    <button type="submit">"Show"</button>
                </form>
                <section aria-labelledby="lines-title">
                    <h2 id="lines-title">"Newest lines"</h2>
                    <table id="lines">
                        <tbody>{lines}</tbody>
                    </table>
                </section>
                <section aria-labelledby="people-title">
                    <h2 id="people-title">"In the room"</h2>
                    <table id="people">
                        <tbody>{people}</tbody>
                    </table>
                </section>
            </main>
        }
        .to_html(),
    )
}

/// A whole page around `body`, with the status page's style sheet.
fn document(title: &str, body: String) -> String {
    let head = view! {
        <head>
            <meta charset="utf-8" />
            <meta name="viewport" content="width=device-width, initial-scale=1" />
            <title>{title.to_owned()}</title>
            <link rel="stylesheet" href="/status.css" />
        </head>
    }
    .to_html();
    format!("<!DOCTYPE html><html lang=\"en\">{head}<body>{body}</body></html>")
}

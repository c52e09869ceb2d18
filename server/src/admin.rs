//! The operators' HTTP API (`docs/moderation.md`): thin handlers over [`Moderator`],
//! behind a bearer token (the admin token, compared in constant time, or a connection
//! token with the `admin` claim) and a rate limit. Served where the metrics are; without
//! an admin token configured it is not served at all (404).
//!
//! Also the gate that refuses new connections from a banned address before the
//! handshake (HTTP 403).

use crate::addresses::ClientAddr;
use crate::auth::{Gate, Subject};
use crate::configuration::AdminToken;
use crate::health::opens_connection;
use crate::moderation::{Done, ModerationError, Moderator};
use app::protocol::{Position, RoomName, Username};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::json;
use std::num::NonZeroU32;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Requests a second the API takes (in all), and at once.
const RATE: NonZeroU32 = NonZeroU32::new(20).expect("not zero");
const BURST: NonZeroU32 = NonZeroU32::new(40).expect("not zero");
/// The longest mute or ban, in minutes (a year).
const MAX_MINUTES: u64 = 525_600;
/// Audit entries one request reads at most.
const MAX_AUDIT: usize = 1_000;

/// What the handlers share.
#[derive(Clone)]
struct Admin {
    moderator: Arc<Moderator>,
    token: AdminToken,
    /// Checks connection tokens, whose `admin` claim also opens the API.
    gate: Arc<Gate>,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// The API under `/admin/`, answering only requests with `token` or an admin's
/// connection token that `gate` verifies.
pub fn routes(moderator: Arc<Moderator>, token: AdminToken, gate: Arc<Gate>) -> Router {
    let limiter = Arc::new(RateLimiter::direct(Quota::per_second(RATE).allow_burst(BURST)));
    let admin = Admin { moderator, token, gate, limiter };
    Router::new()
        .route("/admin/lines/{pos}/delete", post(delete_line))
        .route("/admin/users/{name}/kick", post(kick))
        .route("/admin/users/{name}/mute", post(mute))
        .route("/admin/users/{name}/ban", post(ban))
        .route("/admin/users/{name}/lines", delete(forget))
        .route("/admin/bans", get(bans))
        .route("/admin/bans/{name}", delete(unban))
        .route("/admin/audit", get(audit))
        .route("/admin/rooms/{room}/members/{sub}", post(add_member).delete(remove_member))
        .route("/admin/members", get(members))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

/// 401 without a bearer token, 403 with a wrong one, 429 past the rate; else the handler.
async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    if admin.limiter.check().is_err() {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many admin requests; wait a moment");
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        None => error(StatusCode::UNAUTHORIZED, "an Authorization: Bearer token is required"),
        Some(token) if bool::from(token.as_bytes().ct_eq(admin.token.expose().as_bytes())) => next.run(request).await,
        Some(token) if admin.gate.is_admin(token) => next.run(request).await,
        Some(_) => {
            tracing::warn!(target: "audit", "an admin request with a wrong token was refused");
            error(StatusCode::FORBIDDEN, "wrong token")
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn answer(result: Result<Done, ModerationError>) -> Response {
    match result {
        Ok(done) => Json(done).into_response(),
        Err(err) => failure(&err),
    }
}

fn failure(err: &ModerationError) -> Response {
    let status = match err {
        ModerationError::NoSuchUser(_) | ModerationError::NoSuchLine { .. } | ModerationError::NotAMember { .. } => {
            StatusCode::NOT_FOUND
        }
        ModerationError::NotALine(_) | ModerationError::NotPrivate(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ModerationError::Backend(_) => {
            tracing::error!(%err, "an admin action failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    error(status, &err.to_string())
}

/// The `room` query parameter (the lobby by default).
#[derive(Debug, Deserialize)]
struct InRoom {
    room: Option<String>,
}

/// The `minutes` query parameter.
#[derive(Debug, Deserialize)]
struct ForMinutes {
    minutes: Option<u64>,
}

/// The `limit` query parameter.
#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// An argument that is not valid: answered with 400 and why.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

fn room_of(query: InRoom) -> Result<RoomName, BadRequest> {
    query.room.map_or_else(|| Ok(RoomName::lobby()), |raw| RoomName::parse(&raw).map_err(|r| BadRequest(r.to_string())))
}

fn name_of(raw: &str) -> Result<Username, BadRequest> {
    Username::parse(raw).map_err(|refusal| BadRequest(refusal.to_string()))
}

fn minutes_of(query: ForMinutes) -> Result<u64, BadRequest> {
    match query.minutes {
        Some(minutes) if (1..=MAX_MINUTES).contains(&minutes) => Ok(minutes),
        _ => Err(BadRequest("minutes=N is required, 1 to 525600".into())),
    }
}

async fn delete_line(State(admin): State<Admin>, Path(pos): Path<String>, Query(query): Query<InRoom>) -> Response {
    let room = match room_of(query) {
        Ok(room) => room,
        Err(bad) => return bad.into_response(),
    };
    let Ok(position) = pos.parse::<Position>() else {
        return error(StatusCode::BAD_REQUEST, "not a position (MILLIS-SEQ)");
    };
    answer(admin.moderator.delete_line(&room, position).await)
}

async fn kick(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    match name_of(&name) {
        Ok(name) => answer(admin.moderator.kick(&name).await),
        Err(bad) => bad.into_response(),
    }
}

async fn mute(State(admin): State<Admin>, Path(name): Path<String>, Query(query): Query<ForMinutes>) -> Response {
    match (name_of(&name), minutes_of(query)) {
        (Ok(name), Ok(minutes)) => answer(admin.moderator.mute(&name, minutes).await),
        (Err(bad), _) | (_, Err(bad)) => bad.into_response(),
    }
}

async fn ban(State(admin): State<Admin>, Path(name): Path<String>, Query(query): Query<ForMinutes>) -> Response {
    match (name_of(&name), minutes_of(query)) {
        (Ok(name), Ok(minutes)) => answer(admin.moderator.ban(&name, minutes).await),
        (Err(bad), _) | (_, Err(bad)) => bad.into_response(),
    }
}

async fn forget(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    match name_of(&name) {
        Ok(name) => answer(admin.moderator.forget(&name).await),
        Err(bad) => bad.into_response(),
    }
}

async fn unban(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    answer(admin.moderator.unban(&name).await)
}

async fn bans(State(admin): State<Admin>) -> Response {
    match admin.moderator.sanctions().await {
        Ok(sanctions) => Json(json!({ "sanctions": sanctions })).into_response(),
        Err(err) => failure(&err),
    }
}

/// A room and a user (its token's `sub`) from the path.
fn member_of(room: &str, sub: &str) -> Result<(RoomName, Subject), BadRequest> {
    let sub = Subject::parse(sub).map_err(|_| BadRequest("a user is its token's sub: 1 to 128 characters".into()))?;
    Ok((RoomName::parse(room).map_err(|refusal| BadRequest(refusal.to_string()))?, sub))
}

async fn add_member(State(admin): State<Admin>, Path((room, sub)): Path<(String, String)>) -> Response {
    match member_of(&room, &sub) {
        Ok((room, sub)) => answer(admin.moderator.add_member(&room, &sub).await),
        Err(bad) => bad.into_response(),
    }
}

async fn remove_member(State(admin): State<Admin>, Path((room, sub)): Path<(String, String)>) -> Response {
    match member_of(&room, &sub) {
        Ok((room, sub)) => answer(admin.moderator.remove_member(&room, &sub).await),
        Err(bad) => bad.into_response(),
    }
}

async fn members(State(admin): State<Admin>) -> Response {
    match admin.moderator.members().await {
        Ok(members) => {
            let members: Vec<_> = members.iter().map(|(room, sub)| json!({ "room": room, "sub": sub })).collect();
            Json(json!({ "members": members })).into_response()
        }
        Err(err) => failure(&err),
    }
}

async fn audit(State(admin): State<Admin>, Query(query): Query<Limit>) -> Response {
    let max = query.limit.unwrap_or(100).clamp(1, MAX_AUDIT);
    match admin.moderator.store().audit(max).await {
        Ok(entries) => Json(json!({ "audit": entries })).into_response(),
        Err(err) => failure(&err.into()),
    }
}

/// Refuses a new Socket.IO connection from a banned address with 403 before the
/// handshake; everything else passes.
pub async fn refuse_banned(State(moderator): State<Arc<Moderator>>, request: Request, next: Next) -> Response {
    if opens_connection(&request)
        && let Some(addr) = ClientAddr::of(request.extensions())
        && let Some(refusal) = moderator.refuses_address(addr)
    {
        return error(StatusCode::FORBIDDEN, &refusal.to_string());
    }
    next.run(request).await
}

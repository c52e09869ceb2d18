//! The status page for operators: this node and every node alive in the cluster (its
//! address, last beat, connections by transport, draining or not, delivery lag), the
//! users online, and each room's stream (length, oldest kept position). `/status` is a
//! server-rendered page that reloads itself every few seconds (no wasm, no script);
//! `/status.json` is the same data. Served where `/metrics` is.
//!
//! Each node publishes its own status every [`PUBLISH_EVERY`]; a node reads the others'
//! from the backend, so every node's page shows the whole cluster.

use crate::backend::{BackendError, ClusterStatus, NodeStatus};
use crate::chat::ChatService;
use crate::health::Health;
use crate::metrics::{ClientLabels, Metrics};
use crate::realtime::Realtime;
use app::protocol::{Position, RoomName};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use leptos::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How often a node publishes its status.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How often the page reloads itself, in seconds.
const REFRESH_SECS: u32 = 5;
/// The most rooms the page lists (the busiest first).
const MAX_ROOMS_SHOWN: usize = 50;

/// The status page's style sheet, served beside it (the page's CSP allows no inline style).
const STATUS_CSS: &str = include_str!("../../style/status.css");

/// What the status page shows, as `/status.json` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The node that answered.
    pub node: String,
    /// When it answered (ms since the Unix epoch).
    pub at_ms: u64,
    /// Every node alive, by name (with this one even when the backend does not answer).
    pub nodes: Vec<NodeStatus>,
    /// Users online with a name, across the cluster.
    pub users_online: u64,
    /// The rooms in use, the busiest first.
    pub rooms: Vec<RoomStatus>,
    /// What could not be read, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A room as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomStatus {
    /// The room.
    pub room: RoomName,
    /// Users in it.
    pub online: usize,
    /// Events its stream keeps.
    pub length: u64,
    /// The oldest of them.
    pub oldest: Option<Position>,
}

/// What a node knows to tell about itself and the cluster.
#[derive(Clone)]
pub struct StatusBoard {
    node: String,
    address: String,
    chat: Arc<ChatService>,
    health: Health,
    metrics: Arc<Metrics>,
    realtime: Realtime,
}

impl StatusBoard {
    /// The board of the node `node`, listening at `address`.
    pub fn new(
        node: &str,
        address: String,
        chat: Arc<ChatService>,
        health: Health,
        metrics: Arc<Metrics>,
        realtime: Realtime,
    ) -> Self {
        Self { node: node.to_owned(), address, chat, health, metrics, realtime }
    }

    /// This node's status now.
    pub async fn this_node(&self) -> NodeStatus {
        let count = |transport: &'static str| {
            ["legacy", "chatroom"]
                .iter()
                .map(|protocol| self.metrics.clients.get_or_create(&ClientLabels { transport, protocol }).get())
                .map(|n| u64::try_from(n).unwrap_or(0))
                .sum()
        };
        let lag = self.realtime.delivery_lag().await.unwrap_or_default();
        let at_ms = crate::clock::now_ms();
        NodeStatus {
            node: self.node.clone(),
            address: self.address.clone(),
            at_ms,
            last_beat_ms: at_ms,
            websocket: count("websocket"),
            polling: count("polling"),
            draining: self.health.is_draining(),
            delivery_lag_ms: u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Publishes this node's status every [`PUBLISH_EVERY`] for the life of the node.
    pub async fn publish(self) {
        let mut ticks = tokio::time::interval(PUBLISH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let status = self.this_node().await;
            if let Err(err) = self.chat.publish_status(&status).await {
                tracing::debug!(%err, "cannot publish this node's status; retrying at the next tick");
            }
        }
    }

    /// The whole report: the cluster as the backend knows it, with this node as it is now.
    pub async fn report(&self) -> StatusReport {
        let this = self.this_node().await;
        let (cluster, rooms) = match self.read_cluster().await {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(%err, "the status page cannot read the cluster");
                let report = StatusReport {
                    node: self.node.clone(),
                    at_ms: this.at_ms,
                    nodes: vec![this],
                    users_online: 0,
                    rooms: Vec::new(),
                    error: Some(format!("the chat's backend cannot be read: {err}")),
                };
                return report;
            }
        };
        let mut nodes: Vec<NodeStatus> = cluster.nodes.into_iter().filter(|node| node.node != self.node).collect();
        nodes.push(this.clone());
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        StatusReport {
            node: self.node.clone(),
            at_ms: this.at_ms,
            nodes,
            users_online: cluster.users_online,
            rooms,
            error: None,
        }
    }

    async fn read_cluster(&self) -> Result<(ClusterStatus, Vec<RoomStatus>), BackendError> {
        let cluster = self.chat.cluster().await?;
        let mut rooms = Vec::new();
        for info in self.chat.rooms(MAX_ROOMS_SHOWN).await? {
            let stats = self.chat.bus(&info.room).stats().await?;
            rooms.push(RoomStatus { room: info.room, online: info.online, length: stats.length, oldest: stats.oldest });
        }
        Ok((cluster, rooms))
    }
}

/// `/status`, `/status.json` and the page's style sheet.
pub fn routes(board: StatusBoard) -> Router {
    Router::new()
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .route("/status.css", get(status_css))
        .with_state(board)
}

async fn status_json(State(board): State<StatusBoard>) -> Response {
    axum::Json(board.report().await).into_response()
}

async fn status_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STATUS_CSS).into_response()
}

async fn status_page(State(board): State<StatusBoard>) -> Response {
    let report = board.report().await;
    let status = if report.error.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Html(render(&report))).into_response()
}

/// The page, as HTML.
pub fn render(report: &StatusReport) -> String {
    let now = report.at_ms;
    let ago = move |ms: u64| {
        let secs = now.saturating_sub(ms) as f64 / 1000.0;
        format!("{secs:.1} s ago")
    };
    let nodes = report
        .nodes
        .iter()
        .map(|node| {
            let state = if node.draining { "draining" } else { "serving" };
            view! {
                <tr class:this=node.node == report.node>
                    <th scope="row">{node.node.clone()}</th>
                    <td>{node.address.clone()}</td>
                    <td>{ago(node.last_beat_ms)}</td>
                    <td class="num">{node.websocket}</td>
                    <td class="num">{node.polling}</td>
                    <td class=state>{state}</td>
                    <td class="num">{format!("{} ms", node.delivery_lag_ms)}</td>
                </tr>
            }
        })
        .collect_view();
    let rooms = report
        .rooms
        .iter()
        .map(|room| {
            view! {
                <tr>
                    <th scope="row">{format!("#{}", room.room)}</th>
                    <td class="num">{room.online}</td>
                    <td class="num">{room.length}</td>
                    <td>{room.oldest.map_or_else(|| "—".to_owned(), |oldest| oldest.to_string())}</td>
                </tr>
            }
        })
        .collect_view();
    let error = report.error.clone().map(|error| view! { <p class="error" role="alert">{error}</p> });
    let page = view! {
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta http-equiv="refresh" content=REFRESH_SECS.to_string() />
                <title>{format!("Status · {}", report.node)}</title>
                <link rel="stylesheet" href="/status.css" />
            </head>
            <body>
                <header>
                    <h1>"Chatroom status"</h1>
                    <p>
                        "Answered by " <strong id="this-node">{report.node.clone()}</strong>
                        {format!(" · refreshed every {REFRESH_SECS} s")}
                    </p>
                </header>
                <main>
                    {error}
                    <section aria-labelledby="nodes-title">
                        <h2 id="nodes-title">
                            "Nodes alive: " <span id="node-count">{report.nodes.len()}</span>
                        </h2>
                        <table id="nodes">
                            <thead>
                                <tr>
                                    <th scope="col">"Node"</th>
                                    <th scope="col">"Address"</th>
                                    <th scope="col">"Last beat"</th>
                                    <th scope="col">"WebSocket"</th>
                                    <th scope="col">"Polling"</th>
                                    <th scope="col">"State"</th>
                                    <th scope="col">"Delivery lag"</th>
                                </tr>
                            </thead>
                            <tbody>{nodes}</tbody>
                        </table>
                    </section>
                    <section aria-labelledby="users-title">
                        <h2 id="users-title">
                            "Users online: " <span id="users-online">{report.users_online}</span>
                        </h2>
                    </section>
                    <section aria-labelledby="rooms-title">
                        <h2 id="rooms-title">"Rooms and their streams"</h2>
                        <table id="streams">
                            <thead>
                                <tr>
                                    <th scope="col">"Room"</th>
                                    <th scope="col">"Online"</th>
                                    <th scope="col">"Stream length"</th>
                                    <th scope="col">"Oldest kept position"</th>
                                </tr>
                            </thead>
                            <tbody>{rooms}</tbody>
                        </table>
                    </section>
                </main>
            </body>
        </html>
    };
    format!("<!DOCTYPE html>{}", page.to_html())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, draining: bool) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            address: "127.0.0.1:1".into(),
            at_ms: 1_000,
            last_beat_ms: 500,
            websocket: 3,
            polling: 1,
            draining,
            delivery_lag_ms: 7,
        }
    }

    #[test]
    fn the_page_shows_every_node_and_room_as_text() {
        let report = StatusReport {
            node: "n1".into(),
            at_ms: 1_000,
            nodes: vec![node("n1", false), node("<n2>", true)],
            users_online: 4,
            rooms: vec![RoomStatus {
                room: RoomName::lobby(),
                online: 4,
                length: 12,
                oldest: Some(Position { ms: 5, seq: 0 }),
            }],
            error: None,
        };
        let html = render(&report);
        assert!(html.starts_with("<!DOCTYPE html><html"), "{html}");
        for shown in ["n1", "&lt;n2&gt;", "draining", "serving", "0.5 s ago", "7 ms", "#lobby", "5-0", ">4<"] {
            assert!(html.contains(shown), "{shown} in {html}");
        }
        assert!(!html.contains("<n2>"), "names are text");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["nodes"][1]["draining"], true);
        assert_eq!(json["rooms"][0]["oldest"], "5-0");
    }
}

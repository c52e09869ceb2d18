//! The node's Prometheus metrics (OpenMetrics text at `/metrics`), one registry per node.

use app::protocol::{BACKLOG, HELLO, JOIN, LEAVE, LINE, MESSAGE, NOTICE, PRESENCE, ROOMS, SET_USERNAME};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Labels of connected clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClientLabels {
    /// `websocket` or `polling`, as the client connected.
    pub transport: &'static str,
    /// `legacy` or `chatroom`.
    pub protocol: &'static str,
}

/// The event of a counted event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EventLabel {
    event: &'static str,
}

/// Counters of events by name. The names a node uses are resolved once, so that counting
/// one (per client, per room event on the delivery path) is an atomic add, not a map
/// lookup under a lock.
#[derive(Clone)]
struct EventCounters {
    family: Family<EventLabel, Counter>,
    known: Vec<(&'static str, Counter)>,
}

impl EventCounters {
    fn new(known: &[&'static str]) -> Self {
        let family = Family::<EventLabel, Counter>::default();
        let known = known.iter().map(|&event| (event, family.get_or_create(&EventLabel { event }).clone())).collect();
        Self { family, known }
    }

    fn inc(&self, event: &'static str) {
        if let Some((_, counter)) = self.known.iter().find(|(name, _)| *name == event) {
            counter.inc();
        } else {
            self.family.get_or_create(&EventLabel { event }).inc();
        }
    }
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    reason: &'static str,
}

/// Which kind of backlog was sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    kind: &'static str,
}

/// Which backend operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpLabel {
    op: &'static str,
}

/// Everything the node counts.
pub struct Metrics {
    registry: Registry,
    /// Clients connected to this node.
    pub clients: Family<ClientLabels, Gauge>,
    events_in: EventCounters,
    events_out: EventCounters,
    refusals: Family<ReasonLabel, Counter>,
    backlogs: Family<KindLabel, Counter>,
    backend_errors: Family<OpLabel, Counter>,
    /// Times the bus reader got going again after failing (a Redis reconnect).
    pub bus_reconnects: Counter,
    /// Rooms this node reads and delivers now (those with members here, and the lobby).
    pub rooms_delivered: Gauge,
    /// Seconds a chat line took to be published on the bus.
    pub publish_seconds: Histogram,
    /// Seconds from a room event's publication to its delivery by this node.
    pub delivery_seconds: Histogram,
}

/// 0.1 ms to about 6.5 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("chatroom");
        let metrics = Self {
            clients: Family::default(),
            events_in: EventCounters::new(&[MESSAGE, SET_USERNAME, "join", JOIN, LEAVE, ROOMS]),
            events_out: EventCounters::new(&[MESSAGE, LINE, BACKLOG, NOTICE, PRESENCE, HELLO]),
            refusals: Family::default(),
            backlogs: Family::default(),
            backend_errors: Family::default(),
            bus_reconnects: Counter::default(),
            rooms_delivered: Gauge::default(),
            publish_seconds: Histogram::new(latency_buckets()),
            delivery_seconds: Histogram::new(latency_buckets()),
            registry: Registry::default(),
        };
        registry.register("connected_clients", "Clients connected to this node", metrics.clients.clone());
        registry.register("events_in", "Events received from clients", metrics.events_in.family.clone());
        registry.register("events_out", "Events sent to clients", metrics.events_out.family.clone());
        registry.register("refusals", "Inputs refused, by reason", metrics.refusals.clone());
        registry.register("backlogs", "Backlogs sent to joining chatroom clients, by kind", metrics.backlogs.clone());
        registry.register(
            "backend_errors",
            "Failed backend (Redis) calls, by operation",
            metrics.backend_errors.clone(),
        );
        registry.register("bus_reconnects", "Bus reader recoveries after a failure", metrics.bus_reconnects.clone());
        registry.register(
            "rooms_delivered",
            "Rooms this node reads and delivers (with members here, and the lobby)",
            metrics.rooms_delivered.clone(),
        );
        registry.register("publish_seconds", "Time to publish a chat line on the bus", metrics.publish_seconds.clone());
        registry.register(
            "delivery_seconds",
            "Time from a room event's publication to its delivery by this node",
            metrics.delivery_seconds.clone(),
        );
        Self { registry, ..metrics }
    }
}

impl Metrics {
    /// Counts an event received from a client.
    pub fn event_in(&self, event: &'static str) {
        self.events_in.inc(event);
    }

    /// Counts an event sent to a client.
    pub fn event_out(&self, event: &'static str) {
        self.events_out.inc(event);
    }

    /// Counts a refused input.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a backlog sent to a joining chatroom client (`history`, `resume`, `reset`).
    pub fn backlog(&self, kind: &'static str) {
        self.backlogs.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a failed backend call.
    pub fn backend_error(&self, op: &'static str) {
        self.backend_errors.get_or_create(&OpLabel { op }).inc();
    }

    /// Records a duration in seconds.
    pub fn observe(histogram: &Histogram, took: Duration) {
        histogram.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `/metrics`.
pub fn routes(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(serve_metrics)).with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_openmetrics_text() {
        let metrics = Metrics::default();
        metrics.clients.get_or_create(&ClientLabels { transport: "websocket", protocol: "legacy" }).inc();
        metrics.refused("empty_message");
        Metrics::observe(&metrics.publish_seconds, Duration::from_millis(2));
        let text = metrics.render().unwrap();
        for expected in [
            r#"chatroom_connected_clients{transport="websocket",protocol="legacy"} 1"#,
            r#"chatroom_refusals_total{reason="empty_message"} 1"#,
            "chatroom_publish_seconds_count 1",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}

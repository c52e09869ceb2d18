//! One connection's task: it opens the session, handles the client's events one at a
//! time in arrival order, and closes the session when the connection is over.

use super::inbox::{EventQueue, Inbound};
use super::member::Member;
use crate::addresses::{AddressPolicy, ClientAddr};
use crate::backend::SessionId;
use crate::chat::{ChatService, Join, JoinName};
use crate::limits::{ConnectionLimits, Verdict};
use crate::metrics::Metrics;
use app::protocol::{Notice, Refusal};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a connection's task works with.
pub(super) struct Connection {
    /// The connection as delivery sees it.
    pub(super) member: Arc<Member>,
    /// Its session id.
    pub(super) sid: SessionId,
    /// Where it comes from.
    pub(super) addr: ClientAddr,
    /// Its queued events.
    pub(super) queue: Arc<EventQueue>,
    /// The rate limits it draws from.
    pub(super) limits: Arc<ConnectionLimits>,
    /// The chat's rules.
    pub(super) chat: Arc<ChatService>,
    /// The node's counters.
    pub(super) metrics: Arc<Metrics>,
    /// How many connections this node holds.
    pub(super) connected: Arc<AtomicUsize>,
    /// How many each address holds.
    pub(super) addresses: Arc<AddressPolicy>,
}

impl Connection {
    /// Handles the connection's events in arrival order, then closes its session.
    pub(super) async fn serve(self) {
        let Self { member, sid, queue, chat, metrics, connected, addresses, addr, .. } = &self;
        match chat.open_session(sid, &member.user).await {
            // The user is online already (another tab, or back within its grace period).
            Ok(Some(name)) => drop(member.set_name(Some(name))),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%sid, %err, "could not record the session");
                metrics.backend_error("session");
            }
        }
        loop {
            tokio::select! {
                biased;
                event = queue.next() => self.handle(event).await,
                () = member.gone.notified() => break,
            }
        }
        // Events that arrived before the disconnect still count, and come before the leave.
        for event in queue.close() {
            self.handle(event).await;
        }
        if let Err(err) = chat.close_session(sid, &member.user).await {
            tracing::error!(%sid, %err, "could not close the session cleanly");
            metrics.backend_error("session");
        }
        metrics.clients.get_or_create(&member.labels).dec();
        connected.fetch_sub(1, Ordering::Relaxed);
        addresses.closed(*addr);
    }

    async fn handle(&self, event: Inbound) {
        let Self { member, chat, metrics, .. } = self;
        match event {
            Inbound::Join { after, name } => {
                let join = chat.join(after.as_ref(), name, member.name()).await;
                self.send_join(join).await;
            }
            Inbound::Resync => {
                let join = chat.resync().await;
                self.send_join(join).await;
            }
            Inbound::SetUsername(raw) => self.set_username(raw).await,
            Inbound::Message(raw) => {
                let started = std::time::Instant::now();
                match chat.post(member.name().as_ref(), raw.as_ref()).await {
                    Ok(_) => Metrics::observe(&metrics.publish_seconds, started.elapsed()),
                    Err(refusal) => {
                        if refusal == Refusal::Unavailable {
                            metrics.backend_error("bus_publish");
                        }
                        member.outbox.refuse(&refusal);
                    }
                }
            }
        }
    }

    /// Sends what a joining (or restarted) client gets: backlog, presence, greeting, name.
    async fn send_join(&self, join: Join) {
        let Self { member, sid, metrics, .. } = self;
        if let Some(err) = &join.backlog_error {
            tracing::warn!(%sid, %err, "cannot read the backlog");
            metrics.backend_error("backlog");
        }
        if let Err(err) = &join.online {
            tracing::warn!(%sid, %err, "cannot read who is online");
            metrics.backend_error("presence");
        }
        metrics.backlog(join.kind.as_str());
        member.catch_up(join.kind, &join.backlog, join.resumed_after, join.online.as_ref().ok());
        if join.welcome {
            member.outbox.reply(&Notice::welcome());
        }
        match join.name {
            JoinName::Keep(current) => member.outbox.reply(&Notice::name_set(&current)),
            // A name presented on connecting is claimed like any other: within the limits.
            JoinName::Claim(name) => match self.limits.check_rename() {
                Verdict::Allowed => self.set_username(Some(Value::String(name))).await,
                Verdict::Refused(refusal) => member.outbox.refuse(&refusal),
                Verdict::Flooding => member.outbox.refuse(&Refusal::RenamesTooFast),
            },
            JoinName::None => {}
        }
    }

    async fn set_username(&self, raw: Option<Value>) {
        let Self { member, sid, chat, .. } = self;
        // Taken on trust while it is claimed, so that delivering the claim's own announcement
        // does not tell this client twice; put back if refused.
        let wanted = raw.as_ref().and_then(Value::as_str).and_then(|name| app::protocol::Username::parse(name).ok());
        let had = if wanted.is_some() { member.set_name(wanted) } else { member.name() };
        match chat.set_username(sid, &member.user, raw.as_ref()).await {
            Ok(name) => {
                member.set_name(Some(name.clone()));
                member.outbox.reply(&Notice::name_set(&name));
            }
            Err(refusal) => {
                member.set_name(had);
                member.outbox.refuse(&refusal);
            }
        }
    }
}

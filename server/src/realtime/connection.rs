//! One connection's task: it opens the session, handles the client's events one at a
//! time in arrival order (joining and leaving rooms among them), and closes the session
//! when the connection is over, or when its token expires without a refresh.

use super::hub::Hub;
use super::inbox::{EventQueue, Inbound};
use super::member::{Member, Speaks};
use crate::addresses::{AddressPolicy, ClientAddr};
use crate::auth::{Access, Denied, Gate};
use crate::backend::SessionId;
use crate::chat::{ChatService, Join, JoinName, name_on_connect};
use crate::limits::{ConnectionLimits, Verdict};
use crate::metrics::Metrics;
use crate::moderation::Moderator;
use app::protocol::{Notice, OLDER, Older, Position, Presented, ROOMS, Refusal, RoomCount, RoomList, RoomName};
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
    /// The node's rooms.
    pub(super) hub: Arc<Hub>,
    /// The most rooms it may be in at once.
    pub(super) max_rooms: usize,
    /// The most rooms a room list holds.
    pub(super) max_listed: usize,
    /// The node's counters.
    pub(super) metrics: Arc<Metrics>,
    /// How many connections this node holds.
    pub(super) connected: Arc<AtomicUsize>,
    /// How many each address holds.
    pub(super) addresses: Arc<AddressPolicy>,
    /// The sanctions in force.
    pub(super) moderator: Arc<Moderator>,
    /// Who may connect.
    pub(super) gate: Arc<Gate>,
    /// What this connection may do (its token's grant), replaced by a refresh.
    pub(super) access: parking_lot::Mutex<Access>,
}

impl Connection {
    /// Handles the connection's events in arrival order, then closes its session.
    ///
    /// The steps that talk to the backend are boxed: an idle connection's task then holds
    /// only its wait for the next event, not room for the largest step (2.6 KiB of 3 KiB
    /// a connection before; a boxed step costs one allocation while it runs).
    pub(super) async fn serve(self) {
        let Self { member, sid, queue, chat, metrics, connected, addresses, addr, .. } = &self;
        match Box::pin(chat.open_session(sid, &member.user)).await {
            // The user is online already (another tab, or back within its grace period).
            Ok(Some(name)) => drop(member.set_name(Some(name))),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%sid, %err, "could not record the session");
                metrics.backend_error("session");
            }
        }
        if member.speaks == Speaks::Legacy {
            // Its delivery began on connecting; presence learns it here, before its events.
            let lobby = RoomName::lobby();
            if let Err(refusal) = Box::pin(chat.enter(&lobby, &member.user, sid)).await {
                tracing::warn!(%sid, %refusal, "a legacy client is not in the lobby's presence");
                metrics.backend_error("presence");
            }
        }
        loop {
            let expiry = self.access.lock().expires_in();
            tokio::select! {
                biased;
                event = queue.next() => Box::pin(self.handle(event)).await,
                () = member.gone.notified() => break,
                () = sleep_or_never(expiry) => self.expire(),
            }
        }
        // Events that arrived before the disconnect still count, and come before the leave.
        for event in queue.close() {
            Box::pin(self.handle(event)).await;
        }
        let rooms = member.rooms();
        if let Err(err) = Box::pin(chat.close_session(sid, &member.user, &rooms)).await {
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
            Inbound::Join { room, after } => self.join(&room, after.as_ref()).await,
            Inbound::Leave(room) => self.leave(&room).await,
            Inbound::ListRooms => match chat.rooms(self.max_listed).await {
                Ok(rooms) => {
                    // A private room is not even named to those who may not join it.
                    let rooms = rooms
                        .into_iter()
                        .filter(|info| self.may_join(&info.room))
                        .map(|info| RoomCount { room: info.room, online: info.online })
                        .collect();
                    member.outbox.reply_event(ROOMS, &RoomList { rooms });
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot read the room list");
                    metrics.backend_error("presence");
                    member.outbox.refuse(&Refusal::RoomUnavailable);
                }
            },
            Inbound::Resync(room) => {
                if member.is_in(&room) {
                    let join = chat.resync(&room).await;
                    self.send_join(&room, join);
                }
            }
            Inbound::Older { room, before, limit } => self.older(&room, before, limit).await,
            Inbound::TakeName(presented) => self.take_name(presented).await,
            Inbound::SetUsername(raw) => {
                let access = self.access.lock().clone();
                match access.fixed_name() {
                    Some(_) => member.outbox.refuse(&Refusal::NameFixed),
                    None if !access.may_post() => member.outbox.refuse(&Refusal::SignInToPost),
                    None => self.set_username(raw).await,
                }
            }
            Inbound::Refresh(token) => self.refresh(&token).await,
            Inbound::Recheck(room) => {
                if member.is_in(&room) && !self.may_join(&room) {
                    self.leave(&room).await;
                }
            }
            Inbound::Message { room, raw } => {
                let label = member.label(&room);
                if !member.is_in(&room) {
                    return member.outbox.refuse_in(label, &Refusal::NotInRoom { room: room.to_string() });
                }
                if !self.access.lock().may_post() {
                    return member.outbox.refuse_in(label, &Refusal::SignInToPost);
                }
                if let Some(refusal) = self.moderator.refuses_line(&member.user, self.addr) {
                    return member.outbox.refuse_in(label, &refusal);
                }
                let started = std::time::Instant::now();
                match chat.post_by(&room, member.name().as_ref(), Some(&member.user), raw.as_ref()).await {
                    Ok(_) => Metrics::observe(&metrics.publish_seconds, started.elapsed()),
                    Err(refusal) => {
                        if refusal == Refusal::Unavailable {
                            metrics.backend_error("bus_publish");
                        }
                        member.outbox.refuse_in(label, &refusal);
                    }
                }
            }
        }
    }

    /// Puts the client in `room` (presence, then delivery) and sends it the room's
    /// backlog after `after`, who is there, and a welcome if it is new there.
    async fn join(&self, room: &RoomName, after: Option<&Presented<Position>>) {
        let Self { member, sid, chat, hub, max_rooms, .. } = self;
        let label = member.label(room);
        if !self.may_join(room) {
            return member.outbox.refuse_in(label, &Refusal::RoomNotAllowed { room: room.to_string() });
        }
        if !member.is_in(room) && member.room_count() >= *max_rooms {
            return member.outbox.refuse_in(label, &Refusal::TooManyRooms { max: *max_rooms });
        }
        if let Err(refusal) = chat.enter(room, &member.user, sid).await {
            return member.outbox.refuse_in(label, &refusal);
        }
        // The backlog is read once the room's delivery knows where it starts: the two
        // then meet with no gap, and the member's cursor drops what both hold.
        hub.enter(room, member).wait().await;
        let join = chat.join(room, after).await;
        self.send_join(room, join);
    }

    /// Sends the client up to `limit` lines of `room` before `before`, if it is in the room.
    async fn older(&self, room: &RoomName, before: Position, limit: usize) {
        let Self { member, chat, metrics, .. } = self;
        let label = member.label(room);
        if !member.is_in(room) {
            return member.outbox.refuse_in(label, &Refusal::NotInRoom { room: room.to_string() });
        }
        match chat.older(room, before, limit).await {
            Ok(older) => member.outbox.reply_event(OLDER, &Older { room: label.cloned(), ..older }),
            Err(err) => {
                tracing::warn!(%room, %err, "cannot read older lines");
                metrics.backend_error("backlog");
                member.outbox.refuse_in(label, &Refusal::HistoryUnavailable);
            }
        }
    }

    /// Takes the client out of `room`: no more of its events, and its user leaves the
    /// room with its last connection there.
    async fn leave(&self, room: &RoomName) {
        let Self { member, sid, chat, hub, .. } = self;
        if !member.is_in(room) {
            return member.outbox.refuse_in(Some(room), &Refusal::NotInRoom { room: room.to_string() });
        }
        hub.leave(room, member);
        if let Err(refusal) = chat.exit(room, &member.user, sid).await {
            member.outbox.refuse_in(Some(room), &refusal);
        }
        member.outbox.reply(&Notice::RoomLeft { room: room.clone() });
    }

    /// Sends what a client joining `room` (or started over there) gets: backlog,
    /// presence, greeting.
    fn send_join(&self, room: &RoomName, join: Join) {
        let Self { member, sid, metrics, .. } = self;
        if let Some(err) = &join.backlog_error {
            tracing::warn!(%sid, %room, %err, "cannot read the backlog");
            metrics.backend_error("backlog");
        }
        if let Err(err) = &join.online {
            tracing::warn!(%sid, %room, %err, "cannot read who is online");
            metrics.backend_error("presence");
        }
        metrics.backlog(join.kind.as_str());
        member.catch_up(room, join.kind, &join.backlog, join.resumed_after, join.online.as_ref().ok());
        if join.welcome {
            member.outbox.reply(&Notice::welcome().in_room(member.label(room)));
        }
    }

    /// Ends a connection whose token expired (unless a refresh handled meanwhile moved
    /// the expiry): it is told, keeps no right while it is let go, and is closed.
    fn expire(&self) {
        let mut access = self.access.lock();
        if access.expires_in().is_some_and(|left| left.is_zero()) {
            *access = Access::Anonymous { may_post: false };
            self.member.outbox.refuse(&Refusal::NotAllowed { reason: Denied::Expired.to_string() });
            self.member.outbox.disconnect_soon();
        }
    }

    /// Takes a fresh token of the same user: its expiry and rooms from now on. The rooms
    /// it no longer lists are left.
    async fn refresh(&self, token: &str) {
        let member = &self.member;
        let current = self.access.lock().clone();
        let access = match self.gate.refresh(&current, token) {
            Ok(access) => access,
            Err(denied) => {
                tracing::info!(sid = %self.sid, reason = %denied, "a token refresh was refused");
                return member.outbox.refuse(&Refusal::NotAllowed { reason: denied.to_string() });
            }
        };
        *self.access.lock() = access.clone();
        if let Access::Signed(grant) = &access {
            member.outbox.reply(&Notice::SignedIn { name: grant.name.clone(), expires: grant.expires });
        }
        for room in member.rooms().into_iter().filter(|room| !self.may_join(room)) {
            self.leave(&room).await;
        }
    }

    /// Whether the connection may be in `room`: a public room, or a private one its token
    /// lists or an operator added its user to.
    fn may_join(&self, room: &RoomName) -> bool {
        self.access.lock().may_join(room) || self.moderator.admits(room, &self.member.user)
    }

    /// Takes the name the client presented on connecting, unless its user has one.
    async fn take_name(&self, presented: Option<String>) {
        let member = &self.member;
        if presented.is_some() && !self.access.lock().may_post() {
            return member.outbox.refuse(&Refusal::SignInToPost);
        }
        match name_on_connect(presented, member.name()) {
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

/// Waits `after`, or forever without one.
async fn sleep_or_never(after: Option<std::time::Duration>) {
    match after {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
}

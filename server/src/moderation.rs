//! What operators do to lines and users, as plain functions over the chat and the
//! moderation store: delete a line, kick, mute, ban and lift a ban, forget everything a
//! user wrote, add users to private rooms and take them off, and keep events no longer
//! than the retention. Every action is logged
//! (target `audit`) and kept in the audit trail. The admin API (`admin`) calls these.
//!
//! Invariant: a deleted line is gone from its room's bus before the room is told, so no
//! history, resume or older-lines answer read after the announcement holds its text.
//! Each node holds a copy of the sanctions in force and checks it without a round trip.

use crate::addresses::ClientAddr;
use crate::auth::Subject;
use crate::backend::moderation::{AuditEntry, Moderation, Order, Sanction, SanctionKind, Target};
use crate::backend::{BackendError, UserId};
use crate::chat::ChatService;
use app::protocol::{Position, Refusal, RoomEvent, RoomName, Username};
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How often a node reads the sanctions again, besides when told to.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// The most rooms forgetting a user or the retention looks through.
const MAX_ROOMS: usize = 100_000;
/// How far back a user's newest line is looked for, per room, to forget a user who is
/// not online.
const LOOK_BACK: usize = 10_000;
/// Events read at a time while looking back.
const PAGE: usize = 500;

/// Why an action could not be carried out.
#[derive(Debug, Error)]
pub enum ModerationError {
    /// No online user has the name (and, to forget one, no line was written under it).
    #[error("no user named {0}")]
    NoSuchUser(String),
    /// The room holds no line at that position.
    #[error("no line at {position} in #{room}")]
    NoSuchLine {
        /// The room.
        room: RoomName,
        /// The position asked for.
        position: Position,
    },
    /// Only chat lines can be deleted.
    #[error("the event at {0} is not a chat line")]
    NotALine(Position),
    /// Users are added to private rooms only (anyone may join the others).
    #[error("#{0} is not a private room: its name does not start with private-")]
    NotPrivate(RoomName),
    /// The user was not added to the room.
    #[error("{user} was not added to #{room}")]
    NotAMember {
        /// The room.
        room: RoomName,
        /// The user's `sub`.
        user: String,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What an action did, as the admin API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The action.
    pub action: &'static str,
    /// What it was about.
    pub subject: String,
    /// What it did.
    pub outcome: String,
}

/// The moderation of one node.
pub struct Moderator {
    chat: Arc<ChatService>,
    store: Arc<dyn Moderation>,
    node: String,
    /// The sanctions in force, as last read.
    sanctions: RwLock<Vec<Sanction>>,
    /// The users added to private rooms, as last read.
    members: RwLock<HashSet<(RoomName, UserId)>>,
}

impl Moderator {
    /// The moderation of the node `node`.
    pub fn new(chat: Arc<ChatService>, store: Arc<dyn Moderation>, node: &str) -> Self {
        Self {
            chat,
            store,
            node: node.to_owned(),
            sanctions: RwLock::new(Vec::new()),
            members: RwLock::new(HashSet::new()),
        }
    }

    /// The store (orders, audit).
    pub fn store(&self) -> &Arc<dyn Moderation> {
        &self.store
    }

    /// Why a line of `user` from `addr` is refused now, if it is (muted).
    pub fn refuses_line(&self, user: &UserId, addr: ClientAddr) -> Option<Refusal> {
        let held = |target: &Target| match target {
            Target::User(held) => held == user,
            Target::Address(held) => *held == addr.0,
        };
        self.minutes_left(SanctionKind::Mute, held).map(|minutes| Refusal::Muted { minutes })
    }

    /// Why a connection of `user` is refused now, if it is (banned).
    pub fn refuses_user(&self, user: &UserId) -> Option<Refusal> {
        let held = |target: &Target| matches!(target, Target::User(held) if held == user);
        self.minutes_left(SanctionKind::Ban, held).map(|minutes| Refusal::Banned { minutes })
    }

    /// Why a new connection from `addr` is refused now, if it is (banned).
    pub fn refuses_address(&self, addr: ClientAddr) -> Option<Refusal> {
        let held = |target: &Target| target == &Target::Address(addr.0);
        self.minutes_left(SanctionKind::Ban, held).map(|minutes| Refusal::Banned { minutes })
    }

    /// Whole minutes left of the longest sanction of `kind` in force on a target `held`
    /// picks, if any.
    fn minutes_left(&self, kind: SanctionKind, held: impl Fn(&Target) -> bool) -> Option<u64> {
        let now = crate::clock::now_ms();
        let until = self
            .sanctions
            .read()
            .iter()
            .filter(|s| s.kind == kind && s.in_force(now) && held(&s.target))
            .map(|s| s.until_ms)
            .max()?;
        Some(minutes_left(until, now))
    }

    /// Whether an operator added `user` to the private `room`.
    pub fn admits(&self, room: &RoomName, user: &UserId) -> bool {
        room.is_private() && self.members.read().contains(&(room.clone(), user.clone()))
    }

    /// Stops admitting `user` to `room` here at once (it was taken off the room).
    pub fn forget_member(&self, room: &RoomName, user: &UserId) {
        self.members.write().remove(&(room.clone(), user.clone()));
    }

    /// Reads the sanctions in force and the rooms' members again.
    pub async fn refresh(&self) {
        match self.store.sanctions().await {
            Ok(sanctions) => *self.sanctions.write() = sanctions,
            Err(err) => tracing::warn!(%err, "cannot read the sanctions; keeping the last ones read"),
        }
        match self.store.members().await {
            Ok(members) => *self.members.write() = members.into_iter().collect(),
            Err(err) => tracing::warn!(%err, "cannot read the private rooms' members; keeping the last ones read"),
        }
    }

    /// Lets the user whose token's `sub` is `subject` join the private `room`, on every node.
    pub async fn add_member(&self, room: &RoomName, subject: &Subject) -> Result<Done, ModerationError> {
        if !room.is_private() {
            return Err(ModerationError::NotPrivate(room.clone()));
        }
        let subject = subject.as_str();
        self.store.add_member(room, &UserId::from_subject(subject)).await?;
        self.store.broadcast(&Order::Refresh).await?;
        self.done("add_member", format!("#{room} {subject}"), "may join the room".into()).await
    }

    /// Takes that back: the user leaves the room on every node, unless its token lists it.
    pub async fn remove_member(&self, room: &RoomName, subject: &Subject) -> Result<Done, ModerationError> {
        let subject = subject.as_str();
        let user = UserId::from_subject(subject);
        if !self.store.remove_member(room, &user).await? {
            return Err(ModerationError::NotAMember { room: room.clone(), user: subject.to_owned() });
        }
        self.store.broadcast(&Order::Revoke { room: room.clone(), user }).await?;
        self.done("remove_member", format!("#{room} {subject}"), "taken out of the room".into()).await
    }

    /// The users added to private rooms (their `sub`), by room.
    pub async fn members(&self) -> Result<Vec<(RoomName, String)>, ModerationError> {
        let mut members: Vec<(RoomName, String)> = self
            .store
            .members()
            .await?
            .into_iter()
            .filter_map(|(room, user)| Some((room, user.subject()?.to_owned())))
            .collect();
        members.sort();
        Ok(members)
    }

    /// Deletes the chat line at `position` of `room`, and tells the room.
    pub async fn delete_line(&self, room: &RoomName, position: Position) -> Result<Done, ModerationError> {
        let bus = self.chat.bus(room);
        // The event at `position`: the newest before the one just after it.
        let after = Position { ms: position.ms, seq: position.seq.saturating_add(1) };
        let found = bus.newest(Some(after), 1).await?.into_iter().find(|d| d.position == position);
        match found {
            None => return Err(ModerationError::NoSuchLine { room: room.clone(), position }),
            // Joins, renames and leaves stay: they keep the presence list right.
            Some(found) if !matches!(found.event, RoomEvent::Chat { .. }) => {
                return Err(ModerationError::NotALine(position));
            }
            Some(_) => {}
        }
        if bus.delete(position).await?.is_none() {
            return Err(ModerationError::NoSuchLine { room: room.clone(), position });
        }
        bus.publish(RoomEvent::Deleted { line: position }).await?;
        self.done("delete", format!("#{room} {position}"), "1 line deleted".into()).await
    }

    /// Closes every connection of the user named `name`, on every node.
    pub async fn kick(&self, name: &Username) -> Result<Done, ModerationError> {
        let user = self.online(name).await?;
        self.store.broadcast(&Order::Kick { user, then: None }).await?;
        self.done("kick", name.to_string(), "its connections closed on every node".into()).await
    }

    /// Refuses the lines of the user named `name` for `minutes` (its keyless connections'
    /// addresses too).
    pub async fn mute(&self, name: &Username, minutes: u64) -> Result<Done, ModerationError> {
        let user = self.online(name).await?;
        let until_ms = self.impose(SanctionKind::Mute, Target::User(user.clone()), name, minutes).await?;
        self.store.broadcast(&Order::Mark { user, then: (SanctionKind::Mute, until_ms) }).await?;
        self.done("mute", name.to_string(), format!("muted for {minutes} minutes")).await
    }

    /// Closes the connections of the user named `name` and refuses new ones from its key
    /// (and its keyless connections' addresses) for `minutes`.
    pub async fn ban(&self, name: &Username, minutes: u64) -> Result<Done, ModerationError> {
        let user = self.online(name).await?;
        let until_ms = self.impose(SanctionKind::Ban, Target::User(user.clone()), name, minutes).await?;
        self.store.broadcast(&Order::Kick { user, then: Some((SanctionKind::Ban, until_ms)) }).await?;
        self.done("ban", name.to_string(), format!("banned for {minutes} minutes")).await
    }

    /// Lifts every ban imposed on the user named `name` (its key and addresses).
    pub async fn unban(&self, name: &str) -> Result<Done, ModerationError> {
        let mut lifted = 0;
        for sanction in self.store.sanctions().await? {
            if sanction.kind == SanctionKind::Ban && sanction.name == name {
                lifted += usize::from(self.store.lift(SanctionKind::Ban, &sanction.target).await?);
            }
        }
        if lifted == 0 {
            return Err(ModerationError::NoSuchUser(name.to_owned()));
        }
        self.store.broadcast(&Order::Refresh).await?;
        self.done("unban", name.to_owned(), format!("{lifted} bans lifted")).await
    }

    /// The sanctions in force.
    pub async fn sanctions(&self) -> Result<Vec<Sanction>, ModerationError> {
        Ok(self.store.sanctions().await?)
    }

    /// Deletes every line the user named `name` wrote, in every room, under any name
    /// (the user is found online, or by the newest line written under that name).
    pub async fn forget(&self, name: &Username) -> Result<Done, ModerationError> {
        let user = match self.chat.user_named(name).await? {
            Some(user) => user,
            None => self.writer_of(name).await?.ok_or_else(|| ModerationError::NoSuchUser(name.to_string()))?,
        };
        let mut deleted = 0;
        for room in self.rooms().await? {
            let bus = self.chat.bus(&room);
            for position in bus.written_by(&user).await? {
                if bus.delete(position).await?.is_some() {
                    bus.publish(RoomEvent::Deleted { line: position }).await?;
                    deleted += 1;
                }
            }
        }
        self.done("forget", name.to_string(), format!("{deleted} lines deleted")).await
    }

    /// Removes every event older than `retention` from every room; returns how many went.
    pub async fn enforce_retention(&self, retention: Duration) -> Result<u64, ModerationError> {
        let oldest_ms = crate::clock::now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        let mut removed = 0;
        for room in self.rooms().await? {
            removed += self.chat.bus(&room).trim_older_than(oldest_ms).await?;
        }
        if removed > 0 {
            self.done("retention", format!("events before {oldest_ms}"), format!("{removed} events removed")).await?;
        }
        Ok(removed)
    }

    /// Keeps events no longer than `retention`, checking every `every`, for the life of
    /// the node.
    pub async fn keep_retention(self: Arc<Self>, retention: Duration, every: Duration) {
        // The first check waits a period: start-up (and a reconnect storm) has enough to do.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(err) = self.enforce_retention(retention).await {
                tracing::warn!(%err, "cannot remove events past the retention; retrying at the next check");
            }
        }
    }

    /// Reads the sanctions again on every refresh order and every few seconds, for the
    /// life of the node.
    pub async fn follow_sanctions(self: Arc<Self>) {
        let mut orders = self.store.orders();
        let mut ticks = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                order = orders.recv() => match order {
                    Ok(Order::Refresh) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
            self.refresh().await;
        }
    }

    /// Puts the sanction of an order on a keyless connection's address (the user is only
    /// that connection; its next one has another id).
    pub async fn carry_over(&self, (kind, until_ms): (SanctionKind, u64), name: &str, addr: ClientAddr) {
        let sanction = Sanction { kind, target: Target::Address(addr.0), name: name.to_owned(), until_ms };
        let carried = async {
            self.store.impose(&sanction).await?;
            self.store.broadcast(&Order::Refresh).await
        };
        if let Err(err) = carried.await {
            tracing::warn!(%err, addr = %addr.0, "cannot put a sanction on a keyless connection's address");
        }
    }

    async fn impose(
        &self,
        kind: SanctionKind,
        target: Target,
        name: &Username,
        minutes: u64,
    ) -> Result<u64, ModerationError> {
        let until_ms = crate::clock::now_ms().saturating_add(minutes.saturating_mul(60_000));
        self.store.impose(&Sanction { kind, target, name: name.to_string(), until_ms }).await?;
        self.store.broadcast(&Order::Refresh).await?;
        Ok(until_ms)
    }

    async fn online(&self, name: &Username) -> Result<UserId, ModerationError> {
        self.chat.user_named(name).await?.ok_or_else(|| ModerationError::NoSuchUser(name.to_string()))
    }

    /// The user who wrote the newest line under `name` in any room (looking back
    /// [`LOOK_BACK`] events per room).
    async fn writer_of(&self, name: &Username) -> Result<Option<UserId>, ModerationError> {
        for room in self.rooms().await? {
            let bus = self.chat.bus(&room);
            let mut before = None;
            for _ in 0..LOOK_BACK / PAGE {
                let page = bus.newest(before, PAGE).await?;
                let found = page.iter().find(|d| {
                    matches!(&d.event, RoomEvent::Chat { author, .. } if author == name.as_str()) && d.user.is_some()
                });
                if let Some(found) = found {
                    return Ok(found.user.clone());
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => before = Some(last.position),
                    _ => break,
                }
            }
        }
        Ok(None)
    }

    /// The rooms in use, the lobby always among them.
    async fn rooms(&self) -> Result<Vec<RoomName>, ModerationError> {
        let mut rooms: Vec<RoomName> = self.chat.rooms(MAX_ROOMS).await?.into_iter().map(|info| info.room).collect();
        if !rooms.contains(&RoomName::lobby()) {
            rooms.push(RoomName::lobby());
        }
        Ok(rooms)
    }

    /// Logs and records an action; returns what the API answers.
    async fn done(&self, action: &'static str, subject: String, outcome: String) -> Result<Done, ModerationError> {
        tracing::info!(target: "audit", action, %subject, %outcome, node = %self.node, "moderation");
        let entry = AuditEntry {
            at_ms: crate::clock::now_ms(),
            action: action.to_owned(),
            subject: subject.clone(),
            outcome: outcome.clone(),
            node: self.node.clone(),
        };
        self.store.record(&entry).await?;
        Ok(Done { action, subject, outcome })
    }
}

/// Whole minutes from `now` to `until`, rounded up (a sanction in force shows at least 1).
fn minutes_left(until_ms: u64, now_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).div_ceil(60_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SessionId;
    use crate::backend::memory::MemoryModeration;
    use std::net::IpAddr;

    fn setup() -> (Arc<ChatService>, Moderator) {
        let chat = Arc::new(ChatService::in_memory(100, 1_000));
        let moderator = Moderator::new(chat.clone(), Arc::new(MemoryModeration::default()), "n1");
        (chat, moderator)
    }

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    async fn named(chat: &ChatService, who: &str) -> UserId {
        let user = UserId::from_key(&format!("{who}-key-0123456789").parse().unwrap());
        let sid = SessionId::new(format!("sid-{who}"));
        chat.open_session(&sid, &user).await.unwrap();
        chat.enter(&RoomName::lobby(), &user, &sid).await.unwrap();
        chat.set_username(&sid, &user, Some(&serde_json::json!(who))).await.unwrap();
        user
    }

    #[tokio::test]
    async fn operators_add_users_to_private_rooms_and_take_them_off() {
        let (_chat, moderator) = setup();
        let ops = RoomName::parse("private-ops").unwrap();
        let ada = Subject::parse("u-ada").unwrap();
        let user = UserId::from_subject("u-ada");
        let refused = moderator.add_member(&RoomName::lobby(), &ada).await;
        assert!(matches!(refused, Err(ModerationError::NotPrivate(_))), "{refused:?}");
        moderator.add_member(&ops, &ada).await.unwrap();
        assert!(!moderator.admits(&ops, &user), "not before the store is read again");
        moderator.refresh().await;
        assert!(moderator.admits(&ops, &user));
        assert!(!moderator.admits(&RoomName::parse("private-hr").unwrap(), &user));
        assert_eq!(moderator.members().await.unwrap(), [(ops.clone(), "u-ada".to_owned())]);
        moderator.remove_member(&ops, &ada).await.unwrap();
        moderator.forget_member(&ops, &user);
        assert!(!moderator.admits(&ops, &user));
        let again = moderator.remove_member(&ops, &ada).await;
        assert!(matches!(again, Err(ModerationError::NotAMember { .. })), "{again:?}");
    }

    #[tokio::test]
    async fn a_deleted_line_is_gone_from_history_and_announced() {
        let (chat, moderator) = setup();
        let ann = named(&chat, "ann").await;
        let lobby = RoomName::lobby();
        let kept =
            chat.post_by(&lobby, Some(&name("ann")), Some(&ann), Some(&serde_json::json!("kept"))).await.unwrap();
        let gone =
            chat.post_by(&lobby, Some(&name("ann")), Some(&ann), Some(&serde_json::json!("gone"))).await.unwrap();
        moderator.delete_line(&lobby, gone).await.unwrap();
        let events = chat.bus(&lobby).newest(None, 10).await.unwrap();
        assert!(!events.iter().any(|d| matches!(&d.event, RoomEvent::Chat { text, .. } if text == "gone")));
        assert_eq!(events[0].event, RoomEvent::Deleted { line: gone }, "announced after");
        // A reader that saw up to the kept line still resumes (a deletion is not a trim).
        assert!(chat.bus(&lobby).range_after(kept, 10).await.is_ok());
        assert!(matches!(moderator.delete_line(&lobby, gone).await, Err(ModerationError::NoSuchLine { .. })));
        // A join is no line: it stays where it is.
        let joined = chat.bus(&lobby).newest(Some(kept), 1).await.unwrap()[0].position;
        assert!(matches!(moderator.delete_line(&lobby, joined).await, Err(ModerationError::NotALine(_))));
        assert_eq!(chat.bus(&lobby).newest(Some(kept), 1).await.unwrap()[0].position, joined);
        let audit = moderator.store().audit(10).await.unwrap();
        assert_eq!(audit[0].action, "delete");
    }

    #[tokio::test]
    async fn a_mute_refuses_lines_until_it_ends_and_a_ban_refuses_the_user() {
        let (chat, moderator) = setup();
        let ann = named(&chat, "ann").await;
        let addr = ClientAddr(IpAddr::from([192, 0, 2, 1]));
        moderator.mute(&name("ann"), 5).await.unwrap();
        moderator.refresh().await;
        assert_eq!(moderator.refuses_line(&ann, addr), Some(Refusal::Muted { minutes: 5 }));
        assert_eq!(Refusal::Muted { minutes: 5 }.to_string(), "You are muted for 5 more minutes.");
        assert_eq!(moderator.refuses_user(&ann), None, "muted, not banned");
        moderator.ban(&name("ann"), 60).await.unwrap();
        moderator.refresh().await;
        assert_eq!(moderator.refuses_user(&ann), Some(Refusal::Banned { minutes: 60 }));
        moderator.carry_over((SanctionKind::Ban, crate::clock::now_ms() + 60_000), "ann", addr).await;
        moderator.refresh().await;
        assert_eq!(moderator.refuses_address(addr), Some(Refusal::Banned { minutes: 1 }));
        moderator.unban("ann").await.unwrap();
        moderator.refresh().await;
        assert_eq!((moderator.refuses_user(&ann), moderator.refuses_address(addr)), (None, None));
        assert!(matches!(moderator.kick(&name("nobody")).await, Err(ModerationError::NoSuchUser(_))));
    }

    #[tokio::test]
    async fn forgetting_a_user_deletes_its_lines_under_every_name_and_retention_trims() {
        let (chat, moderator) = setup();
        let ann = named(&chat, "ann").await;
        let lobby = RoomName::lobby();
        let say = |as_name: &'static str, text: &'static str| {
            let (chat, ann) = (chat.clone(), ann.clone());
            async move {
                chat.post_by(&RoomName::lobby(), Some(&name(as_name)), Some(&ann), Some(&serde_json::json!(text)))
                    .await
                    .unwrap()
            }
        };
        say("ann", "one").await;
        chat.set_username(&SessionId::new("sid-ann"), &ann, Some(&serde_json::json!("anna"))).await.unwrap();
        say("anna", "two").await;
        chat.post(&lobby, Some(&name("bob")), Some(&serde_json::json!("bob's"))).await.unwrap();
        let done = moderator.forget(&name("anna")).await.unwrap();
        assert_eq!(done.outcome, "2 lines deleted");
        let texts: Vec<String> = chat
            .bus(&lobby)
            .newest(None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|d| match d.event {
                RoomEvent::Chat { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["bob's"]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(moderator.enforce_retention(Duration::from_millis(1)).await.unwrap() > 0);
        assert!(chat.bus(&lobby).newest(None, 100).await.unwrap().is_empty());
    }
}

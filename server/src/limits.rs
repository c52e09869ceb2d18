//! Rate limits on chat lines and on names, kept per user and per source address so that
//! reconnecting gives no fresh burst and more connections give no more rate, and the
//! flood rule that disconnects a connection which keeps sending while refused.
//!
//! A user with a client key keeps its buckets across connections; a legacy client is a
//! user of one connection, so for it the address buckets are what holds. An address may
//! send `address_factor` times what one user may (several people behind one NAT).

use crate::addresses::ClientAddr;
use crate::backend::UserId;
use app::protocol::Refusal;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The rates of a node: chat lines a second and renames a minute, each with its burst.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Chat lines a second, steadily.
    pub messages_per_sec: NonZeroU32,
    /// Chat lines at once before the rate applies.
    pub message_burst: NonZeroU32,
    /// Renames (a name claimed, on connecting too) a minute, steadily.
    pub renames_per_min: NonZeroU32,
    /// Renames at once before the rate applies.
    pub rename_burst: NonZeroU32,
    /// How many times a user's rates one source address may use.
    pub address_factor: NonZeroU32,
    /// Requests for older lines a second, steadily.
    pub history_per_sec: NonZeroU32,
    /// Requests for older lines at once before the rate applies.
    pub history_burst: NonZeroU32,
    /// Refusals in a row after which a connection is disconnected.
    pub flood_after: u32,
}

/// The buckets of one kind of input, per user and per address.
#[derive(Clone)]
struct Buckets {
    users: Arc<DefaultKeyedRateLimiter<UserId>>,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Buckets {
    fn new(user: Quota, factor: NonZeroU32) -> Self {
        let scaled = |n: NonZeroU32| n.saturating_mul(factor);
        let address = Quota::with_period(user.replenish_interval() / factor.get())
            .map_or(user, |quota| quota.allow_burst(scaled(user.burst_size())));
        Self { users: Arc::new(RateLimiter::keyed(user)), addresses: Arc::new(RateLimiter::keyed(address)) }
    }

    /// Takes a token from the user's bucket and from its address's; both must have one.
    fn check(&self, user: &UserId, addr: ClientAddr) -> bool {
        self.users.check_key(user).is_ok() && self.addresses.check_key(&addr.0).is_ok()
    }

    fn forget_full(&self) {
        self.users.retain_recent();
        self.addresses.retain_recent();
        self.users.shrink_to_fit();
        self.addresses.shrink_to_fit();
    }
}

/// The limits of a node, shared by all its connections.
#[derive(Clone)]
pub struct RateLimits {
    messages: Buckets,
    renames: Buckets,
    history: Buckets,
    flood_after: u32,
}

/// What to do with an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits.
    Allowed,
    /// Over a limit: answer with this refusal.
    Refused(Refusal),
    /// Refused too many times in a row: disconnect the client.
    Flooding,
}

impl RateLimits {
    /// Buckets for these rates.
    pub fn new(rates: Rates) -> Self {
        let messages = Quota::per_second(rates.messages_per_sec).allow_burst(rates.message_burst);
        let renames = Quota::per_minute(rates.renames_per_min).allow_burst(rates.rename_burst);
        let history = Quota::per_second(rates.history_per_sec).allow_burst(rates.history_burst);
        Self {
            messages: Buckets::new(messages, rates.address_factor),
            renames: Buckets::new(renames, rates.address_factor),
            history: Buckets::new(history, rates.address_factor),
            flood_after: rates.flood_after.max(1),
        }
    }

    /// The limits of a connection of `user` from `addr`.
    pub fn for_connection(&self, user: UserId, addr: ClientAddr) -> ConnectionLimits {
        ConnectionLimits {
            limits: self.clone(),
            user,
            addr,
            refused_in_a_row: AtomicU32::new(0),
            flood_after: self.flood_after,
            cut_off: AtomicBool::new(false),
        }
    }

    /// Forgets the buckets that are full again (their user or address was quiet long
    /// enough), so that the maps hold only recent senders.
    pub fn forget_quiet(&self) {
        self.messages.forget_full();
        self.renames.forget_full();
        self.history.forget_full();
    }
}

/// One connection's view of the limits: whose buckets it draws from, and its flood count.
pub struct ConnectionLimits {
    limits: RateLimits,
    user: UserId,
    addr: ClientAddr,
    refused_in_a_row: AtomicU32,
    flood_after: u32,
    cut_off: AtomicBool,
}

impl ConnectionLimits {
    /// May the client post a chat line now?
    pub fn check_message(&self) -> Verdict {
        self.verdict(self.limits.messages.check(&self.user, self.addr), Refusal::TooFast)
    }

    /// May the client claim a name now?
    pub fn check_rename(&self) -> Verdict {
        self.verdict(self.limits.renames.check(&self.user, self.addr), Refusal::RenamesTooFast)
    }

    /// May the client refresh its token now? Refreshes are rare: they draw from the same
    /// bucket as names.
    pub fn check_refresh(&self) -> Verdict {
        self.verdict(self.limits.renames.check(&self.user, self.addr), Refusal::RefreshesTooFast)
    }

    /// May the client join or leave a room now? Each may announce the user in a room,
    /// so they draw from the same bucket as names.
    pub fn check_room_change(&self) -> Verdict {
        self.verdict(self.limits.renames.check(&self.user, self.addr), Refusal::RoomsTooFast)
    }

    /// May the client read older lines now? Each request reads up to a packet from the
    /// bus, so they have a bucket of their own.
    pub fn check_history(&self) -> Verdict {
        self.verdict(self.limits.history.check(&self.user, self.addr), Refusal::HistoryTooFast)
    }

    /// Marks the client as cut off for flooding; true only the first time, so that one
    /// disconnect is scheduled.
    pub fn cut_off(&self) -> bool {
        !self.cut_off.swap(true, Ordering::Relaxed)
    }

    fn verdict(&self, allowed: bool, refusal: Refusal) -> Verdict {
        if allowed {
            self.refused_in_a_row.store(0, Ordering::Relaxed);
            return Verdict::Allowed;
        }
        if self.refused_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= self.flood_after {
            Verdict::Flooding
        } else {
            Verdict::Refused(refusal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn rates(per_sec: u32, burst: u32, factor: u32, flood_after: u32) -> RateLimits {
        RateLimits::new(Rates {
            messages_per_sec: n(per_sec),
            message_burst: n(burst),
            renames_per_min: n(1),
            rename_burst: n(2),
            history_per_sec: n(1),
            history_burst: n(2),
            address_factor: n(factor),
            flood_after,
        })
    }

    fn user(key: &str) -> UserId {
        UserId::from_key(&format!("{key}-key-0123456789").parse().unwrap())
    }

    fn addr(last: u8) -> ClientAddr {
        ClientAddr(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_a_flood_is_cut_off() {
        let limits = rates(1, 3, 10, 5).for_connection(user("ann"), addr(1));
        for _ in 0..3 {
            assert_eq!(limits.check_message(), Verdict::Allowed);
        }
        for _ in 0..4 {
            assert_eq!(limits.check_message(), Verdict::Refused(Refusal::TooFast));
        }
        assert_eq!(limits.check_message(), Verdict::Flooding, "the fifth refusal in a row");
        assert!(limits.cut_off(), "the first cut-off schedules the disconnect");
        assert!(!limits.cut_off(), "only once");
        // Renames have buckets of their own.
        assert_eq!(limits.check_rename(), Verdict::Allowed);
        assert_eq!(limits.check_rename(), Verdict::Allowed);
        assert_eq!(limits.check_rename(), Verdict::Refused(Refusal::RenamesTooFast));
    }

    #[test]
    fn a_new_connection_of_the_same_user_gets_no_new_burst() {
        let node = rates(1, 3, 10, 100);
        let first = node.for_connection(user("ann"), addr(1));
        for _ in 0..3 {
            assert_eq!(first.check_message(), Verdict::Allowed);
        }
        // Reconnected, even from elsewhere: the same user's bucket.
        let again = node.for_connection(user("ann"), addr(2));
        assert_eq!(again.check_message(), Verdict::Refused(Refusal::TooFast));
        assert_eq!(node.for_connection(user("bob"), addr(2)).check_message(), Verdict::Allowed, "another user");
    }

    #[test]
    fn connections_of_one_address_share_its_rate() {
        let node = rates(1, 2, 2, 100);
        // Legacy clients are users of one connection each: the address holds for them.
        let allowed = (0..10)
            .map(|sid| {
                node.for_connection(UserId::of_connection(&crate::backend::SessionId::new(sid.to_string())), addr(7))
            })
            .filter(|limits| limits.check_message() == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 4, "twice a user's burst of 2");
    }

    #[test]
    fn an_allowed_input_resets_the_flood_count() {
        let limits = rates(1_000, 1, 10, 2).for_connection(user("ann"), addr(1));
        assert_eq!(limits.check_message(), Verdict::Allowed);
        assert_eq!(limits.check_message(), Verdict::Refused(Refusal::TooFast));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(limits.check_message(), Verdict::Allowed);
        assert_eq!(limits.check_message(), Verdict::Refused(Refusal::TooFast));
    }
}

//! Per-connection rate limits: token buckets on chat lines and on renames, and the flood
//! rule that disconnects a client which keeps sending while refused.

use app::protocol::Refusal;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The limits every connection of a node gets.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    messages: Quota,
    renames: Quota,
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
    /// `messages_per_sec` chat lines a second (bursts of `message_burst`),
    /// `renames_per_min` renames a minute (bursts of `rename_burst`), and a disconnect
    /// after `flood_after` refusals in a row.
    pub fn new(
        messages_per_sec: NonZeroU32,
        message_burst: NonZeroU32,
        renames_per_min: NonZeroU32,
        rename_burst: NonZeroU32,
        flood_after: u32,
    ) -> Self {
        Self {
            messages: Quota::per_second(messages_per_sec).allow_burst(message_burst),
            renames: Quota::per_minute(renames_per_min).allow_burst(rename_burst),
            flood_after: flood_after.max(1),
        }
    }

    /// Fresh buckets for a new connection.
    pub fn for_connection(&self) -> ConnectionLimits {
        ConnectionLimits {
            messages: RateLimiter::direct(self.messages),
            renames: RateLimiter::direct(self.renames),
            refused_in_a_row: AtomicU32::new(0),
            flood_after: self.flood_after,
            cut_off: AtomicBool::new(false),
        }
    }
}

/// One connection's buckets.
pub struct ConnectionLimits {
    messages: DefaultDirectRateLimiter,
    renames: DefaultDirectRateLimiter,
    refused_in_a_row: AtomicU32,
    flood_after: u32,
    cut_off: AtomicBool,
}

impl ConnectionLimits {
    /// May the client post a chat line now?
    pub fn check_message(&self) -> Verdict {
        self.check(&self.messages, Refusal::TooFast)
    }

    /// May the client change its name now?
    pub fn check_rename(&self) -> Verdict {
        self.check(&self.renames, Refusal::RenamesTooFast)
    }

    /// Marks the client as cut off for flooding; true only the first time, so that one
    /// disconnect is scheduled.
    pub fn cut_off(&self) -> bool {
        !self.cut_off.swap(true, Ordering::Relaxed)
    }

    fn check(&self, bucket: &DefaultDirectRateLimiter, refusal: Refusal) -> Verdict {
        if bucket.check().is_ok() {
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

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_a_flood_is_cut_off() {
        let limits = RateLimits::new(n(1), n(3), n(1), n(2), 5).for_connection();
        for _ in 0..3 {
            assert_eq!(limits.check_message(), Verdict::Allowed);
        }
        for _ in 0..4 {
            assert_eq!(limits.check_message(), Verdict::Refused(Refusal::TooFast));
        }
        assert_eq!(limits.check_message(), Verdict::Flooding, "the fifth refusal in a row");
        assert!(limits.cut_off(), "the first cut-off schedules the disconnect");
        assert!(!limits.cut_off(), "only once");
        // Renames have a bucket of their own.
        assert_eq!(limits.check_rename(), Verdict::Allowed);
        assert_eq!(limits.check_rename(), Verdict::Allowed);
        assert_eq!(limits.check_rename(), Verdict::Refused(Refusal::RenamesTooFast));
    }

    #[test]
    fn an_allowed_input_resets_the_flood_count() {
        let limits = RateLimits::new(n(1_000), n(1), n(1), n(1), 2).for_connection();
        assert_eq!(limits.check_message(), Verdict::Allowed);
        assert_eq!(limits.check_message(), Verdict::Refused(Refusal::TooFast));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(limits.check_message(), Verdict::Allowed);
        assert_eq!(limits.check_message(), Verdict::Refused(Refusal::TooFast));
    }
}

//! The node's writes of connections opening and closing that have not landed in Redis
//! yet, so that a presence sweep can tell drift from writes still on their way.
//!
//! Invariant: while no write failed since the last sync, Redis's count of the node's
//! connections differs from the node's own by at most the writes under way at some time
//! between two marks; a larger difference, or any failed write, is drift.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts of writes begun and finished, and whether one failed.
#[derive(Debug, Default)]
pub(super) struct UnderWay {
    begun: AtomicU64,
    finished: AtomicU64,
    failed: AtomicBool,
}

/// Where the counts stood when a sweep began.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    finished: u64,
}

/// One write under way; finished when dropped.
pub(super) struct Write<'a>(&'a UnderWay);

impl UnderWay {
    /// A write begins; it is finished when the returned guard drops.
    pub(super) fn begin(&self) -> Write<'_> {
        self.begun.fetch_add(1, Ordering::SeqCst);
        Write(self)
    }

    /// A write failed: what Redis holds is off until the next sync.
    pub(super) fn failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// A sync begins: it writes everything, failures before it included.
    pub(super) fn syncing(&self) {
        self.failed.store(false, Ordering::SeqCst);
    }

    /// Taken before Redis's count is read.
    pub(super) fn mark(&self) -> Mark {
        Mark { finished: self.finished.load(Ordering::SeqCst) }
    }

    /// Whether a difference of `off` between Redis's count (read after `mark`) and the
    /// node's (read now) can be writes under way: no write failed, and `off` is at most
    /// those under way at the mark plus those begun since (all that can have been
    /// under way in between).
    pub(super) fn explains(&self, mark: Mark, off: usize) -> bool {
        let begun = self.begun.load(Ordering::SeqCst);
        let may_be_under_way = begun.saturating_sub(mark.finished);
        !self.failed.load(Ordering::SeqCst) && u64::try_from(off).is_ok_and(|off| off <= may_be_under_way)
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_difference_needs_no_explaining() {
        let under_way = UnderWay::default();
        assert!(under_way.explains(under_way.mark(), 0));
        assert!(!under_way.explains(under_way.mark(), 1));
    }

    #[test]
    fn writes_under_way_at_the_mark_or_begun_since_explain_a_difference() {
        let under_way = UnderWay::default();
        let first = under_way.begin();
        let mark = under_way.mark();
        let second = under_way.begin();
        drop(first);
        assert!(under_way.explains(mark, 2));
        assert!(!under_way.explains(mark, 3));
        drop(second);
        // Both may have landed after Redis was read, and before the node counted.
        assert!(under_way.explains(mark, 2));
        assert!(!under_way.explains(under_way.mark(), 1));
    }

    #[test]
    fn a_failed_write_is_drift_until_a_sync() {
        let under_way = UnderWay::default();
        drop(under_way.begin());
        under_way.failed();
        let mark = under_way.mark();
        drop(under_way.begin());
        assert!(!under_way.explains(mark, 1));
        under_way.syncing();
        assert!(under_way.explains(mark, 1));
    }
}

//! Demand before read-ahead. A recovery reader's read-ahead fetches blocks nobody has
//! asked for yet; when it shared the permits' queue with demand reads, a read that
//! missed waited behind a whole window of them (a mounted snapshot read slower with a
//! window of 64 blocks than with 16). So read-ahead never queues for a permit: it takes
//! a free place only while more than a reserve of places is free, and otherwise waits
//! to be told that one was given back. A demand read that waits is in the permits'
//! queue, which gets every place given back before any counts as free: while one
//! waits, read-ahead gets nothing.

use super::{Flow, Pass};
use std::sync::Arc;

/// Places kept free for demand reads while read-ahead runs (an eighth of the limit,
/// at least one, but never all of them: with one place, read-ahead may take it).
pub(super) fn reserve(limit: usize) -> usize {
    (limit / 8).max(1).min(limit.saturating_sub(1))
}

/// Whether read-ahead may take a place when `free` of `limit` are free.
pub(super) fn ahead_may_enter(free: usize, limit: usize) -> bool {
    free > reserve(limit)
}

impl Flow {
    /// Waits for a place for a read-ahead fetch: after every demand read that waits,
    /// and leaving the reserve free.
    pub async fn enter_ahead(self: &Arc<Flow>) -> Pass {
        loop {
            // Registered before looking, so that a place given back in between wakes it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(pass) = self.try_enter_ahead() {
                return pass;
            }
            self.lock().controller.waited();
            freed.await;
        }
    }

    fn try_enter_ahead(self: &Arc<Flow>) -> Option<Pass> {
        let limit = self.lock().granted;
        if !ahead_may_enter(self.permits.available_permits(), limit) {
            return None;
        }
        self.permits.try_acquire().ok()?.forget();
        Some(self.pass())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::poll;

    #[test]
    fn the_reserve_is_an_eighth_at_least_one_and_never_all() {
        assert_eq!(reserve(1), 0);
        assert_eq!(reserve(2), 1);
        assert_eq!(reserve(16), 2);
        assert_eq!(reserve(64), 8);
        assert!(ahead_may_enter(1, 1));
        assert!(!ahead_may_enter(8, 64));
        assert!(ahead_may_enter(9, 64));
    }

    #[tokio::test]
    async fn a_demand_read_that_waits_goes_before_read_ahead_that_waited_first() {
        let flow = Flow::new(2, None);
        let mut held = vec![flow.enter().await, flow.enter().await];
        let mut ahead = Box::pin(flow.enter_ahead());
        assert!(poll!(&mut ahead).is_pending());
        let mut demand = Box::pin(flow.enter());
        assert!(poll!(&mut demand).is_pending());
        held.pop();
        let demand = poll!(&mut demand);
        assert!(demand.is_ready(), "the place went to read-ahead");
        assert!(poll!(&mut ahead).is_pending());
        // Both places given back: one more than the reserve is free, read-ahead's turn.
        drop(demand);
        drop(held);
        assert!(poll!(&mut ahead).is_ready());
    }

    #[tokio::test]
    async fn read_ahead_leaves_the_reserve_to_demand_reads() {
        let flow = Flow::new(16, None);
        let mut ahead = Vec::new();
        while let Some(pass) = flow.try_enter_ahead() {
            ahead.push(pass);
        }
        assert_eq!(ahead.len(), 14, "16 places, 2 kept back");
        let demand = futures::FutureExt::now_or_never(flow.enter());
        assert!(demand.is_some(), "a demand read found no free place");
    }
}

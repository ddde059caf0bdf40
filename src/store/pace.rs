//! A decorator that paces block transfers, for any store.
//!
//! EBS allows 1000 PutSnapshotBlock (and 1000 GetSnapshotBlock) requests per second per
//! snapshot; a client that sends more only collects throttling errors. So block
//! requests pass a rate limiter (`--max-rate`, 1000/s by default for EBS), and a window
//! on how many may be in flight: when the service throttles anyway (other clients share
//! the account's quota), the window halves, then grows back by one for every window's
//! worth of successes (additive increase, multiplicative decrease, as TCP does).
//!
//! Put it inside the retry decorator (`RetryStore<PacedStore<S>>`): the window sees
//! every throttled attempt, and each retry is paced like a first try.

use super::*;
use crate::block::{BlockIndex, Digest, HashedBlock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The window is halved at most this often: the throttles that answer requests sent
/// before a cut are not news.
const CUT_INTERVAL: Duration = Duration::from_secs(1);

pub struct PacedStore<S> {
    inner: S,
    /// The pace and its limiter; `None`: no pace, only the window that throttling cuts.
    rate: Option<(NonZeroU32, DefaultDirectRateLimiter)>,
    window: Window,
}

impl<S> std::fmt::Debug for PacedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacedStore").finish_non_exhaustive()
    }
}

impl<S: SnapshotStore> PacedStore<S> {
    /// At most `max_rate` block requests per second (any number without), and
    /// `max_in_flight` at once.
    pub fn new(inner: S, max_rate: Option<NonZeroU32>, max_in_flight: usize) -> Self {
        PacedStore {
            inner,
            rate: max_rate.map(|rate| (rate, limiter(rate))),
            window: Window::new(max_in_flight.max(1)),
        }
    }

    /// How many block requests may be in flight now.
    pub fn window(&self) -> usize {
        self.window.limit()
    }

    async fn paced<T>(
        &self,
        request: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let turn = self.window.turn().await;
        if let Some((_, limiter)) = &self.rate {
            limiter.until_ready().await;
        }
        let result = request.await;
        turn.leave(matches!(result, Err(StoreError::Throttled { .. })));
        result
    }
}

/// `rate` requests a second, in bursts of a tenth of a second's worth at most: a whole
/// second's burst at the start would be throttled by a service that counts over
/// shorter spans.
fn limiter(rate: NonZeroU32) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(rate.get() / 10).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// An adjustable limit on requests in flight.
struct Window {
    permits: Semaphore,
    state: Mutex<WindowState>,
}

struct WindowState {
    limit: usize,
    max: usize,
    /// Successes since the window last grew.
    successes: usize,
    /// Permits to withhold as requests leave, after a cut.
    owed: usize,
    last_cut: Option<Instant>,
}

impl Window {
    fn new(max: usize) -> Self {
        Window {
            permits: Semaphore::new(max),
            state: Mutex::new(WindowState {
                limit: max,
                max,
                successes: 0,
                owed: 0,
                last_cut: None,
            }),
        }
    }

    fn limit(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).limit
    }

    async fn enter(&self) {
        // Permits are given back by `leave`, which decides whether to give them back.
        self.permits.acquire().await.expect("never closed").forget();
    }

    /// A place in the window, for one request.
    async fn turn(&self) -> Turn<'_> {
        self.enter().await;
        Turn {
            window: self,
            left: false,
        }
    }

    fn leave(&self, throttled: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if throttled {
            let due = s.last_cut.is_none_or(|t| t.elapsed() >= CUT_INTERVAL);
            if due && s.limit > 1 {
                let cut = s.limit - s.limit / 2;
                s.limit -= cut;
                s.owed += cut;
                s.successes = 0;
                s.last_cut = Some(Instant::now());
                tracing::warn!(
                    "throttled by the service: {} block requests at once from now on",
                    s.limit
                );
            }
        } else {
            s.successes += 1;
            if s.successes >= s.limit && s.limit < s.max {
                s.successes = 0;
                // One more in flight (or one fewer withheld after a cut).
                self.give_back(&mut s);
                s.limit += 1;
            }
        }
        self.give_back(&mut s);
    }

    /// A request's place, back in the window (unless withheld after a cut).
    fn give_back(&self, s: &mut WindowState) {
        if s.owed > 0 {
            s.owed -= 1;
        } else {
            self.permits.add_permits(1);
        }
    }
}

/// A request's place in the window. Given back when the request ends, and also when it
/// is dropped unfinished (a caller that stopped waiting): a place lost that way would
/// shrink the window for good, down to nothing.
struct Turn<'a> {
    window: &'a Window,
    left: bool,
}

impl Turn<'_> {
    fn leave(mut self, throttled: bool) {
        self.left = true;
        self.window.leave(throttled);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.left {
            let mut s = self.window.state.lock().unwrap_or_else(|e| e.into_inner());
            self.window.give_back(&mut s);
        }
    }
}

/// Only block transfers are paced; every other call goes straight through.
#[async_trait]
impl<S: SnapshotStore> StoreLayer for PacedStore<S> {
    type Inner = S;

    fn inner(&self) -> &S {
        &self.inner
    }

    fn pace(&self, _: Transfer) -> Option<u32> {
        self.rate.as_ref().map(|(rate, _)| rate.get())
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        self.paced(self.inner.put_block(id, index, block, checksum))
            .await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        self.paced(self.inner.get_block(id, index, token)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_window_halves_on_throttling_and_grows_back_one_by_one() {
        let w = Window::new(8);
        for _ in 0..8 {
            w.enter().await;
        }
        w.leave(true);
        assert_eq!(w.limit(), 4);
        // A second throttle right after is an echo of the first: no second cut.
        w.leave(true);
        assert_eq!(w.limit(), 4);
        // Until only the new limit is in flight, leaving requests give nothing back.
        w.leave(false);
        w.leave(false);
        assert_eq!(w.permits.available_permits(), 0);
        // A window's worth of successes grows it by one.
        w.leave(false);
        w.leave(false);
        assert_eq!(w.limit(), 5);
        // Two still in flight, three free: five in all.
        assert_eq!(w.permits.available_permits(), 3);
    }

    #[tokio::test]
    async fn a_request_dropped_unfinished_gives_its_place_back() {
        let store = PacedStore::new(MemoryStore::new(), NonZeroU32::new(1000), 1);
        let never = store.paced(std::future::pending::<StoreResult<()>>());
        let waited = tokio::time::timeout(Duration::from_millis(10), never).await;
        assert!(waited.is_err());
        assert_eq!(store.window.permits.available_permits(), 1);
        let answered = store.paced(async { Ok(()) });
        tokio::time::timeout(Duration::from_secs(5), answered)
            .await
            .expect("the window has room")
            .unwrap();
    }

    #[tokio::test]
    async fn at_most_the_window_is_in_flight() {
        let w = Window::new(2);
        w.enter().await;
        w.enter().await;
        assert_eq!(w.permits.available_permits(), 0);
        w.leave(false);
        assert_eq!(w.permits.available_permits(), 1);
    }
}

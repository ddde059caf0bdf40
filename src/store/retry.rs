//! A decorator that retries what may succeed on a second try, for any store.
//!
//! Errors decide: throttling and service failures (5xx, timeouts, resets) are retried
//! with exponential backoff and jitter; "snapshot not found" is retried only shortly
//! after the snapshot was started or completed, when the service may not know it yet;
//! validation and access errors never are. Each retry is logged with its reason at
//! `warn`, which a cron log shows.

use super::*;
use crate::block::{BlockIndex, Digest, HashedBlock};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles each time, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long after StartSnapshot or CompleteSnapshot "not found" is taken for the
    /// service's lag rather than a missing snapshot.
    pub not_found_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            not_found_window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug)]
pub struct RetryStore<S> {
    inner: S,
    policy: RetryPolicy,
    /// When each snapshot was last started or completed through this store.
    fresh: Mutex<HashMap<SnapshotId, Instant>>,
}

impl<S: SnapshotStore> RetryStore<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        RetryStore {
            inner,
            policy,
            fresh: Mutex::new(HashMap::new()),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn touch(&self, id: &SnapshotId) {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Instant::now());
    }

    fn recently_touched(&self, id: Option<&SnapshotId>) -> bool {
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        id.and_then(|id| fresh.get(id))
            .is_some_and(|t| t.elapsed() < self.policy.not_found_window)
    }

    /// Whether `error` is worth another attempt.
    fn retryable(&self, error: &StoreError, id: Option<&SnapshotId>) -> bool {
        match error {
            StoreError::Throttled { .. } | StoreError::Unavailable { .. } => true,
            StoreError::NotFound { .. } => self.recently_touched(id),
            _ => false,
        }
    }

    /// Delay before retry number `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (between half and all of it) so that clients do not retry in step.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1 << attempt.min(16).saturating_sub(1));
        let capped = exp.min(self.policy.max_delay);
        let mut raw = [0u8; 2];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let fraction = f64::from(u16::from_le_bytes(raw)) / f64::from(u16::MAX);
        capped.mul_f64(0.5 + fraction / 2.0)
    }

    async fn retry<T, F, Fut>(
        &self,
        what: &str,
        id: Option<&SnapshotId>,
        mut call: F,
    ) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if attempt < self.policy.max_attempts && self.retryable(&e, id) => {
                    let delay = self.delay(attempt);
                    tracing::warn!(
                        "{what}: {e}; retrying in {:.1}s (attempt {} of {})",
                        delay.as_secs_f64(),
                        attempt + 1,
                        self.policy.max_attempts
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: SnapshotStore> SnapshotStore for RetryStore<S> {
    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn pace(&self, transfer: Transfer) -> Option<u32> {
        self.inner.pace(transfer)
    }

    async fn start_snapshot(&self, request: StartSnapshot) -> StoreResult<SnapshotInfo> {
        // Safe to repeat: the client token makes a retried start return the same snapshot.
        let info = self
            .retry("StartSnapshot", None, || {
                self.inner.start_snapshot(request.clone())
            })
            .await?;
        self.touch(&info.id);
        Ok(info)
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        let what = format!("PutSnapshotBlock {id} block {index}");
        self.retry(&what, Some(id), || {
            self.inner.put_block(id, index, block.clone(), checksum)
        })
        .await
    }

    async fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        self.retry(&format!("flush {id}"), Some(id), || self.inner.flush(id))
            .await
    }

    async fn prepare_completion(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<()> {
        // Not retried: completion, which is, records what a failure here did not.
        self.inner.prepare_completion(id, count, aggregate).await
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        let status = self
            .retry(&format!("CompleteSnapshot {id}"), Some(id), || {
                self.inner.complete_snapshot(id, count, aggregate)
            })
            .await?;
        self.touch(id);
        Ok(status)
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        self.retry(&format!("ListSnapshotBlocks {id}"), Some(id), || {
            self.inner.list_blocks(id, page.clone())
        })
        .await
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        self.retry(&format!("ListChangedBlocks {second}"), Some(second), || {
            self.inner.list_changed_blocks(first, second, page.clone())
        })
        .await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        self.retry(
            &format!("GetSnapshotBlock {id} block {index}"),
            Some(id),
            || self.inner.get_block(id, index, token),
        )
        .await
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        self.retry(&format!("DescribeSnapshots {id}"), Some(id), || {
            self.inner.describe_snapshot(id)
        })
        .await
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        self.retry("DescribeSnapshots", None, || self.inner.list_snapshots())
            .await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        self.retry(&format!("DeleteSnapshot {id}"), None, || {
            self.inner.delete_snapshot(id)
        })
        .await
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        self.retry(&format!("CreateTags {id}"), Some(id), || {
            self.inner.create_tags(id, tags)
        })
        .await
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        self.retry(&format!("DeleteTags {id}"), Some(id), || {
            self.inner.delete_tags(id, tags)
        })
        .await
    }
}

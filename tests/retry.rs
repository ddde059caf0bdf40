//! The retry decorator: what it retries, what it does not, and that a flaky store then
//! still gives a whole backup.

use async_trait::async_trait;
use ebsnap::block::{BlockIndex, Digest, HashedBlock};
use ebsnap::engine::{self, BackupOptions, NoProgress, RestoreOptions};
use ebsnap::store::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A memory store whose calls fail now and then: every `period`-th call is throttled or
/// answers a 5xx, and puts right after a start find no snapshot, as EBS's may.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    calls: AtomicU64,
    failures: AtomicU64,
    period: u64,
    lagging_puts: AtomicU64,
}

impl Flaky {
    fn new(period: u64) -> Self {
        Flaky {
            inner: MemoryStore::new(),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            period,
            lagging_puts: AtomicU64::new(0),
        }
    }

    fn hiccup(&self) -> StoreResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n % self.period == self.period - 1 {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(if n.is_multiple_of(2) {
                StoreError::Throttled {
                    message: "slow down".into(),
                }
            } else {
                StoreError::Unavailable {
                    message: "HTTP 503".into(),
                }
            });
        }
        Ok(())
    }
}

#[async_trait]
impl StoreLayer for Flaky {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn identity(&self) -> String {
        "flaky".into()
    }
    async fn start_snapshot(&self, r: StartSnapshot) -> StoreResult<SnapshotInfo> {
        let info = self.inner.start_snapshot(r).await?;
        self.lagging_puts.store(2, Ordering::SeqCst);
        self.hiccup().map(|()| info)
    }
    async fn put_block(
        &self,
        id: &SnapshotId,
        i: BlockIndex,
        b: HashedBlock,
        c: Digest,
    ) -> StoreResult<()> {
        if self.lagging_puts.load(Ordering::SeqCst) > 0 {
            self.lagging_puts.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::snapshot_not_found(id));
        }
        self.hiccup()?;
        self.inner.put_block(id, i, b, c).await
    }
    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        n: u64,
        a: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        self.hiccup()?;
        self.inner.complete_snapshot(id, n, a).await
    }
    async fn list_blocks(&self, id: &SnapshotId, p: PageRequest) -> StoreResult<BlockPage> {
        self.hiccup()?;
        self.inner.list_blocks(id, p).await
    }
    async fn list_changed_blocks(
        &self,
        f: Option<&SnapshotId>,
        s: &SnapshotId,
        p: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        self.hiccup()?;
        self.inner.list_changed_blocks(f, s, p).await
    }
    async fn get_block(
        &self,
        id: &SnapshotId,
        i: BlockIndex,
        t: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        self.hiccup()?;
        self.inner.get_block(id, i, t).await
    }
    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        self.hiccup()?;
        self.inner.describe_snapshot(id).await
    }
    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        self.hiccup()?;
        self.inner.list_snapshots().await
    }
    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        self.hiccup()?;
        self.inner.delete_snapshot(id).await
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_store_still_gives_a_whole_backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let mut data = vec![0u8; 40 * 524_288 + 77];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8 ^ (i / 524_288) as u8;
    }
    std::fs::write(&image, &data).unwrap();
    let flaky = Arc::new(RetryStore::new(Flaky::new(7), fast()));
    let store: Arc<dyn SnapshotStore> = flaky.clone();
    let report = engine::backup(
        store.clone(),
        &image,
        &BackupOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.blocks_written, 41);
    let out = dir.path().join("out");
    let id = report.snapshot_id.unwrap().parse().unwrap();
    engine::restore(store, &id, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(
        flaky.inner().failures.load(Ordering::SeqCst) > 5,
        "failures were injected, and survived"
    );
}

#[tokio::test]
async fn validation_errors_and_unknown_snapshots_are_not_retried() {
    let flaky = RetryStore::new(Flaky::new(1_000_000), fast());
    let err = flaky
        .start_snapshot(StartSnapshot::new(0))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(ValidationReason::InvalidVolumeSize));
    let calls = flaky.inner().calls.load(Ordering::SeqCst);
    let missing: SnapshotId = "snap-0123456789abcdef0".parse().unwrap();
    assert!(matches!(
        flaky.describe_snapshot(&missing).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        flaky.inner().calls.load(Ordering::SeqCst),
        calls + 1,
        "a snapshot never started here is not waited for"
    );
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt() {
    let always = RetryStore::new(
        Flaky::new(1),
        RetryPolicy {
            max_attempts: 3,
            ..fast()
        },
    );
    let err = always.list_snapshots().await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::Throttled { .. } | StoreError::Unavailable { .. }
    ));
    assert_eq!(always.inner().calls.load(Ordering::SeqCst), 3);
}

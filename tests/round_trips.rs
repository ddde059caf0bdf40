//! Over a WAN each round trip costs about 100 ms: a restore asks for its first listing
//! (and an incremental one, for its base's description) beside the snapshot's own
//! description, not after it.

use async_trait::async_trait;
use ebsnap::engine::{self, BackupOptions, NoProgress, RestoreOptions};
use ebsnap::store::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a gated description waits for the calls it expects beside it: far longer
/// than they take when they are sent together, short enough to end a serial restore.
const PATIENCE: Duration = Duration::from_secs(5);

/// A memory store that logs the calls it starts and answers; once told a snapshot, it
/// holds that snapshot's description back until the calls it should go beside have
/// started (or [`PATIENCE`] ran out), as a slow link would.
#[derive(Debug, Default)]
struct Gate {
    inner: MemoryStore,
    log: Mutex<Vec<String>>,
    /// The snapshot whose description is held back, and the calls it waits for.
    held: Mutex<Option<(SnapshotId, Vec<String>)>>,
}

impl Gate {
    fn note(&self, event: String) {
        self.log.lock().unwrap().push(event);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn hold(&self, id: &SnapshotId, beside: &[String]) {
        self.log.lock().unwrap().clear();
        *self.held.lock().unwrap() = Some((id.clone(), beside.to_vec()));
    }

    /// Waits while `id` is held and what it waits for has not all started.
    async fn wait_if_held(&self, id: &SnapshotId) {
        let Some((held, beside)) = self.held.lock().unwrap().clone() else {
            return;
        };
        let deadline = Instant::now() + PATIENCE;
        let started = |log: &[String]| beside.iter().all(|b| log.contains(b));
        while held == *id && !started(&self.log()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[async_trait]
impl StoreLayer for Gate {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn identity(&self) -> String {
        "gate".into()
    }
    async fn list_blocks(&self, id: &SnapshotId, p: PageRequest) -> StoreResult<BlockPage> {
        self.note(format!("list {id}"));
        self.inner.list_blocks(id, p).await
    }
    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        p: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let from = first.map_or("-".to_owned(), |f| f.to_string());
        self.note(format!("list changes {from}..{second}"));
        self.inner.list_changed_blocks(first, second, p).await
    }
    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        self.note(format!("describe {id}"));
        self.wait_if_held(id).await;
        self.note(format!("described {id}"));
        self.inner.describe_snapshot(id).await
    }
}

/// Backs up `data` into the store (a child of the last backup, if any, in `state`).
async fn backup(store: &Arc<Gate>, image: &std::path::Path, data: &[u8]) -> SnapshotId {
    std::fs::write(image, data).unwrap();
    let options = BackupOptions {
        state_dir: Some(image.with_file_name("state")),
        ..BackupOptions::default()
    };
    let report = engine::backup(store.clone(), image, &options, &NoProgress)
        .await
        .unwrap();
    report.snapshot_id.unwrap().parse().unwrap()
}

async fn restore(store: &Arc<Gate>, id: &SnapshotId, out: &std::path::Path) {
    let options = RestoreOptions {
        state_dir: Some(out.with_file_name("restore-state")),
        force: true,
        ..RestoreOptions::default()
    };
    engine::restore(store.clone(), id, out, &options, &NoProgress)
        .await
        .unwrap();
}

/// Where `event` stands in `log`, which must hold it once: a call asked for ahead is
/// not asked for again.
fn at(log: &[String], event: &str) -> usize {
    let times = log.iter().filter(|e| *e == event).count();
    assert_eq!(times, 1, "{event:?} once in {log:#?}");
    log.iter().position(|e| e == event).expect("counted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_lists_beside_the_snapshots_description() {
    let dir = tempfile::tempdir().unwrap();
    let (image, out) = (dir.path().join("image"), dir.path().join("out"));
    let store = Arc::new(Gate::default());
    let mut data = vec![7u8; 3 * 524_288];
    let first = backup(&store, &image, &data).await;
    data[524_288] = 8;
    let second = backup(&store, &image, &data).await;

    let listed = format!("list {first}");
    store.hold(&first, std::slice::from_ref(&listed));
    restore(&store, &first, &out).await;
    let log = store.log();
    assert!(
        at(&log, &listed) < at(&log, &format!("described {first}")),
        "a full restore lists while its snapshot is described: {log:#?}"
    );

    let changes = format!("list changes {first}..{second}");
    let base = format!("describe {first}");
    store.hold(&second, &[changes.clone(), base.clone()]);
    // The base is the one the restore record names, as a runbook's rerun finds it.
    restore(&store, &second, &out).await;
    let log = store.log();
    let described = at(&log, &format!("described {second}"));
    assert!(
        at(&log, &changes) < described && at(&log, &base) < described,
        "an incremental restore lists the changes and describes its base beside: {log:#?}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

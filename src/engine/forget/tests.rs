//! Deletion as a careful operator expects it, on the memory store behind a layer that
//! makes one delete meet what another host did just before: the snapshot already
//! gone, a child started on it, or the service failing.

use super::*;
use crate::engine::{NoProgress, MANAGED_TAG, SOURCE_PATH_TAG};
use crate::store::conformance::snapshot_with;
use crate::store::{MemoryStore, StartSnapshot, StoreLayer, StoreResult, Tag};
use async_trait::async_trait;

#[derive(Debug, Clone, Copy)]
enum Meets {
    AlreadyGone,
    NewChild,
    Failure,
}

/// Deletes go to the memory store, but the delete of `target` first meets `meets`.
#[derive(Debug)]
struct Racing {
    inner: MemoryStore,
    target: SnapshotId,
    meets: Meets,
}

#[async_trait]
impl StoreLayer for Racing {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        if *id == self.target {
            match self.meets {
                Meets::AlreadyGone => self.inner.delete_snapshot(id).await?,
                Meets::NewChild => {
                    let mut child = StartSnapshot::new(1);
                    child.parent = Some(id.clone());
                    self.inner.start_snapshot(child).await?;
                }
                Meets::Failure => {
                    return Err(StoreError::Unavailable {
                        message: "connection reset".into(),
                    })
                }
            }
        }
        self.inner.delete_snapshot(id).await
    }
}

/// Four ebsnap snapshots of `/src`, a chain, oldest first.
async fn chain(store: &MemoryStore) -> Vec<SnapshotId> {
    let mut ids: Vec<SnapshotId> = Vec::new();
    for n in 0..4 {
        let id = snapshot_with(store, ids.last(), 1, &[(n, n + 1)]).await;
        let tags = [
            Tag::new(SOURCE_PATH_TAG, "/src"),
            Tag::new(MANAGED_TAG, "true"),
        ];
        store.create_tags(&id, &tags).await.unwrap();
        ids.push(id);
    }
    ids
}

async fn forget_with(
    meets: Meets,
    target: usize,
) -> (Result<ForgetReport>, Vec<SnapshotId>, Arc<Racing>) {
    let inner = MemoryStore::new();
    let ids = chain(&inner).await;
    let store = Arc::new(Racing {
        inner,
        target: ids[target].clone(),
        meets,
    });
    let options = ForgetOptions {
        policy: KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        },
        ..ForgetOptions::default()
    };
    let result = forget(store.clone(), &options, &NoProgress).await;
    (result, ids, store)
}

fn removed(report: &ForgetReport) -> Vec<&str> {
    report
        .removed
        .iter()
        .map(|e| e.snapshot_id.as_str())
        .collect()
}

#[tokio::test]
async fn a_snapshot_already_gone_counts_as_removed() {
    let (result, ids, store) = forget_with(Meets::AlreadyGone, 1).await;
    let report = result.unwrap();
    assert_eq!(
        removed(&report),
        [ids[0].as_str(), ids[1].as_str(), ids[2].as_str()]
    );
    assert_eq!(store.inner.list_snapshots().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_snapshot_that_got_a_child_meanwhile_is_kept() {
    let (result, ids, store) = forget_with(Meets::NewChild, 1).await;
    let report = result.unwrap();
    assert_eq!(removed(&report), [ids[0].as_str(), ids[2].as_str()]);
    let kept = report
        .kept
        .iter()
        .find(|e| e.snapshot_id == ids[1].as_str())
        .unwrap();
    assert_eq!(kept.reasons, ["parent of a snapshot started since"]);
    assert_eq!(
        store.inner.list_snapshots().await.unwrap().len(),
        3,
        "1, 3 and the child"
    );
}

#[tokio::test]
async fn a_forget_failing_midway_says_what_it_removed() {
    let (result, ids, store) = forget_with(Meets::Failure, 1).await;
    let Err(Error::ForgetIncomplete { report, source }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(removed(&report), [ids[0].as_str()]);
    assert!(source.to_string().contains("connection reset"), "{source}");
    assert_eq!(store.inner.list_snapshots().await.unwrap().len(), 3);
    // Nothing done yet: the error alone.
    let (result, _, _) = forget_with(Meets::Failure, 0).await;
    assert!(matches!(result, Err(Error::Store { .. })), "{result:?}");
}

#[tokio::test]
async fn an_empty_policy_is_refused_and_a_dry_run_deletes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let ids = chain(&store).await;
    let empty = ForgetOptions::default();
    let refused = forget(store.clone(), &empty, &NoProgress).await;
    assert!(matches!(refused, Err(Error::EmptyPolicy)), "{refused:?}");
    let dry = ForgetOptions {
        policy: KeepPolicy {
            last: Some(2),
            ..KeepPolicy::default()
        },
        dry_run: true,
        ..ForgetOptions::default()
    };
    let report = forget(store.clone(), &dry, &NoProgress).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(removed(&report), [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(store.list_snapshots().await.unwrap().len(), 4);
}

//! `engine::copy` when things go wrong: a completion whose answer was lost, a target
//! that refuses a block, a source whose block is damaged. Nothing half-made stays on
//! the target, and what can be finished is finished by the rerun.

mod common;

use common::rigged::{unavailable, Call, Rigged, Then};
use common::*;
use ebsnap::block::{BlockIndex, Digest};
use ebsnap::engine::{self, BackupOptions, CopyOptions, CopySelection, Error, NoProgress};
use ebsnap::store::*;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

/// A memory store with one backup of a 12-block image in it: the store and the snapshot.
async fn source_with_a_backup(env: &Env) -> (Arc<dyn SnapshotStore>, SnapshotId) {
    let image = env.dense_image("disk.img", 12, 3);
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::new());
    let report = engine::backup(
        store.clone(),
        &image,
        &BackupOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    (store, report.snapshot_id.unwrap().parse().unwrap())
}

fn options(env: &Env) -> CopyOptions {
    CopyOptions {
        state_dir: Some(env.path("state")),
        workers: 4,
        ..CopyOptions::default()
    }
}

async fn copy(
    from: &Arc<dyn SnapshotStore>,
    to: &Arc<Rigged>,
    id: &SnapshotId,
    env: &Env,
) -> ebsnap::Result<engine::CopyReport> {
    let selection = CopySelection::Snapshots(vec![id.clone()]);
    let to: Arc<dyn SnapshotStore> = to.clone();
    engine::copy(from.clone(), to, &selection, &options(env), &NoProgress).await
}

#[tokio::test]
async fn a_completion_whose_answer_was_lost_is_finished_by_the_rerun() {
    let env = Env::new();
    let (from, id) = source_with_a_backup(&env).await;
    let lost = AtomicBool::new(false);
    let to = Arc::new(Rigged::new(
        |_| Then::Answer,
        move |call| match call {
            Call::Complete(_) if !lost.swap(true, SeqCst) => Then::Fail(unavailable()),
            _ => Then::Answer,
        },
    ));
    let first = copy(&from, &to, &id, &env).await;
    assert!(matches!(first, Err(Error::Resumable { .. })), "{first:?}");
    let again = copy(&from, &to, &id, &env).await.unwrap();
    // The rerun sent the completion again, and found the copy made.
    assert!(again.copied.is_empty(), "{again:?}");
    assert_eq!(again.skipped.len(), 1);
    let all = to.inner.list_snapshots().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, SnapshotStatus::Completed);
    assert_eq!(all[0].changed_blocks_count, Some(12));
}

#[tokio::test]
async fn a_refused_block_leaves_no_pending_copy() {
    let env = Env::new();
    let (from, id) = source_with_a_backup(&env).await;
    let to = Arc::new(Rigged::new(
        |call| match call {
            Call::Put(_, BlockIndex(5)) => Then::Fail(StoreError::invalid(
                ValidationReason::InvalidBlock,
                "refused (rigged)",
            )),
            _ => Then::Answer,
        },
        |_| Then::Answer,
    ));
    let first = copy(&from, &to, &id, &env).await;
    assert!(
        matches!(&first, Err(e) if e.store_error().is_some()),
        "{first:?}"
    );
    assert!(to.inner.list_snapshots().await.unwrap().is_empty());
    assert!(
        no_journals(&env),
        "the journal is given up with its snapshot"
    );
}

/// A source store that hands out one block with data that does not match its checksum.
#[derive(Debug)]
struct Damaged(Arc<dyn SnapshotStore>);

#[async_trait::async_trait]
impl StoreLayer for Damaged {
    type Inner = dyn SnapshotStore + 'static;
    fn inner(&self) -> &(dyn SnapshotStore + 'static) {
        &*self.0
    }
    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let mut block = self.0.get_block(id, index, token).await?;
        if index == BlockIndex(7) {
            let mut data = block.data.to_vec();
            data[100] ^= 1;
            block.data = data.into();
        }
        Ok(block)
    }
}

#[tokio::test]
async fn a_damaged_source_block_stops_the_copy_naming_it() {
    let env = Env::new();
    let (from, id) = source_with_a_backup(&env).await;
    let damaged: Arc<dyn SnapshotStore> = Arc::new(Damaged(from));
    let to = Arc::new(Rigged::new(|_| Then::Answer, |_| Then::Answer));
    let first = copy(&damaged, &to, &id, &env).await;
    match first {
        Err(Error::BadBlock {
            snapshot,
            index,
            expected,
            actual,
        }) => {
            assert_eq!((snapshot, index), (id, BlockIndex(7)));
            assert_ne!(expected, actual);
            assert_ne!(actual, Digest::zero_block());
        }
        other => panic!("expected a bad block, got {other:?}"),
    }
    assert!(to.inner.list_snapshots().await.unwrap().is_empty());
    assert!(no_journals(&env));
}

fn no_journals(env: &Env) -> bool {
    std::fs::read_dir(env.path("state/uploads"))
        .into_iter()
        .flatten()
        .flatten()
        .all(|e| e.path().extension().is_none_or(|x| x != "journal"))
}

#[test]
fn a_copy_into_its_own_store_or_of_nothing_is_refused() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 4);
    env.backup(&image);
    let img = image.to_str().unwrap();
    let store = env.store();
    let same = format!("{}/.", store.display());
    for to in [store.to_str().unwrap(), &same] {
        let out = env
            .ebsnap(&["copy", "--source", img, "--to", to])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--to {to}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is the store copied from"));
    }
    let elsewhere = env.path("elsewhere");
    let elsewhere = elsewhere.to_str().unwrap();
    let out = env.ebsnap(&["copy", "--to", elsewhere]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "neither snapshots nor --source");
    let other = env.path("other.img");
    let out = env
        .ebsnap(&[
            "copy",
            "--source",
            other.to_str().unwrap(),
            "--to",
            elsewhere,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no completed snapshot of"), "{stderr}");
}

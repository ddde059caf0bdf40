//! What the conformance tests build and read back: blocks from a seed, snapshots from
//! a list of blocks, and a snapshot's contents as digests.

use super::super::*;
use crate::block::{LinearAggregate, BLOCK_SIZE};
use bytes::Bytes;
use std::collections::BTreeMap;

/// A block whose bytes depend on `seed`.
pub fn block(seed: u64) -> HashedBlock {
    let mut data = vec![0u8; BLOCK_SIZE];
    for (i, chunk) in data.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64).to_le_bytes());
    }
    HashedBlock::new(Bytes::from(data)).expect("one block")
}

/// Writes `blocks` (index, seed; seed 0 = a zero block) into a new snapshot and completes it.
pub async fn snapshot_with(
    store: &dyn SnapshotStore,
    parent: Option<&SnapshotId>,
    gib: u64,
    blocks: &[(u64, u64)],
) -> SnapshotId {
    let mut req = StartSnapshot::new(gib);
    req.parent = parent.cloned();
    snapshot_from(store, req, blocks).await
}

/// [`snapshot_with`], started with `req`.
pub async fn snapshot_from(
    store: &dyn SnapshotStore,
    req: StartSnapshot,
    blocks: &[(u64, u64)],
) -> SnapshotId {
    let (id, own) = pending_from(store, req, blocks).await;
    // What a resumable backup does at each checkpoint.
    store.flush(&id).await.expect("flush a pending snapshot");
    let status = store
        .complete_snapshot(&id, own.len() as u64, Some(aggregate_of(&own)))
        .await
        .expect("complete");
    assert_eq!(status, SnapshotStatus::Completed);
    store.flush(&id).await.expect("flush a completed snapshot");
    id
}

/// A snapshot started with `req`, holding `blocks` (index, seed; seed 0 = a zero
/// block) and not completed: its id, and the digests of the blocks it holds of its own.
pub async fn pending_from(
    store: &dyn SnapshotStore,
    req: StartSnapshot,
    blocks: &[(u64, u64)],
) -> (SnapshotId, BTreeMap<u64, Digest>) {
    let info = store.start_snapshot(req).await.expect("start");
    assert_eq!(info.status, SnapshotStatus::Pending);
    assert!(info.block_size_ok());
    let mut own = BTreeMap::new();
    for &(index, seed) in blocks {
        let b = if seed == 0 {
            HashedBlock::zero()
        } else {
            block(seed)
        };
        own.insert(index, b.digest());
        store
            .put_block(&info.id, BlockIndex(index), b.clone(), b.digest())
            .await
            .expect("put");
    }
    (info.id, own)
}

/// The LINEAR aggregate of `digests` (index to digest).
pub fn aggregate_of(digests: &BTreeMap<u64, Digest>) -> Digest {
    let mut agg = LinearAggregate::new();
    for (i, d) in digests {
        agg.push(BlockIndex(*i), d).unwrap();
    }
    agg.finish()
}

/// Every block of a snapshot, read through the list and get calls, checksums checked.
pub async fn read_all(store: &dyn SnapshotStore, id: &SnapshotId) -> BTreeMap<u64, Digest> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = store
            .list_blocks(id, PageRequest::from_token(token))
            .await
            .expect("list");
        for b in page.blocks {
            let got = store.get_block(id, b.index, &b.token).await.expect("get");
            assert_eq!(
                Digest::of(&got.data),
                got.checksum,
                "block {} of {id}",
                b.index
            );
            assert!(
                out.insert(b.index.0, got.checksum).is_none(),
                "block {} listed twice",
                b.index
            );
        }
        token = page.next_token;
        if token.is_none() {
            return out;
        }
    }
}

pub(super) async fn changed_indexes(
    store: &dyn SnapshotStore,
    first: Option<&SnapshotId>,
    second: &SnapshotId,
) -> Vec<(u64, bool, bool)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_changed_blocks(first, second, PageRequest::from_token(token))
            .await
            .expect("changed");
        out.extend(
            page.blocks
                .iter()
                .map(|b| (b.index.0, b.first_token.is_some(), b.second_token.is_some())),
        );
        token = page.next_token;
        if token.is_none() {
            return out;
        }
    }
}

pub(super) fn digests(blocks: &[(u64, u64)]) -> BTreeMap<u64, Digest> {
    blocks
        .iter()
        .map(|&(i, s)| {
            (
                i,
                if s == 0 {
                    Digest::zero_block()
                } else {
                    block(s).digest()
                },
            )
        })
        .collect()
}

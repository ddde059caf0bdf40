//! The read side of a backup, in two stages. A thread of its own reads the source in
//! ascending block order, a batch ahead ([`super::fetch`]); this one hashes each batch
//! in parallel (rayon) and hands the batches, still in order, to the async side through
//! a bounded channel. Memory is bounded by the channels: never more than a few batches
//! exist at once.
//!
//! Each block is classified against the parent ([`Baseline`]): zeros are recognised
//! without hashing; a data block gets a BLAKE3 digest for change detection, and the
//! SHA-256 the store needs only when it differs from what the parent holds.

use super::baseline::{Baseline, ParentBlock};
use super::fetch::{spawn_fetcher, Fetched, FETCHED_AHEAD};
use crate::block::manifest::{content_digest, ContentDigest};
use crate::block::{is_zero, BlockIndex, BufferPool, HashedBlock, Source};
use crate::engine::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Blocks read and hashed together: enough to keep both cores busy, small enough to
/// keep memory low. The batch being read, the one being hashed, the one waiting for
/// the writer and the one being sent all hold their buffers: 16 blocks (8 MiB)
/// beside what is in flight.
pub(crate) const BATCH_BLOCKS: usize = 4;
/// Batches waiting for the writer. Reading runs ahead of the hashing already
/// ([`super::fetch`]): one batch here is enough to smooth the hand-off.
const BATCHES_AHEAD: usize = 1;

/// One block of the source, as read and compared with the parent.
pub(crate) enum ReadBlock {
    /// All zeros (or a hole): detected without hashing.
    Zero(BlockIndex),
    /// The same content as the parent's block.
    Unchanged(BlockIndex, ContentDigest),
    /// Content the parent does not hold here (its change-detection digest, when the
    /// backup keeps a manifest).
    Changed(BlockIndex, HashedBlock, Option<ContentDigest>),
}

impl ReadBlock {
    pub fn index(&self) -> BlockIndex {
        match self {
            ReadBlock::Zero(i) | ReadBlock::Unchanged(i, _) | ReadBlock::Changed(i, _, _) => *i,
        }
    }
}

/// Starts reading `source`; batches arrive in ascending block order. `in_flight` is how
/// many blocks the writer may hold at once beyond the batches, so that the buffer pool
/// keeps enough spares never to allocate in steady state. With `content_digests`,
/// data blocks get their BLAKE3 digest (for a manifest, and to compare with one);
/// without, that hashing is skipped.
pub(crate) fn spawn_reader(
    source: Arc<Source>,
    baseline: Arc<Baseline>,
    volume_blocks: u64,
    in_flight: usize,
    content_digests: bool,
) -> mpsc::Receiver<Result<Vec<ReadBlock>>> {
    let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
    let batches = BATCHES_AHEAD + FETCHED_AHEAD + 3;
    let pool = BufferPool::new(in_flight + batches * BATCH_BLOCKS);
    let path = source.path().to_owned();
    let fetched = spawn_fetcher(source, baseline.clone(), volume_blocks, pool.clone());
    tokio::task::spawn_blocking(move || {
        let mut next = BlockIndex(0);
        let hash = || hash_all(fetched, &baseline, &pool, content_digests, &tx, &mut next);
        // Batches that stop coming must not look like the end of the source: the
        // snapshot would complete without the rest. A panic in either stage says so.
        if !std::panic::catch_unwind(std::panic::AssertUnwindSafe(hash)).unwrap_or(false) {
            let _ = tx.blocking_send(Err(Error::ReadSource {
                path,
                index: next,
                source: std::io::Error::other("reading stopped before the end (a bug)"),
            }));
        }
    });
    rx
}

/// Hashes the fetched batches in order and sends them on: `true` once the end
/// marker came (or the writer gave up, or a failure was passed on), `false` if the
/// batches stopped coming before it. `next` follows the first block not yet sent on.
fn hash_all(
    fetched: std::sync::mpsc::Receiver<Result<Vec<Fetched>>>,
    baseline: &Baseline,
    pool: &Arc<BufferPool>,
    content_digests: bool,
    tx: &mpsc::Sender<Result<Vec<ReadBlock>>>,
    next: &mut BlockIndex,
) -> bool {
    for batch in fetched {
        let blocks = match batch {
            Ok(blocks) if blocks.is_empty() => return true,
            Ok(blocks) => blocks,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return true;
            }
        };
        *next = blocks[0].index;
        let after = blocks[blocks.len() - 1].index.next();
        let classified = blocks
            .into_par_iter()
            .map(|block| classify(baseline, pool, block, content_digests));
        // A closed channel means the writer gave up: stop (and so stop reading).
        if tx.blocking_send(Ok(classified.collect())).is_err() {
            return true;
        }
        *next = after;
    }
    false
}

/// Classifies one block as read against the parent.
fn classify(
    baseline: &Baseline,
    pool: &Arc<BufferPool>,
    fetched: Fetched,
    content_digests: bool,
) -> ReadBlock {
    let Fetched { index, data } = fetched;
    let Some(buf) = data else {
        return ReadBlock::Zero(index);
    };
    if is_zero(&buf) {
        pool.recycle(buf);
        return ReadBlock::Zero(index);
    }
    // Only a block the parent holds data for can be unchanged: its BLAKE3 digest alone
    // tells. Any other is uploaded, and its SHA-256 goes first: that pass brings the
    // block from memory at SHA-256's slower pace, so BLAKE3 then finds it in the cache
    // (about 0.08 CPU-s per GiB less than the other way round; O_DIRECT reads land in
    // memory, not in the cache).
    let mut digest = None;
    if content_digests && !baseline.was_put(index) {
        if let ParentBlock::Data(held) = baseline.block(index) {
            let d = content_digest(&buf);
            if d == held {
                pool.recycle(buf);
                return ReadBlock::Unchanged(index, d);
            }
            digest = Some(d);
        }
    }
    let block = HashedBlock::new(pool.freeze(buf)).expect("a whole block");
    let digest = digest.or_else(|| content_digests.then(|| content_digest(block.data())));
    ReadBlock::Changed(index, block, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `hash_all` over `batches` of zero blocks; its verdict and what it sent.
    fn hashed(batches: Vec<Vec<u64>>) -> (bool, usize, BlockIndex) {
        let (fetched_tx, fetched) = std::sync::mpsc::channel();
        for batch in batches {
            let blocks = batch.into_iter().map(|i| Fetched {
                index: BlockIndex(i),
                data: None,
            });
            fetched_tx.send(Ok(blocks.collect())).unwrap();
        }
        drop(fetched_tx);
        let (tx, mut rx) = mpsc::channel(8);
        let (pool, baseline) = (BufferPool::new(0), Baseline::none(false));
        let mut next = BlockIndex(0);
        let ended = hash_all(fetched, &baseline, &pool, true, &tx, &mut next);
        drop(tx);
        let mut sent = 0;
        while let Ok(batch) = rx.try_recv() {
            sent += batch.unwrap().len();
        }
        (ended, sent, next)
    }

    #[test]
    fn batches_that_stop_without_the_end_marker_are_cut_short() {
        assert_eq!(hashed(vec![vec![0, 1], vec![2]]), (false, 3, BlockIndex(3)));
    }

    #[test]
    fn the_end_marker_ends_the_batches() {
        assert_eq!(hashed(vec![vec![0, 1], vec![]]), (true, 2, BlockIndex(2)));
    }
}

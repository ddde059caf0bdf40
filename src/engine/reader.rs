//! The read side of a backup: a blocking thread walks the source's data blocks in
//! ascending order, reads and hashes them in parallel batches (rayon), and hands the
//! batches, still in order, to the async side through a bounded channel. Memory is
//! bounded by the channel: never more than a few batches exist at once.

use crate::block::{is_zero, BlockIndex, BufferPool, HashedBlock, Source};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Blocks read and hashed together: enough to keep both cores busy, small enough to
/// keep memory low (16 blocks = 8 MiB).
pub(crate) const BATCH_BLOCKS: usize = 16;
/// Batches waiting for the writer: reading runs this far ahead of the uploads.
const BATCHES_AHEAD: usize = 2;

/// One block of the source, as read.
pub(crate) enum ReadBlock {
    /// All zeros: detected without hashing.
    Zero(BlockIndex),
    Data(BlockIndex, HashedBlock),
}

impl ReadBlock {
    pub fn index(&self) -> BlockIndex {
        match self {
            ReadBlock::Zero(i) | ReadBlock::Data(i, _) => *i,
        }
    }
}

/// Starts reading `source`; batches arrive in ascending block order.
/// `in_flight` is how many blocks the writer may hold at once beyond the batches, so
/// that the buffer pool can keep enough spares to never allocate in steady state.
/// With `every_block`, holes are yielded too (as zero blocks), for snapshots that must
/// hold every block.
pub(crate) fn spawn_reader(
    source: Arc<Source>,
    in_flight: usize,
    every_block: bool,
) -> mpsc::Receiver<Result<Vec<ReadBlock>>> {
    let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
    let pool = BufferPool::new(in_flight + (BATCHES_AHEAD + 2) * BATCH_BLOCKS);
    tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(BATCH_BLOCKS);
        let mut blocks = if every_block {
            source.every_block()
        } else {
            source.data_blocks()
        };
        loop {
            batch.clear();
            for next in blocks.by_ref().take(BATCH_BLOCKS) {
                match next {
                    Ok(index) => batch.push(index),
                    Err(e) => {
                        let err = Error::ReadSource {
                            path: source.path().to_owned(),
                            index: batch
                                .last()
                                .map_or(BlockIndex(0), |i: &BlockIndex| i.next()),
                            source: e,
                        };
                        let _ = tx.blocking_send(Err(err));
                        return;
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            let read = read_batch(&source, &pool, &batch);
            let failed = read.is_err();
            // A closed channel means the writer gave up: stop reading.
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
        }
    });
    rx
}

fn read_batch(
    source: &Source,
    pool: &Arc<BufferPool>,
    indexes: &[BlockIndex],
) -> Result<Vec<ReadBlock>> {
    indexes
        .par_iter()
        .map(|&index| read_one(source, pool, index))
        .collect()
}

fn read_one(source: &Source, pool: &Arc<BufferPool>, index: BlockIndex) -> Result<ReadBlock> {
    let mut buf = pool.take();
    source
        .read_block(index, &mut buf)
        .map_err(|e| Error::ReadSource {
            path: source.path().to_owned(),
            index,
            source: e,
        })?;
    if is_zero(&buf) {
        pool.recycle(buf);
        return Ok(ReadBlock::Zero(index));
    }
    let block = HashedBlock::new(pool.freeze(buf)).expect("a whole block");
    Ok(ReadBlock::Data(index, block))
}

//! Restore: a completed snapshot becomes a file or a block device again.
//!
//! Blocks are listed page by page and fetched concurrently; each is checked against its
//! checksum before it is written, so a damaged block stops the restore with an error
//! naming the snapshot and block, and the target (a file) is never put in place.

use super::target::Target;
use super::{completed_snapshot, restored_size, BlockLister, Progress};
use crate::block::{is_zero, BlockIndex, Digest};
use crate::error::{Error, Result};
use crate::store::{BlockRef, SnapshotId, SnapshotStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Overwrite an existing file.
    pub force: bool,
    /// Blocks fetched at once.
    pub workers: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            force: false,
            workers: 16,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot_id: String,
    pub target: String,
    pub target_bytes: u64,
    /// Blocks fetched from the store and written.
    pub blocks_written: u64,
    pub bytes_written: u64,
    /// Blocks the snapshot holds no data for, zeroed on a device.
    pub blocks_zeroed: u64,
    pub seconds: f64,
}

#[derive(Default)]
struct Counts {
    blocks: u64,
    bytes: u64,
    zeroed: u64,
}

pub async fn restore(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    path: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let info = completed_snapshot(&*store, id).await?;
    let size = restored_size(&info);
    let target = Arc::new(Target::open(path, size, options.force, id)?);
    progress.start(&format!("restore {id} -> {}", path.display()), size);
    let result = write_all(store, id, target.clone(), options.workers, progress).await;
    progress.finish();
    let counts = result?;
    let target = Arc::into_inner(target).expect("all writers finished");
    target.finish()?;
    Ok(RestoreReport {
        snapshot_id: id.to_string(),
        target: path.display().to_string(),
        target_bytes: size,
        blocks_written: counts.blocks,
        bytes_written: counts.bytes,
        blocks_zeroed: counts.zeroed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Outcome of one task: blocks written with data, bytes, blocks zeroed.
type Done = (u64, u64, u64);

async fn write_all(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    target: Arc<Target>,
    workers: usize,
    progress: &dyn Progress,
) -> Result<Counts> {
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    let mut tasks: JoinSet<Result<Done>> = JoinSet::new();
    let mut counts = Counts::default();
    let mut add = |done: Done| {
        counts.blocks += done.0;
        counts.bytes += done.1;
        counts.zeroed += done.2;
    };
    let end = BlockIndex(target.blocks());
    let mut next = BlockIndex(0);
    let mut lister = BlockLister::new(&*store, id);
    while let Some(page) = lister.next_page().await? {
        for block in page.into_iter().filter(|b| b.index < end) {
            if block.index < next {
                return Err(Error::Inconsistent {
                    snapshot: id.clone(),
                    message: format!("block {} listed out of order", block.index),
                });
            }
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let (store, id, task_target, gap) =
                (store.clone(), id.clone(), target.clone(), next..block.index);
            next = block.index.next();
            tasks.spawn(async move {
                let _permit = permit;
                let zeroed = zero_gap(&task_target, gap).await?;
                let (blocks, bytes) = fetch_and_write(&*store, &id, block, task_target).await?;
                Ok((blocks, bytes, zeroed))
            });
            while let Some(done) = tasks.try_join_next() {
                add(done.expect("restore task panicked")?);
            }
            progress.set(
                next.offset()
                    .min(target.blocks() * crate::block::BLOCK_SIZE_U64),
            );
        }
    }
    add((0, 0, zero_gap(&target, next..end).await?));
    while let Some(done) = tasks.join_next().await {
        add(done.expect("restore task panicked")?);
    }
    progress.set(target.blocks() * crate::block::BLOCK_SIZE_U64);
    Ok(counts)
}

/// Zeros blocks the snapshot has no data for (only a device needs it). Returns blocks zeroed.
async fn zero_gap(target: &Arc<Target>, gap: std::ops::Range<BlockIndex>) -> Result<u64> {
    if !target.is_device() || gap.is_empty() {
        return Ok(0);
    }
    let target = target.clone();
    let blocks = gap.end.0 - gap.start.0;
    tokio::task::spawn_blocking(move || target.zero_blocks(gap.start, gap.end))
        .await
        .expect("zeroing panicked")?;
    Ok(blocks)
}

async fn fetch_and_write(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    block: BlockRef,
    target: Arc<Target>,
) -> Result<(u64, u64)> {
    let index = block.index;
    let fetched = store
        .get_block(id, index, &block.token)
        .await
        .map_err(Error::block(id, index))?;
    let id = id.clone();
    tokio::task::spawn_blocking(move || {
        let actual = Digest::of(&fetched.data);
        if actual != fetched.checksum {
            return Err(Error::BadBlock {
                snapshot: id,
                index,
                expected: fetched.checksum,
                actual,
            });
        }
        // A file's unwritten ranges already read as zeros: leave them sparse.
        if !target.is_device() && is_zero(&fetched.data) {
            return Ok((1, 0));
        }
        Ok((1, target.write_block(index, &fetched.data)?))
    })
    .await
    .expect("write task panicked")
}

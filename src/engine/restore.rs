//! Restore: a completed snapshot becomes a file or a block device again.
//!
//! A full restore lists every block; an incremental one (`--from BASE`, or the
//! snapshot ebsnap last restored onto the target) lists only the blocks that differ
//! between BASE and the snapshot, fetches those that hold data and zeros those that no
//! longer do. Blocks are fetched concurrently; each is checked against its checksum
//! before it is written, so a damaged block stops the restore with an error naming the
//! snapshot and block, and a new file is never put in place.

use super::pages::{BlockLister, ChangedLister};
use super::state::{
    clear_restore_records, read_restore_record, target_name, write_restore_record, RestoreRecord,
};
use super::target::Target;
use super::{completed_snapshot, restored_size, Progress};
use crate::block::{is_zero, BlockIndex, Digest, BLOCK_SIZE_U64};
use crate::error::{Error, Result};
use crate::store::{
    BlockRef, BlockToken, ChangedBlock, SnapshotId, SnapshotStore, StoreError, ValidationReason,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Overwrite an existing file (full restore).
    pub force: bool,
    /// Blocks fetched at once.
    pub workers: usize,
    /// The target holds this snapshot already: change only what differs.
    pub from: Option<SnapshotId>,
    /// Restore in full even if the target is known to hold an earlier snapshot.
    pub full: bool,
    /// Where restore records live (`$XDG_STATE_HOME/ebsnap`); `None`: none kept.
    pub state_dir: Option<PathBuf>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            force: false,
            workers: 16,
            from: None,
            full: false,
            state_dir: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot_id: String,
    pub target: String,
    pub target_bytes: u64,
    /// The snapshot the target held before, for an incremental restore.
    pub from_snapshot_id: Option<String>,
    /// Blocks fetched from the store.
    pub blocks_fetched: u64,
    /// Blocks written to the target (fetched ones; zero blocks of a new file are left
    /// as holes).
    pub blocks_written: u64,
    pub bytes_written: u64,
    /// Blocks made to read as zeros (a hole punched, or zeros written on a device).
    pub blocks_zeroed: u64,
    pub seconds: f64,
}

#[derive(Default)]
struct Counts {
    fetched: u64,
    written: u64,
    bytes: u64,
    zeroed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.fetched += other.fetched;
        self.written += other.written;
        self.bytes += other.bytes;
        self.zeroed += other.zeroed;
    }
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
    let target_name = target_name(path);
    let identity = store.identity();
    let record = options
        .state_dir
        .as_ref()
        .and_then(|d| read_restore_record(d, &identity, &target_name));
    let base = if options.full {
        None
    } else {
        options
            .from
            .clone()
            .or_else(|| recorded_base(record.as_ref(), path))
    };
    let mut from = None;
    let counts = match base {
        Some(base) => {
            match incremental(&store, &base, id, path, size, options, progress).await {
                Ok(counts) => {
                    from = Some(base.to_string());
                    counts
                }
                // Only a remembered base may silently give way to a full restore; one the
                // user named must work or fail.
                Err(e) if options.from.is_none() && base_unusable(&e) => {
                    tracing::warn!("{target_name} cannot be brought forward from {base} ({e}): restoring in full");
                    full(&store, id, path, size, true, options, progress).await?
                }
                Err(e) => return Err(e),
            }
        }
        None => {
            full(
                &store,
                id,
                path,
                size,
                options.force || record.is_some(),
                options,
                progress,
            )
            .await?
        }
    };
    if let Some(dir) = &options.state_dir {
        let record = RestoreRecord {
            store: identity,
            target: target_name.clone(),
            snapshot_id: id.to_string(),
            target_bytes: size,
        };
        write_restore_record(dir, &record)?;
    }
    Ok(RestoreReport {
        snapshot_id: id.to_string(),
        target: path.display().to_string(),
        target_bytes: size,
        from_snapshot_id: from,
        blocks_fetched: counts.fetched,
        blocks_written: counts.written,
        bytes_written: counts.bytes,
        blocks_zeroed: counts.zeroed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The snapshot the record says the target holds, if the target still looks like it.
fn recorded_base(record: Option<&RestoreRecord>, path: &Path) -> Option<SnapshotId> {
    let record = record?;
    let meta = std::fs::metadata(path).ok()?;
    let plausible = !meta.is_file() || meta.len() == record.target_bytes;
    plausible.then(|| record.snapshot_id.parse().ok()).flatten()
}

/// Whether an incremental restore failed because its base cannot serve (deleted, or of
/// another lineage), before anything was written.
fn base_unusable(e: &Error) -> bool {
    let store_error = match e {
        Error::Store { source, .. }
        | Error::StoreBlock { source, .. }
        | Error::StoreOnly(source) => source,
        _ => return false,
    };
    matches!(store_error, StoreError::NotFound { .. })
        || store_error.reason() == Some(ValidationReason::UnrelatedSnapshots)
}

async fn full(
    store: &Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    path: &Path,
    size: u64,
    force: bool,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Counts> {
    let target = Arc::new(Target::open(path, size, force, id)?);
    forget(options, path)?;
    progress.start(&format!("restore {id} -> {}", path.display()), size);
    let result = write_all(store.clone(), id, target.clone(), options.workers, progress).await;
    progress.finish();
    let counts = result?;
    Arc::into_inner(target)
        .expect("all writers finished")
        .finish()?;
    Ok(counts)
}

async fn incremental(
    store: &Arc<dyn SnapshotStore>,
    base: &SnapshotId,
    id: &SnapshotId,
    path: &Path,
    size: u64,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Counts> {
    // The first page proves the base usable before the target is touched.
    let mut pages = ChangedLister::new(&**store, Some(base), id);
    let first = pages.next_page().await.map_err(Error::store(id))?;
    let base_size = restored_size(&completed_snapshot(&**store, base).await?);
    let target = Arc::new(Target::open_in_place(path, size, id)?);
    forget(options, path)?;
    // A device that held a smaller snapshot keeps old bytes past its end, where neither
    // snapshot has data and no list names a block: zero them. (A file was extended
    // with zeros already.)
    if target.is_device() && size > base_size {
        let grown = target.clone();
        tokio::task::spawn_blocking(move || grown.zero_range(base_size, size))
            .await
            .expect("zeroing panicked")?;
    }
    progress.start(
        &format!("restore {id} -> {} (from {base})", path.display()),
        size,
    );
    let result = write_changed(
        store.clone(),
        id,
        target.clone(),
        first,
        pages,
        options.workers,
        progress,
    )
    .await;
    progress.finish();
    let counts = result?;
    Arc::into_inner(target)
        .expect("all writers finished")
        .finish()?;
    Ok(counts)
}

/// Before a target changes, its record goes: an interrupted restore must never be
/// taken for a finished one.
fn forget(options: &RestoreOptions, path: &Path) -> Result<()> {
    match &options.state_dir {
        Some(dir) => clear_restore_records(dir, &target_name(path)),
        None => Ok(()),
    }
}

async fn write_all(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    target: Arc<Target>,
    workers: usize,
    progress: &dyn Progress,
) -> Result<Counts> {
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    let mut tasks: JoinSet<Result<Counts>> = JoinSet::new();
    let mut counts = Counts::default();
    let end = BlockIndex(target.blocks());
    let mut next = BlockIndex(0);
    let mut lister = BlockLister::new(&*store, id);
    while let Some(page) = lister.next_page().await.map_err(Error::store(id))? {
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
                let mut done = zero_gap(&task_target, gap).await?;
                done.add(fetch_and_write(&*store, &id, block, task_target).await?);
                Ok(done)
            });
            while let Some(done) = tasks.try_join_next() {
                counts.add(done.expect("restore task panicked")?);
            }
            progress.set(next.offset().min(target.blocks() * BLOCK_SIZE_U64));
        }
    }
    counts.add(zero_gap(&target, next..end).await?);
    while let Some(done) = tasks.join_next().await {
        counts.add(done.expect("restore task panicked")?);
    }
    progress.set(target.blocks() * BLOCK_SIZE_U64);
    Ok(counts)
}

/// Applies ListChangedBlocks(base, id): blocks with data in `id` are fetched and
/// written, blocks without are zeroed.
async fn write_changed(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    target: Arc<Target>,
    first: Option<Vec<ChangedBlock>>,
    mut pages: ChangedLister<'_>,
    workers: usize,
    progress: &dyn Progress,
) -> Result<Counts> {
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    let mut tasks: JoinSet<Result<Counts>> = JoinSet::new();
    let mut counts = Counts::default();
    let end = BlockIndex(target.blocks());
    let mut page = first;
    while let Some(blocks) = page {
        for changed in blocks.into_iter().filter(|b| b.index < end) {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let (store, id, task_target, index) =
                (store.clone(), id.clone(), target.clone(), changed.index);
            let token: Option<BlockToken> = changed.second_token;
            tasks.spawn(async move {
                let _permit = permit;
                match token {
                    Some(token) => {
                        fetch_and_write(&*store, &id, BlockRef { index, token }, task_target).await
                    }
                    None => {
                        tokio::task::spawn_blocking(move || {
                            task_target.clear_blocks(index, index.next())
                        })
                        .await
                        .expect("zeroing panicked")?;
                        Ok(Counts {
                            zeroed: 1,
                            ..Counts::default()
                        })
                    }
                }
            });
            while let Some(done) = tasks.try_join_next() {
                counts.add(done.expect("restore task panicked")?);
            }
            progress.set(index.next().offset().min(target.blocks() * BLOCK_SIZE_U64));
        }
        page = pages.next_page().await.map_err(Error::store(id))?;
    }
    while let Some(done) = tasks.join_next().await {
        counts.add(done.expect("restore task panicked")?);
    }
    progress.set(target.blocks() * BLOCK_SIZE_U64);
    Ok(counts)
}

/// Zeros blocks the snapshot has no data for (only a device needs it).
async fn zero_gap(target: &Arc<Target>, gap: std::ops::Range<BlockIndex>) -> Result<Counts> {
    if !target.is_device() || gap.is_empty() {
        return Ok(Counts::default());
    }
    let target = target.clone();
    let blocks = gap.end.0 - gap.start.0;
    tokio::task::spawn_blocking(move || target.zero_blocks(gap.start, gap.end))
        .await
        .expect("zeroing panicked")?;
    Ok(Counts {
        zeroed: blocks,
        ..Counts::default()
    })
}

async fn fetch_and_write(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    block: BlockRef,
    target: Arc<Target>,
) -> Result<Counts> {
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
        let mut done = Counts {
            fetched: 1,
            ..Counts::default()
        };
        if is_zero(&fetched.data) && !target.is_device() {
            // A new file reads zeros where nothing is written; an existing one gets a hole.
            if target.in_place() {
                target.clear_blocks(index, index.next())?;
                done.zeroed = 1;
            }
            return Ok(done);
        }
        done.written = 1;
        done.bytes = target.write_block(index, &fetched.data)?;
        Ok(done)
    })
    .await
    .expect("write task panicked")
}

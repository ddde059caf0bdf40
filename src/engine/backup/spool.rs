//! The spool: where blocks read under a freeze wait for the upload, so that the
//! network never holds a filesystem frozen.
//!
//! Two blocking threads sit between the reader and the sender. The first takes the
//! reader's batches as fast as the disk gives them, writes each changed block to the
//! spool file and passes on a small entry in its place (through an unbounded queue: it
//! never waits for the upload); when the reader is done it thaws, at once. The second
//! reads the blocks back in the same order, checks each against the digest taken when
//! it was read, frees its place in the spool, and hands the batches on to the sender as
//! the reader would have. The spool file is private (0600 in a 0700 directory) and
//! unlinked as soon as it is created: nothing of it outlives the process.

use super::freeze::FreezeStats;
use super::reader::{ReadBlock, BATCH_BLOCKS};
use crate::block::manifest::ContentDigest;
use crate::block::{BlockIndex, BufferPool, Digest, HashedBlock, BLOCK_SIZE_U64};
use crate::engine::{Error, Result};
use crate::sys::Frozen;
use rayon::prelude::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// An open, unlinked spool file and what it holds.
pub(super) struct Spool {
    file: File,
    /// The spool's directory, for messages.
    dir: PathBuf,
    max: u64,
    /// Bytes written and not yet read back.
    live: AtomicU64,
    /// Where the next block goes (places read back become holes, never reused).
    next: AtomicU64,
}

/// A block as it passes through the spool.
enum Entry {
    /// Nothing to keep beyond the entry itself (zeros, unchanged).
    Passed(ReadBlock),
    /// A changed block, at `offset` in the spool.
    Spooled {
        index: BlockIndex,
        offset: u64,
        digest: Digest,
        content: Option<ContentDigest>,
    },
}

/// What ends a frozen read besides its end.
pub(super) struct Limits {
    pub timeout: Duration,
    pub slow_read: Duration,
    pub mountpoints: Vec<PathBuf>,
}

impl Spool {
    pub fn create(dir: &Path, max: u64) -> Result<Spool> {
        let error = |source| Error::Spool {
            path: dir.to_owned(),
            source,
        };
        let name = format!("spool-{}-{}", std::process::id(), unique());
        let path = dir.join(name);
        let file = crate::sys::create_private(&path).map_err(error)?;
        std::fs::remove_file(&path).map_err(error)?;
        Ok(Spool {
            file,
            dir: dir.to_owned(),
            max,
            live: AtomicU64::new(0),
            next: AtomicU64::new(0),
        })
    }

    /// Writes a changed block to the spool; passes anything else on.
    fn put(&self, block: ReadBlock, mountpoints: &[PathBuf]) -> Result<Entry> {
        let ReadBlock::Changed(index, data, content) = block else {
            return Ok(Entry::Passed(block));
        };
        if self.live.load(Ordering::SeqCst) + BLOCK_SIZE_U64 > self.max {
            return Err(Error::SpoolFull {
                dir: self.dir.clone(),
                max: self.max,
                mountpoints: mountpoints.to_vec(),
            });
        }
        let offset = self.next.fetch_add(BLOCK_SIZE_U64, Ordering::SeqCst);
        self.file
            .write_all_at(data.data(), offset)
            .map_err(|e| self.error(e))?;
        self.live.fetch_add(BLOCK_SIZE_U64, Ordering::SeqCst);
        Ok(Entry::Spooled {
            index,
            offset,
            digest: data.digest(),
            content,
        })
    }

    /// The block an entry stands for, read back and checked, its place freed.
    fn take(&self, entry: Entry, pool: &Arc<BufferPool>) -> Result<ReadBlock> {
        let (index, offset, digest, content) = match entry {
            Entry::Passed(block) => return Ok(block),
            Entry::Spooled {
                index,
                offset,
                digest,
                content,
            } => (index, offset, digest, content),
        };
        let mut buf = pool.take();
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| self.error(e))?;
        let _ = crate::sys::punch_hole(&self.file, offset, BLOCK_SIZE_U64);
        self.live.fetch_sub(BLOCK_SIZE_U64, Ordering::SeqCst);
        let block = HashedBlock::new(pool.freeze(buf)).expect("a whole block");
        if block.digest() != digest {
            return Err(self.error(std::io::Error::other(format!(
                "block {index} read back differs from what was read from the source"
            ))));
        }
        Ok(ReadBlock::Changed(index, block, content))
    }

    fn error(&self, source: std::io::Error) -> Error {
        Error::Spool {
            path: self.dir.clone(),
            source,
        }
    }
}

/// A name no other spool of this process has.
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Passes the reader's batches through the spool; `frozen` is thawed as soon as the
/// reader is done (or fails, or the sender gives up). Batches come out in order, as
/// the reader gave them, with an error at the end if the read was not of one moment.
pub(super) fn through(
    reader: mpsc::Receiver<Result<Vec<ReadBlock>>>,
    spool: Spool,
    frozen: Frozen,
    limits: Limits,
    stats: Arc<FreezeStats>,
    in_flight: usize,
) -> mpsc::Receiver<Result<Vec<ReadBlock>>> {
    let spool = Arc::new(spool);
    let (queue, queued) = mpsc::unbounded_channel();
    let writer = spool.clone();
    tokio::task::spawn_blocking(move || {
        let result = fill(reader, &writer, &queue, &frozen, &limits);
        let end = thaw(frozen, result, &limits, &stats);
        if let Err(e) = end {
            let _ = queue.send(Err(e));
        }
    });
    let (tx, rx) = mpsc::channel(2);
    let pool = BufferPool::new(in_flight + 4 * BATCH_BLOCKS);
    tokio::task::spawn_blocking(move || drain(queued, &spool, &pool, &tx));
    rx
}

type Queue = mpsc::UnboundedSender<Result<Vec<Entry>>>;

/// The frozen part: reads every batch into the spool. `Ok` when the reader is done
/// (or the sender gone), with every batch queued.
fn fill(
    mut reader: mpsc::Receiver<Result<Vec<ReadBlock>>>,
    spool: &Spool,
    queue: &Queue,
    frozen: &Frozen,
    limits: &Limits,
) -> Result<()> {
    while let Some(batch) = reader.blocking_recv() {
        if !limits.slow_read.is_zero() {
            std::thread::sleep(limits.slow_read);
        }
        let entries = batch?
            .into_iter()
            .map(|b| spool.put(b, &limits.mountpoints))
            .collect::<Result<Vec<_>>>()?;
        if frozen.elapsed() > limits.timeout {
            return Err(timed_out(limits));
        }
        frozen.check_watchdog()?;
        if queue.send(Ok(entries)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Thaws, and says whether what was read is of one moment: read within the timeout,
/// and nobody thawed the filesystems meanwhile.
fn thaw(frozen: Frozen, read: Result<()>, limits: &Limits, stats: &FreezeStats) -> Result<()> {
    let elapsed = frozen.elapsed();
    let thawed = frozen.thaw();
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    stats.frozen_micros.store(micros, Ordering::Relaxed);
    read?;
    if elapsed > limits.timeout {
        return Err(timed_out(limits));
    }
    thawed?;
    tracing::info!(
        "thawed {} after {:.3}s",
        super::freeze::joined(&limits.mountpoints),
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn timed_out(limits: &Limits) -> Error {
    Error::FreezeTimeout {
        mountpoints: limits.mountpoints.clone(),
        timeout: limits.timeout,
    }
}

/// Reads the spooled blocks back, in order, for the sender.
fn drain(
    mut queued: mpsc::UnboundedReceiver<Result<Vec<Entry>>>,
    spool: &Spool,
    pool: &Arc<BufferPool>,
    tx: &mpsc::Sender<Result<Vec<ReadBlock>>>,
) {
    while let Some(entries) = queued.blocking_recv() {
        let batch = entries.and_then(|entries| {
            entries
                .into_par_iter()
                .map(|e| spool.take(e, pool))
                .collect::<Result<Vec<_>>>()
        });
        let failed = batch.is_err();
        if tx.blocking_send(batch).is_err() || failed {
            return;
        }
    }
}

//! The read side's first stage: a thread of its own walks the blocks a backup looks at,
//! in ascending order, and reads the next batch while the cores hash the one before
//! it ([`super::reader`]).
//!
//! Reading and hashing used to take turns on each core, so the disk sat idle while a
//! block was hashed. One thread reading in order is enough: more reads in flight at
//! once were no faster, and cost more system time in wake-ups.

use super::baseline::Baseline;
use super::reader::BATCH_BLOCKS;
use crate::block::{AlignedBuf, BlockIndex, BufferPool, DataBlocks, Source};
use crate::engine::{Error, Result};
use std::iter::Peekable;
use std::sync::{mpsc, Arc};

/// Batches read and waiting for the hashing, beside the one being read: none. The
/// channel is a rendezvous, so the next batch is read while this one is hashed, and
/// no more: each batch ahead is 2 MiB of peak memory.
pub(super) const FETCHED_AHEAD: usize = 0;

/// One block the backup looks at, as read: its data, or `None` where it is zeros
/// known without reading (a hole of the source, or past its end).
pub(super) struct Fetched {
    pub index: BlockIndex,
    pub data: Option<AlignedBuf>,
}

/// Starts reading `source` ahead of the hashing; batches arrive in ascending order,
/// and an empty one (the end marker) or a failure ends them.
pub(super) fn spawn_fetcher(
    source: Arc<Source>,
    baseline: Arc<Baseline>,
    volume_blocks: u64,
    pool: Arc<BufferPool>,
) -> mpsc::Receiver<Result<Vec<Fetched>>> {
    let (tx, rx) = mpsc::sync_channel(FETCHED_AHEAD);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = fetch_all(&source, &baseline, volume_blocks, &pool, &tx) {
            let _ = tx.send(Err(e));
        }
    });
    rx
}

fn fetch_all(
    source: &Source,
    baseline: &Baseline,
    volume_blocks: u64,
    pool: &Arc<BufferPool>,
    tx: &mpsc::SyncSender<Result<Vec<Fetched>>>,
) -> Result<()> {
    let mut candidates = Candidates::new(source, baseline, volume_blocks);
    let mut batch = Vec::with_capacity(BATCH_BLOCKS);
    let mut reached = BlockIndex(0);
    loop {
        next_batch(&mut candidates, &mut batch, source, &mut reached)?;
        if batch.is_empty() {
            // The end marker: batches that stop without it were cut short.
            let _ = tx.send(Ok(Vec::new()));
            return Ok(());
        }
        let run = dense_run(&batch, source).and_then(|f| fetch_run(source, pool, f, batch.len()));
        let read = match run {
            Some(read) => read,
            // Block by block, so that a failure names its block.
            None => batch
                .iter()
                .map(|&(index, data)| fetch_one(source, pool, index, data))
                .collect::<Result<Vec<_>>>()?,
        };
        // A closed channel means the hashing stopped: stop reading.
        if tx.send(Ok(read)).is_err() {
            return Ok(());
        }
    }
}

/// The next batch of candidates into `batch` (empty at the end). `reached` follows
/// the block after the last candidate, which a failure to find the next one names.
fn next_batch(
    candidates: &mut Candidates,
    batch: &mut Vec<(BlockIndex, bool)>,
    source: &Source,
    reached: &mut BlockIndex,
) -> Result<()> {
    batch.clear();
    for next in candidates.by_ref().take(BATCH_BLOCKS) {
        let candidate = next.map_err(|e| Error::ReadSource {
            path: source.path().to_owned(),
            index: *reached,
            source: e,
        })?;
        *reached = candidate.0.next();
        batch.push(candidate);
    }
    Ok(())
}

/// The first block of `batch` where it is a run of consecutive blocks of the source
/// that may hold data.
fn dense_run(batch: &[(BlockIndex, bool)], source: &Source) -> Option<BlockIndex> {
    let first = batch.first()?.0;
    let consecutive = batch.iter().enumerate().all(|(i, &(index, data))| {
        data && index.0 == first.0 + i as u64 && index.0 < source.block_count()
    });
    consecutive.then_some(first)
}

/// Reads `count` consecutive blocks from `first` on, together; `None` on a failure,
/// which the caller then meets again block by block.
fn fetch_run(
    source: &Source,
    pool: &BufferPool,
    first: BlockIndex,
    count: usize,
) -> Option<Vec<Fetched>> {
    let mut bufs: Vec<AlignedBuf> = (0..count).map(|_| pool.take()).collect();
    if source.read_blocks(first, &mut bufs).is_err() {
        bufs.into_iter().for_each(|buf| pool.recycle(buf));
        return None;
    }
    let fetched = bufs.into_iter().enumerate().map(|(i, buf)| Fetched {
        index: BlockIndex(first.0 + i as u64),
        data: Some(buf),
    });
    Some(fetched.collect())
}

/// Reads one candidate: `data` says whether the source may hold data there.
fn fetch_one(source: &Source, pool: &BufferPool, index: BlockIndex, data: bool) -> Result<Fetched> {
    if !data || index.0 >= source.block_count() {
        return Ok(Fetched { index, data: None });
    }
    let mut buf = pool.take();
    source
        .read_block(index, &mut buf)
        .map_err(|e| Error::ReadSource {
            path: source.path().to_owned(),
            index,
            source: e,
        })?;
    Ok(Fetched {
        index,
        data: Some(buf),
    })
}

/// The blocks a backup looks at, ascending, each with whether it must be read (`true`)
/// or is a hole of the source (`false`, zeros without reading). A new lineage looks at
/// the source's data blocks only; a child also visits the holes where the parent holds
/// data, to zero them.
struct Candidates<'a> {
    data: Peekable<DataBlocks<'a>>,
    baseline: &'a Baseline,
    next: u64,
    end: u64,
    /// The baseline's next zero candidate, as last asked: asked again only once
    /// passed, so that the bitmaps' holes are scanned once, not once per data block.
    zero_next: Option<Option<u64>>,
}

impl<'a> Candidates<'a> {
    /// An encrypted snapshot needs every block of its volume written: past the end of
    /// the source too, where the volume was rounded up to whole GiB.
    fn new(source: &'a Source, baseline: &'a Baseline, volume_blocks: u64) -> Self {
        let volume_end = if baseline.encrypted() {
            volume_blocks
        } else {
            0
        };
        let end = source.block_count().max(baseline.end()).max(volume_end);
        let data = if baseline.encrypted() {
            source.every_block()
        } else {
            source.data_blocks()
        };
        Candidates {
            data: data.peekable(),
            baseline,
            next: 0,
            end,
            zero_next: None,
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = std::io::Result<(BlockIndex, bool)>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.baseline.visits_holes() {
            return self.data.next().map(|r| r.map(|i| (i, true)));
        }
        while self.next < self.end {
            // The next block to look at: the source's next data block, or the next hole
            // where the parent may hold data, whichever comes first. Holes of both are
            // jumped over, never walked.
            let data = match self.data.peek() {
                Some(Ok(d)) => Some(d.0),
                Some(Err(_)) => return self.data.next().map(|r| r.map(|i| (i, true))),
                None => None,
            };
            let zero = match self.zero_candidate() {
                Ok(z) => z,
                Err(e) => return Some(Err(e)),
            };
            let index = match (data, zero) {
                (Some(d), z) if z.is_none_or(|z| d <= z) => {
                    self.data.next();
                    self.next = d + 1;
                    return Some(Ok((BlockIndex(d), true)));
                }
                (_, Some(z)) if z < self.end => BlockIndex(z),
                _ => return None,
            };
            self.next = index.0 + 1;
            if self.baseline.zero_needs_write(index) {
                return Some(Ok((index, false)));
            }
        }
        None
    }
}

impl Candidates<'_> {
    /// The first index at or after `next` where a zero block may need writing. The
    /// answer for an earlier `next` still holds while it has not been passed: nothing
    /// lies between.
    fn zero_candidate(&mut self) -> std::io::Result<Option<u64>> {
        if let Some(known) = self.zero_next {
            if known.is_none_or(|z| z >= self.next) {
                return Ok(known);
            }
        }
        let found = self.baseline.next_zero_candidate(self.next)?;
        self.zero_next = Some(found);
        Ok(found)
    }
}

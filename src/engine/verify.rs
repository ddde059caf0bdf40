//! Verify: read every block of a snapshot back and check it, and optionally compare the
//! snapshot with a disk or image.

use super::pages::{BlockLister, ChangedLister};
use super::{checked_size, completed_snapshot, Progress};
use crate::block::{is_zero, AlignedBuf, BlockIndex, Digest, LinearAggregate, Source};
use crate::engine::flow::{Flow, Pass};
use crate::engine::{Error, Inconsistency, Result};
use crate::store::{SnapshotId, SnapshotStore, Transfer};
use bytes::Bytes;
use futures::stream::{self, TryStreamExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize)]
pub struct VerifyReport {
    pub snapshot_id: String,
    /// Every block matched its checksum, the aggregate matched, and (with `--against`)
    /// the source matched.
    pub ok: bool,
    pub blocks_checked: u64,
    /// Indexes whose data does not match the store's checksum.
    pub bad_blocks: Vec<u64>,
    /// Whether the LINEAR aggregate of the blocks the snapshot wrote matched (`null`
    /// when those blocks cannot be known from the store's lists).
    pub aggregate_ok: Option<bool>,
    pub against: Option<String>,
    /// With `--against`: indexes where the source and the snapshot differ.
    pub different_blocks: Vec<u64>,
    /// With `--against`: whether the source has the size recorded with the snapshot.
    pub size_matches: Option<bool>,
    pub seconds: f64,
}

/// One block read back: its index, data, the store's checksum and the real one.
struct Checked {
    index: BlockIndex,
    /// The block's data, kept only for a comparison with a source.
    data: Option<Bytes>,
    stored: Digest,
    actual: Digest,
    /// Whether the block holds data past the size the snapshot records.
    beyond_size: bool,
    /// The block's place in flight, given back when the block has been looked at: what
    /// is held is bounded by the flow, however slow one early block is.
    _pass: Pass,
}

pub async fn verify(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    against: Option<&Path>,
    workers: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let info = completed_snapshot(&*store, id).await?;
    let source = match against {
        Some(p) => Some(Source::open(p).map_err(|e| Error::OpenSource {
            path: p.to_owned(),
            source: e,
        })?),
        None => None,
    };
    let size = checked_size(&info)?;
    let mut compare = source.as_ref().map(Comparison::new);
    let mut report = VerifyReport {
        snapshot_id: id.to_string(),
        ok: true,
        blocks_checked: 0,
        bad_blocks: Vec::new(),
        aggregate_ok: None,
        against: against.map(|p| p.display().to_string()),
        different_blocks: Vec::new(),
        size_matches: source.as_ref().map(|s| s.size() == size),
        seconds: 0.0,
    };
    let own = own_blocks(&*store, &info).await?;
    let mut aggregate = own.as_ref().map(|_| LinearAggregate::new());
    progress.start(&format!("verify {id}"), size);
    let keep_data = compare.is_some();
    let mut checked = Box::pin(fetch_in_order(&*store, id, workers, keep_data, size));
    while let Some(block) = checked.try_next().await? {
        report.blocks_checked += 1;
        // A damaged block is a bad block, whatever its tail holds.
        if block.beyond_size && block.actual == block.stored {
            return Err(Error::Inconsistent {
                snapshot: id.clone(),
                what: Inconsistency::DataBeyondSize {
                    index: block.index,
                    size,
                },
            });
        }
        if block.actual != block.stored {
            report.bad_blocks.push(block.index.0);
        }
        if let (Some(agg), Some(own)) = (&mut aggregate, &own) {
            if !own.contains(block.index) {
                progress.set(block.index.next().offset().min(size));
                continue;
            }
            agg.push(block.index, &block.stored)
                .map_err(|e| Error::Inconsistent {
                    snapshot: id.clone(),
                    what: Inconsistency::Aggregate(e),
                })?;
        }
        if let (Some(c), Some(data)) = (&mut compare, &block.data) {
            c.snapshot_block(block.index, data, &mut report.different_blocks)?;
        }
        progress.set(block.index.next().offset().min(size));
    }
    if let Some(c) = &mut compare {
        c.rest(&mut report.different_blocks)?;
    }
    progress.set(size);
    progress.finish();
    report.aggregate_ok = aggregate.map(|a| Some(a.finish()) == info.aggregate);
    report.ok = report.bad_blocks.is_empty()
        && report.aggregate_ok != Some(false)
        && report.different_blocks.is_empty()
        && report.size_matches != Some(false);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The blocks a snapshot wrote itself, which its aggregate covers: all it holds for a
/// snapshot without a parent; for a child, the blocks that differ from its parent, when
/// their number is the number the snapshot recorded (a client may have rewritten a
/// block with the same data, which no list call can show: then the aggregate is not
/// checked). `None` when it cannot be known.
async fn own_blocks(
    store: &dyn SnapshotStore,
    info: &crate::store::SnapshotInfo,
) -> Result<Option<OwnBlocks>> {
    let Some(parent) = &info.parent else {
        return Ok(info.aggregate.map(|_| OwnBlocks::All));
    };
    if info.aggregate.is_none() {
        return Ok(None);
    }
    let mut changed = super::backup::baseline::Bitmap::default();
    let mut count = 0;
    let mut pages = ChangedLister::new(store, Some(parent), &info.id);
    loop {
        let page = match pages.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            // The parent is gone: its blocks now belong to this snapshot, which the store
            // accounts for; nothing here can tell which.
            Err(crate::store::StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(&info.id)(e)),
        };
        for b in &page {
            changed.set(b.index);
            count += 1;
        }
    }
    Ok((Some(count) == info.changed_blocks_count).then_some(OwnBlocks::Some(changed)))
}

enum OwnBlocks {
    All,
    Some(super::backup::baseline::Bitmap),
}

impl OwnBlocks {
    fn contains(&self, i: BlockIndex) -> bool {
        match self {
            OwnBlocks::All => true,
            OwnBlocks::Some(set) => set.get(i),
        }
    }
}

/// Futures queued behind the one the aggregate waits for, beyond the flow's ceiling.
/// They hold nothing until the flow lets them in: each block fetched holds its place
/// in flight until it has been looked at, so memory is bounded by the flow's limit.
const FETCHED_AHEAD: usize = 64;

/// Every block of the snapshot, fetched as many at a time as the flow finds best (at
/// most `workers`), hashed off the async threads, and yielded in index order (the
/// aggregate needs that order). With `keep_data`, each comes with its data; each
/// says whether it holds data past `size`.
fn fetch_in_order<'a>(
    store: &'a dyn SnapshotStore,
    id: &'a SnapshotId,
    workers: usize,
    keep_data: bool,
    size: u64,
) -> impl futures::Stream<Item = Result<Checked>> + 'a {
    let flow = Flow::new(workers, store.pace(Transfer::Get));
    let ahead = flow.max() + FETCHED_AHEAD;
    let refs = stream::try_unfold(BlockLister::new(store, id), move |mut pages| async move {
        let page = pages.next_page().await.map_err(Error::store(id))?;
        Ok::<_, Error>(page.map(|blocks| (stream::iter(blocks.into_iter().map(Ok)), pages)))
    })
    .try_flatten();
    refs.map_ok(move |block| {
        let flow = flow.clone();
        async move {
            let mut pass = flow.enter().await;
            let fetched = store
                .get_block(id, block.index, &block.token)
                .await
                .map_err(Error::block(id, block.index))?;
            pass.measure();
            let data = fetched.data.clone();
            let kept = block.index.bytes_within(size);
            // A short block (which no store should send) fails its checksum instead.
            let tail_has_data = move |d: &[u8]| d.get(kept..).is_some_and(|t| !is_zero(t));
            let (actual, beyond_size) =
                tokio::task::spawn_blocking(move || (Digest::of(&data), tail_has_data(&data)))
                    .await
                    .expect("hashing panicked");
            Ok(Checked {
                index: block.index,
                data: keep_data.then_some(fetched.data),
                stored: fetched.checksum,
                actual,
                beyond_size,
                _pass: pass,
            })
        }
    })
    .try_buffered(ahead)
}

/// Walks the source alongside the snapshot's blocks: a block the snapshot lists must
/// equal the source's; a source block the snapshot does not list must be zeros.
struct Comparison<'a> {
    source: &'a Source,
    data_blocks: std::iter::Peekable<crate::block::DataBlocks<'a>>,
    // Aligned, so that the source reads it with O_DIRECT.
    buf: AlignedBuf,
}

impl<'a> Comparison<'a> {
    fn new(source: &'a Source) -> Self {
        Comparison {
            source,
            data_blocks: source.data_blocks().peekable(),
            buf: AlignedBuf::new(),
        }
    }

    fn read(&mut self, index: BlockIndex) -> Result<&[u8]> {
        if index.0 >= self.source.block_count() {
            self.buf.fill(0);
        } else {
            self.source
                .read_block(index, &mut self.buf)
                .map_err(|e| Error::ReadSource {
                    path: self.source.path().to_owned(),
                    index,
                    source: e,
                })?;
        }
        Ok(&self.buf)
    }

    /// Source data blocks before `until` that the snapshot does not hold must be zero.
    fn source_only_until(
        &mut self,
        until: Option<BlockIndex>,
        different: &mut Vec<u64>,
    ) -> Result<()> {
        while let Some(next) = self.data_blocks.peek() {
            let index = match next {
                Ok(i) => *i,
                Err(_) => {
                    let e = self
                        .data_blocks
                        .next()
                        .expect("peeked")
                        .expect_err("peeked an error");
                    return Err(Error::ReadSource {
                        path: self.source.path().to_owned(),
                        index: until.unwrap_or_default(),
                        source: e,
                    });
                }
            };
            if until.is_some_and(|u| index >= u) {
                return Ok(());
            }
            self.data_blocks.next();
            if !is_zero(self.read(index)?) {
                different.push(index.0);
            }
        }
        Ok(())
    }

    fn snapshot_block(
        &mut self,
        index: BlockIndex,
        data: &[u8],
        different: &mut Vec<u64>,
    ) -> Result<()> {
        self.source_only_until(Some(index), different)?;
        if matches!(self.data_blocks.peek(), Some(Ok(i)) if *i == index) {
            self.data_blocks.next();
            if self.read(index)? != data {
                different.push(index.0);
            }
        } else if !is_zero(data) {
            different.push(index.0); // a hole in the source, data in the snapshot
        }
        Ok(())
    }

    fn rest(&mut self, different: &mut Vec<u64>) -> Result<()> {
        self.source_only_until(None, different)
    }
}

//! Recovery without a restore: one reader over a completed snapshot, which `ebsnap
//! mount` (FUSE) and `ebsnap nbd` both serve from.
//!
//! The snapshot is listed once (ListSnapshotBlocks) when the reader opens: a bitmap
//! of the blocks that hold data (16 MiB for 64 TiB), and a bounded number of block
//! tokens. A read fetches the blocks it needs (GetSnapshotBlock, a place in the
//! [`Flow`] each), checks each against its checksum, and keeps it in a cache bounded by
//! bytes; a hole reads as zeros without a request. A block that fails its checksum,
//! or cannot be fetched, fails the read (the callers answer EIO): never wrong data.
//! Sequential reads fetch ahead. Memory is the cache, the bitmap, the tokens and the
//! blocks in flight, whatever the size of the volume.

mod ahead;
mod extents;
mod fetch;
mod tokens;

pub use extents::Extent;

use super::bitmap::Bitmap;
use super::flow::{Flow, Pass};
use super::{checked_size, completed_snapshot, Error, Result};
use crate::block::{BlockIndex, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::store::{PageRequest, SnapshotId, SnapshotStore, Transfer};
use ahead::ReadAhead;
use bytes::Bytes;
use quick_cache::sync::GuardResult;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokens::Tokens;

/// The cache's size by default (`--cache-size`).
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// Blocks fetched ahead of a sequential reader at most (32 MiB): at 100 ms a request,
/// 320 MiB/s for one stream. Read-ahead yields to demand reads in the flow, so a wide
/// window no longer delays the reads it is for.
const MAX_READ_AHEAD: u64 = 64;

#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Bytes of blocks kept (at least one block is).
    pub cache_bytes: u64,
    /// Block requests in flight at most (the flow finds how many below that).
    pub workers: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            workers: 64,
        }
    }
}

/// What a reader did, for the commands' reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStats {
    /// GetSnapshotBlock calls that returned a block (read-ahead included).
    pub blocks_fetched: u64,
    /// Bytes handed to readers.
    pub bytes_read: u64,
}

/// A snapshot, readable at any offset. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct BlockReader(Arc<Shared>);

struct Shared {
    store: Arc<dyn SnapshotStore>,
    id: SnapshotId,
    size: u64,
    taken: std::time::SystemTime,
    data: Bitmap,
    tokens: Tokens,
    cache: quick_cache::sync::Cache<u64, Bytes>,
    flow: Arc<Flow>,
    ahead: ReadAhead,
    /// Taken by the task that takes places for one read's read-ahead (fair: in turn).
    ahead_turn: tokio::sync::Mutex<()>,
    fetched: AtomicU64,
    bytes_read: AtomicU64,
}

impl std::fmt::Debug for BlockReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockReader({}, {} bytes)", self.0.id, self.0.size)
    }
}

impl BlockReader {
    /// Opens completed snapshot `id` for reading: describes it and lists its blocks.
    pub async fn open(
        store: Arc<dyn SnapshotStore>,
        id: &SnapshotId,
        options: &ReaderOptions,
    ) -> Result<BlockReader> {
        let info = completed_snapshot(&*store, id).await?;
        let size = checked_size(&info)?;
        let tokens = Tokens::default();
        let data = list_all(&*store, id, &tokens).await?;
        let blocks = (options.cache_bytes / BLOCK_SIZE_U64).max(1);
        let cached = usize::try_from(blocks).unwrap_or(usize::MAX);
        // Fetching further ahead than the cache holds would evict what it fetched.
        let read_ahead = MAX_READ_AHEAD.min(blocks / 4);
        let flow = Flow::new(options.workers.max(1), store.pace(Transfer::Get));
        tracing::info!(
            "{id}: {} bytes, {} tokens kept, cache of {cached} blocks",
            size,
            tokens.count()
        );
        Ok(BlockReader(Arc::new(Shared {
            size,
            store,
            id: id.clone(),
            taken: info.start_time,
            data,
            tokens,
            cache: block_cache(cached),
            flow,
            ahead: ReadAhead::new(read_ahead),
            ahead_turn: tokio::sync::Mutex::new(()),
            fetched: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        })))
    }

    pub fn snapshot(&self) -> &SnapshotId {
        &self.0.id
    }

    /// When the snapshot was started.
    pub fn taken(&self) -> std::time::SystemTime {
        self.0.taken
    }

    /// The snapshot's size in bytes: its source's, as a restore would write it.
    pub fn size(&self) -> u64 {
        self.0.size
    }

    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            blocks_fetched: self.0.fetched.load(Ordering::Relaxed),
            bytes_read: self.0.bytes_read.load(Ordering::Relaxed),
        }
    }

    /// Data and holes in `offset..offset + length` (clipped to the size), at most
    /// `max` extents.
    pub fn extents(&self, offset: u64, length: u64, max: usize) -> Vec<Extent> {
        extents::extents(&self.0.data, self.0.size, offset, length, max)
    }

    /// The bytes at `offset..offset + length`, clipped to the size. Fails (naming the
    /// snapshot and block, and logged) if a block cannot be fetched or is damaged.
    pub async fn read(&self, offset: u64, length: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(length as u64).min(self.0.size);
        if end <= offset {
            return Ok(Vec::new());
        }
        let (first, last) = (offset / BLOCK_SIZE_U64, (end - 1) / BLOCK_SIZE_U64);
        self.fetch_ahead(first, last + 1);
        let blocks =
            futures::future::try_join_all((first..=last).map(|i| self.block(BlockIndex(i))))
                .await?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, block) in (first..=last).zip(blocks) {
            let start = offset.max(i * BLOCK_SIZE_U64) - i * BLOCK_SIZE_U64;
            let stop = end.min((i + 1) * BLOCK_SIZE_U64) - i * BLOCK_SIZE_U64;
            let (start, stop) = (start as usize, stop as usize);
            match block {
                Some(data) => out.extend_from_slice(&data[start..stop]),
                None => out.resize(out.len() + stop - start, 0),
            }
        }
        self.0
            .bytes_read
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// One block's data, checked; `None` for a hole. From the cache when it is there,
    /// else fetched once however many readers want it at the same time.
    async fn block(&self, index: BlockIndex) -> Result<Option<Bytes>> {
        if !self.0.data.get(index) {
            return Ok(None);
        }
        let fetch = self.fetch(index, None);
        let data = self.0.cache.get_or_insert_async(&index.0, fetch).await?;
        debug_assert_eq!(data.len(), BLOCK_SIZE);
        Ok(Some(data))
    }

    /// Starts fetching the blocks a sequential reader will want next, in the
    /// background (a failure there is for the read that needs the block to report).
    /// One task takes their places in ascending order, and the ranges of successive
    /// reads take turns: the block wanted soonest is fetched first.
    fn fetch_ahead(&self, first: u64, end: u64) {
        let last_block = self.0.size.div_ceil(BLOCK_SIZE_U64);
        let ahead = self.0.ahead.read(first, end);
        let wanted = ahead.start..ahead.end.min(last_block);
        if wanted.is_empty() {
            return;
        }
        let reader = self.clone();
        tokio::spawn(async move {
            let _turn = reader.0.ahead_turn.lock().await;
            for i in wanted {
                if !reader.0.data.get(BlockIndex(i)) || reader.0.cache.contains_key(&i) {
                    continue;
                }
                let pass = reader.0.flow.enter_ahead().await;
                let reader = reader.clone();
                tokio::spawn(async move { reader.fetch_ahead_block(BlockIndex(i), pass).await });
            }
        });
    }

    /// One block fetched ahead, with the place taken for it. A block already cached, or
    /// being fetched by a read, is left alone and the place given back at once: waiting
    /// for that read while holding a place could leave it without one (with a single
    /// place in the flow, for ever).
    async fn fetch_ahead_block(&self, index: BlockIndex, pass: Pass) {
        let claimed = self
            .0
            .cache
            .get_value_or_guard(&index.0, Some(Duration::ZERO));
        let GuardResult::Guard(guard) = claimed else {
            return;
        };
        match self.fetch(index, Some(pass)).await {
            Ok(data) => {
                // Refused only if the entry was removed meanwhile: nothing to do.
                let _ = guard.insert(data);
            }
            Err(e) => tracing::debug!("read-ahead of block {index}: {e}"),
        }
    }
}

/// A cache of `blocks` blocks. Read-ahead's blocks enter it cold, and by default only
/// 3% of it is cold (2 blocks a shard here): once it was full, read-ahead evicted its
/// own blocks before they were read, and a mount read at 9 MB/s past its first 256 MiB.
/// Half of it cold holds a whole window; a block read is promoted as before.
fn block_cache(blocks: usize) -> quick_cache::sync::Cache<u64, Bytes> {
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(blocks)
        .weight_capacity(blocks as u64)
        .hot_allocation(0.5)
        .build()
        .expect("valid cache options");
    quick_cache::sync::Cache::with_options(
        options,
        quick_cache::UnitWeighter,
        Default::default(),
        Default::default(),
    )
}

/// Lists every block once: the bitmap of those holding data, and their tokens (as
/// many as are kept).
async fn list_all(store: &dyn SnapshotStore, id: &SnapshotId, tokens: &Tokens) -> Result<Bitmap> {
    let mut data = Bitmap::default();
    let (mut request, mut start) = (PageRequest::default(), 0);
    loop {
        let page = store
            .list_blocks(id, request)
            .await
            .map_err(Error::store(id))?;
        page.blocks.iter().for_each(|b| data.set(b.index));
        start = tokens.keep(start, &page);
        match page.next_token {
            Some(next) => request = PageRequest::from_token(Some(next)),
            None => return Ok(data),
        }
    }
}

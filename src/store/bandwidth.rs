//! A decorator that limits the bytes of block data a process sends and receives
//! (`--limit-upload`, `--limit-download`), for any store.
//!
//! Every block request reserves its bytes in a bucket shared by the whole process (all
//! stores opened with one [`Bandwidth`], all their requests in flight), then waits for
//! its turn, before it is sent: a put before its body leaves, a get before it is asked
//! for (a block's body is 512 KiB whatever it holds, so its size is known before the
//! answer; an answer of another size is settled once it has arrived). The bucket keeps
//! no burst: requests leave at most one body ahead of the rate, so over any span of
//! `W` seconds at most `rate × W` bytes and one block go. Over 10 s at 1 MiB/s
//! and more that is within 5% of the limit; below, within one block. HTTP headers are
//! not counted (about a kilobyte a request, 0.2%).
//!
//! Not `governor` (which paces the requests, see [`super::PacedStore`]): its byte quotas
//! are checked, not reserved, so many requests waiting on one bucket would poll it and
//! race for each turn, and its clock is not tokio's, which the rate accounting's tests
//! stop and advance. A reservation is a few lines: each request learns its turn once,
//! in arrival order, and sleeps once.
//!
//! The wait falls inside the latency a transfer's flow ([`crate::engine`]) measures.
//! That is what the flow should see: past what the limit needs, more requests in
//! flight only wait longer for the same rate, as at a full link, and the flow takes
//! fewer. [`LimitedStore`] also reports the limit as a pace in blocks per second
//! ([`SnapshotStore::pace`]), so the flow knows the rate is capped and holds about
//! what Little's law needs, no more.

use super::*;
use crate::block::{BlockIndex, Digest, HashedBlock, BLOCK_SIZE_U64};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A byte rate shared by every request that passes it.
#[derive(Debug)]
pub struct ByteBucket {
    bytes_per_second: NonZeroU64,
    /// When the bytes reserved so far will have gone at the limit: the next request's
    /// turn (or now, if that has passed: time not used is not saved up).
    free_at: Mutex<Instant>,
}

impl ByteBucket {
    pub fn new(bytes_per_second: NonZeroU64) -> ByteBucket {
        ByteBucket {
            bytes_per_second,
            free_at: Mutex::new(Instant::now()),
        }
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second.get()
    }

    /// How long `bytes` take at the limit.
    fn span(&self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_second.get());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn free_at(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.free_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `bytes` for a request made at `now`: returns when it may be sent.
    pub fn reserve(&self, bytes: u64, now: Instant) -> Instant {
        let mut free_at = self.free_at();
        let turn = (*free_at).max(now);
        *free_at = turn + self.span(bytes);
        turn
    }

    /// A request that reserved `reserved` bytes moved `moved`: the difference is
    /// charged (or given back) to the requests after it.
    pub fn settle(&self, reserved: u64, moved: u64) {
        let mut free_at = self.free_at();
        if moved > reserved {
            *free_at += self.span(moved - reserved);
        } else if let Some(earlier) = free_at.checked_sub(self.span(reserved - moved)) {
            *free_at = earlier;
        }
    }

    /// Waits for the turn of a request of `bytes`.
    pub async fn take(&self, bytes: u64) {
        let turn = self.reserve(bytes, Instant::now());
        tokio::time::sleep_until(turn).await;
    }
}

/// The byte limits of a process, one bucket a direction; clones share the buckets.
#[derive(Clone, Debug, Default)]
pub struct Bandwidth {
    upload: Option<Arc<ByteBucket>>,
    download: Option<Arc<ByteBucket>>,
}

impl Bandwidth {
    /// Limits in bytes per second; `None` (or 0) is no limit.
    pub fn new(upload: Option<u64>, download: Option<u64>) -> Bandwidth {
        let bucket = |rate: Option<u64>| {
            rate.and_then(NonZeroU64::new)
                .map(|r| Arc::new(ByteBucket::new(r)))
        };
        Bandwidth {
            upload: bucket(upload),
            download: bucket(download),
        }
    }

    /// The bucket of data that travels `transfer`'s way.
    pub fn bucket(&self, transfer: Transfer) -> Option<&ByteBucket> {
        match transfer {
            Transfer::Put => self.upload.as_deref(),
            Transfer::Get => self.download.as_deref(),
        }
    }

    /// The limit, in whole blocks per second (at least one): the pace the flow needs.
    fn blocks_per_second(&self, transfer: Transfer) -> Option<u32> {
        let bytes = self.bucket(transfer)?.bytes_per_second();
        let blocks = bytes.div_ceil(BLOCK_SIZE_U64);
        Some(u32::try_from(blocks).unwrap_or(u32::MAX))
    }
}

/// A store whose block data moves within a [`Bandwidth`]. Put it inside the pacing
/// and retry decorators: each attempt of a retried request moves its bytes again, and
/// is charged for them.
#[derive(Debug)]
pub struct LimitedStore<S> {
    inner: S,
    bandwidth: Bandwidth,
}

impl<S: SnapshotStore> LimitedStore<S> {
    pub fn new(inner: S, bandwidth: Bandwidth) -> LimitedStore<S> {
        LimitedStore { inner, bandwidth }
    }
}

#[async_trait]
impl<S: SnapshotStore> StoreLayer for LimitedStore<S> {
    type Inner = S;

    fn inner(&self) -> &S {
        &self.inner
    }

    /// The slower of the inner store's pace and the byte limit's.
    fn pace(&self, transfer: Transfer) -> Option<u32> {
        let paces = [
            self.inner.pace(transfer),
            self.bandwidth.blocks_per_second(transfer),
        ];
        paces.into_iter().flatten().min()
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        if let Some(bucket) = self.bandwidth.bucket(Transfer::Put) {
            bucket.take(block.data().len() as u64).await;
        }
        self.inner.put_block(id, index, block, checksum).await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let Some(bucket) = self.bandwidth.bucket(Transfer::Get) else {
            return self.inner.get_block(id, index, token).await;
        };
        bucket.take(BLOCK_SIZE_U64).await;
        let fetched = self.inner.get_block(id, index, token).await?;
        bucket.settle(BLOCK_SIZE_U64, fetched.data.len() as u64);
        Ok(fetched)
    }
}

#[cfg(test)]
#[path = "bandwidth_tests.rs"]
mod tests;

//! Snapshot stores: one async trait with EBS direct-API semantics, several backends.
//!
//! The trait mirrors the six EBS direct-API operations plus the EC2 calls that go with
//! them (describe, list, delete). Every backend maps its failures into one
//! meaning-based [`StoreError`], so the engine decides what to do by meaning, not by
//! backend. `conformance` (feature `test-util`) holds the one test suite every
//! backend must pass.

pub mod bandwidth;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(feature = "aws")]
pub mod ebs;
pub mod ebs_tags;
mod error;
mod layer;
pub mod local;
pub mod location;
pub mod memory;
mod merge;
pub mod pace;
mod paging;
pub mod retry;
mod rules;
mod token;
mod types;

pub use error::{Quota, StoreError, StoreResult, ValidationReason};
pub use layer::StoreLayer;
pub use rules::{DEFAULT_MAX_PENDING, MAX_TAGS};

pub use bandwidth::{Bandwidth, LimitedStore};
#[cfg(feature = "aws")]
pub use ebs::{EbsOptions, EbsStore};
pub use local::LocalStore;
pub use location::{is_amazon_endpoint, LocationError, StoreLocation};
pub use memory::MemoryStore;
pub use pace::PacedStore;
pub use retry::{RetryPolicy, RetryStore};
pub use types::{
    BlockPage, BlockRef, BlockToken, ChangedBlock, ChangedBlockPage, FetchedBlock, PageRequest,
    PageToken, SnapshotId, SnapshotInfo, SnapshotStatus, StartSnapshot, Tag, TagFilter,
};

use crate::block::{BlockIndex, Digest, HashedBlock};
use async_trait::async_trait;

/// Which way block data travels: a put sends it, a get receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Put,
    Get,
}

/// A place that holds EBS-style snapshots.
///
/// Semantics follow the EBS direct APIs: a child inherits its parent's blocks; a put
/// overwrites one index; only completed snapshots are readable; pages and block tokens
/// are opaque; checksums are verified on put and on complete.
#[async_trait]
pub trait SnapshotStore: Send + Sync + std::fmt::Debug {
    /// A stable name for this store (its kind and location), to key local state such
    /// as manifests by.
    fn identity(&self) -> String;

    /// Block requests (of one kind: puts, or gets) per second this store is paced to,
    /// if it is ([`PacedStore`], or a [`LimitedStore`]'s bytes per second in blocks):
    /// a client that keeps more in flight than that rate needs only makes them wait.
    fn pace(&self, _transfer: Transfer) -> Option<u32> {
        None
    }

    /// Starts a pending snapshot (StartSnapshot).
    async fn start_snapshot(&self, request: StartSnapshot) -> StoreResult<SnapshotInfo>;

    /// Writes one block (PutSnapshotBlock). `checksum` is what the client claims; the
    /// store refuses the block unless it matches the block's own digest.
    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()>;

    /// Makes every block put so far into pending snapshot `id` durable, so that a later
    /// process can continue the snapshot: a resumed backup skips only the blocks put
    /// before a flush. Stores whose put is durable once it returns (EBS: a 201) have
    /// nothing to do.
    async fn flush(&self, _id: &SnapshotId) -> StoreResult<()> {
        Ok(())
    }

    /// Says ahead what [`complete_snapshot`](Self::complete_snapshot) will be asked to
    /// check, once every block has been sent but before the last answers come: a store
    /// that records these figures beside the snapshot (EBS: in tags, one round trip)
    /// may record them now, off completion's critical path, and completion with the
    /// same figures then skips that. A failure here loses nothing: completion records
    /// them itself. A success followed by a failed put leaves them on the pending
    /// snapshot, where the completion of a resumed run records its own. Stores that
    /// record nothing apart have nothing to do.
    async fn prepare_completion(
        &self,
        _id: &SnapshotId,
        _changed_blocks_count: u64,
        _aggregate: Option<Digest>,
    ) -> StoreResult<()> {
        Ok(())
    }

    /// Seals a snapshot (CompleteSnapshot) after checking the number of blocks written
    /// and, when given, their LINEAR aggregate checksum.
    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        changed_blocks_count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus>;

    /// One page of the blocks that hold data (ListSnapshotBlocks), inherited ones included.
    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage>;

    /// One page of the indexes whose data differs between `first` and `second`
    /// (ListChangedBlocks); with no `first`, every block of `second`.
    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage>;

    /// Reads one block (GetSnapshotBlock) with a token from a list call.
    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock>;

    /// One snapshot's state (DescribeSnapshots with one id).
    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo>;

    /// Every snapshot in the store, oldest first.
    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>>;

    /// Deletes a snapshot; its children stay whole.
    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()>;

    /// Adds tags, replacing the values of keys it already has (EC2 CreateTags).
    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()>;

    /// Removes tags by key, or by key and value (EC2 DeleteTags).
    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()>;
}

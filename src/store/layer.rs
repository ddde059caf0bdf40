//! Decorators that change only some of a store's calls.

use super::{
    BlockPage, BlockToken, ChangedBlockPage, FetchedBlock, PageRequest, SnapshotId, SnapshotInfo,
    SnapshotStatus, SnapshotStore, StartSnapshot, StoreResult, Tag, TagFilter, Transfer,
};
use crate::block::{BlockIndex, Digest, HashedBlock};
use async_trait::async_trait;

/// A store wrapped around another, [`StoreLayer::inner`]: each call it does not
/// override goes to the inner store unchanged (`flush` and `pace` included, which a
/// [`SnapshotStore`] would otherwise answer with defaults of its own). Every `StoreLayer` is a
/// [`SnapshotStore`]. A decorator that changes every call implements [`SnapshotStore`]
/// itself, under `#[deny(clippy::missing_trait_methods)]`.
#[async_trait]
pub trait StoreLayer: Send + Sync + std::fmt::Debug {
    type Inner: SnapshotStore + ?Sized;

    fn inner(&self) -> &Self::Inner;

    fn identity(&self) -> String {
        self.inner().identity()
    }

    fn pace(&self, transfer: Transfer) -> Option<u32> {
        self.inner().pace(transfer)
    }

    async fn start_snapshot(&self, request: StartSnapshot) -> StoreResult<SnapshotInfo> {
        self.inner().start_snapshot(request).await
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        self.inner().put_block(id, index, block, checksum).await
    }

    async fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        self.inner().flush(id).await
    }

    async fn prepare_completion(
        &self,
        id: &SnapshotId,
        changed_blocks_count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<()> {
        self.inner()
            .prepare_completion(id, changed_blocks_count, aggregate)
            .await
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        changed_blocks_count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        self.inner()
            .complete_snapshot(id, changed_blocks_count, aggregate)
            .await
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        self.inner().list_blocks(id, page).await
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        self.inner().list_changed_blocks(first, second, page).await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        self.inner().get_block(id, index, token).await
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        self.inner().describe_snapshot(id).await
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        self.inner().list_snapshots().await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        self.inner().delete_snapshot(id).await
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        self.inner().create_tags(id, tags).await
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        self.inner().delete_tags(id, tags).await
    }
}

/// A layer is a store: each call is the layer's (its own, or the inner store's).
#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<L: StoreLayer> SnapshotStore for L {
    fn identity(&self) -> String {
        StoreLayer::identity(self)
    }

    fn pace(&self, transfer: Transfer) -> Option<u32> {
        StoreLayer::pace(self, transfer)
    }

    async fn start_snapshot(&self, request: StartSnapshot) -> StoreResult<SnapshotInfo> {
        StoreLayer::start_snapshot(self, request).await
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        StoreLayer::put_block(self, id, index, block, checksum).await
    }

    async fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        StoreLayer::flush(self, id).await
    }

    async fn prepare_completion(
        &self,
        id: &SnapshotId,
        changed_blocks_count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<()> {
        StoreLayer::prepare_completion(self, id, changed_blocks_count, aggregate).await
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        changed_blocks_count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        StoreLayer::complete_snapshot(self, id, changed_blocks_count, aggregate).await
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        StoreLayer::list_blocks(self, id, page).await
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        StoreLayer::list_changed_blocks(self, first, second, page).await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        StoreLayer::get_block(self, id, index, token).await
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        StoreLayer::describe_snapshot(self, id).await
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        StoreLayer::list_snapshots(self).await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        StoreLayer::delete_snapshot(self, id).await
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        StoreLayer::create_tags(self, id, tags).await
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        StoreLayer::delete_tags(self, id, tags).await
    }
}

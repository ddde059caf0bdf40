//! The `SnapshotStore` operations of the local store: each runs its blocking work off
//! the async threads.

use super::store::LocalStore;
use crate::block::{BlockIndex, Digest, HashedBlock};
use crate::store::rules;
use crate::store::*;
use std::sync::atomic::Ordering;

#[async_trait]
impl SnapshotStore for LocalStore {
    fn identity(&self) -> String {
        let root =
            std::fs::canonicalize(&self.shared.root).unwrap_or_else(|_| self.shared.root.clone());
        format!("local:{}", root.display())
    }

    async fn start_snapshot(&self, request: StartSnapshot) -> StoreResult<SnapshotInfo> {
        self.blocking(move |s| s.start(request)).await
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        let id = id.clone();
        self.blocking(move |s| s.put(&id, index, block, checksum))
            .await
    }

    async fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        let wanted = self.shared.puts_recorded.load(Ordering::SeqCst);
        let mut flushed = self.shared.flushed_through.lock().await;
        if *flushed >= wanted {
            return Ok(()); // a flush that started after our puts covered them
        }
        let now = self.shared.puts_recorded.load(Ordering::SeqCst);
        let id = id.clone();
        self.blocking(move |s| s.flush(&id)).await?;
        *flushed = now;
        Ok(())
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        let id = id.clone();
        self.blocking(move |s| s.complete(&id, count, aggregate))
            .await
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        let id = id.clone();
        self.blocking(move |s| s.list_blocks(&id, page)).await
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let (first, second) = (first.cloned(), second.clone());
        self.blocking(move |s| s.list_changed(first.as_ref(), &second, page))
            .await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let (id, token) = (id.clone(), token.clone());
        self.blocking(move |s| s.get_block(&id, index, &token))
            .await
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        let id = id.clone();
        self.blocking(move |s| Ok(s.lock().get(&id)?.info.clone()))
            .await
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        self.blocking(|s| {
            let mut inner = s.lock();
            let ids: Vec<SnapshotId> = inner.snapshots.keys().cloned().collect();
            let mut all = ids
                .iter()
                .map(|id| inner.get(id).map(|e| e.info.clone()))
                .collect::<StoreResult<Vec<_>>>()?;
            all.sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
            Ok(all)
        })
        .await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        let id = id.clone();
        self.blocking(move |s| s.delete(&id)).await
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        rules::check_tags(tags)?;
        let (id, tags) = (id.clone(), tags.to_vec());
        self.blocking(move |s| s.create_tags(&id, &tags)).await
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        let (id, tags) = (id.clone(), tags.to_vec());
        self.blocking(move |s| {
            s.edit_tags(&id, |all| {
                all.retain(|t| !tags.iter().any(|f| f.matches(t)));
                Ok(())
            })
        })
        .await
    }
}

//! Paging through the list calls: NextToken followed in one place, one page in memory
//! at a time. Pages may be empty; the end is the page without a NextToken.

use crate::store::{
    BlockRef, ChangedBlock, PageRequest, PageToken, SnapshotId, SnapshotStore, StoreResult,
};

/// Where a listing stands: the token for the next page, or done.
#[derive(Default)]
struct Cursor {
    token: Option<PageToken>,
    done: bool,
}

impl Cursor {
    /// The request for the next page, or `None` after the last.
    fn request(&mut self) -> Option<PageRequest> {
        (!self.done).then(|| PageRequest::from_token(self.token.take()))
    }

    fn advance(&mut self, next: Option<PageToken>) {
        self.done = next.is_none();
        self.token = next;
    }
}

/// ListSnapshotBlocks, page by page.
pub(crate) struct BlockLister<'a> {
    store: &'a dyn SnapshotStore,
    id: &'a SnapshotId,
    cursor: Cursor,
}

impl<'a> BlockLister<'a> {
    pub fn new(store: &'a dyn SnapshotStore, id: &'a SnapshotId) -> Self {
        BlockLister {
            store,
            id,
            cursor: Cursor::default(),
        }
    }

    pub async fn next_page(&mut self) -> StoreResult<Option<Vec<BlockRef>>> {
        let Some(request) = self.cursor.request() else {
            return Ok(None);
        };
        let page = self.store.list_blocks(self.id, request).await?;
        self.cursor.advance(page.next_token);
        Ok(Some(page.blocks))
    }
}

/// ListChangedBlocks, page by page.
pub(crate) struct ChangedLister<'a> {
    store: &'a dyn SnapshotStore,
    first: Option<&'a SnapshotId>,
    second: &'a SnapshotId,
    cursor: Cursor,
}

impl<'a> ChangedLister<'a> {
    pub fn new(
        store: &'a dyn SnapshotStore,
        first: Option<&'a SnapshotId>,
        second: &'a SnapshotId,
    ) -> Self {
        ChangedLister {
            store,
            first,
            second,
            cursor: Cursor::default(),
        }
    }

    pub async fn next_page(&mut self) -> StoreResult<Option<Vec<ChangedBlock>>> {
        let Some(request) = self.cursor.request() else {
            return Ok(None);
        };
        let page = self
            .store
            .list_changed_blocks(self.first, self.second, request)
            .await?;
        self.cursor.advance(page.next_token);
        Ok(Some(page.blocks))
    }
}

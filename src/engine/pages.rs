//! Paging through the list calls: NextToken followed in one place, one page in memory
//! at a time. Pages may be empty; the end is the page without a NextToken.

use crate::store::{
    BlockPage, BlockRef, ChangedBlock, ChangedBlockPage, PageRequest, PageToken, SnapshotId,
    SnapshotStore, StoreResult,
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
    /// The first page, asked for before the lister was made ([`Self::first_page`]).
    ahead: Option<StoreResult<BlockPage>>,
}

impl<'a> BlockLister<'a> {
    pub fn new(store: &'a dyn SnapshotStore, id: &'a SnapshotId) -> Self {
        BlockLister {
            store,
            id,
            cursor: Cursor::default(),
            ahead: None,
        }
    }

    /// The first page, asked for on its own: beside another call, say, before the
    /// lister that pages on from it is made.
    pub async fn first_page(store: &dyn SnapshotStore, id: &SnapshotId) -> StoreResult<BlockPage> {
        store.list_blocks(id, PageRequest::from_token(None)).await
    }

    /// Starts from a first page already asked for (its failure is the first call's).
    pub fn with_first(mut self, first: Option<StoreResult<BlockPage>>) -> Self {
        self.ahead = first;
        self
    }

    pub async fn next_page(&mut self) -> StoreResult<Option<Vec<BlockRef>>> {
        let Some(request) = self.cursor.request() else {
            return Ok(None);
        };
        let page = match self.ahead.take() {
            Some(page) => page?,
            None => self.store.list_blocks(self.id, request).await?,
        };
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
    /// The first page, asked for before the lister was made ([`Self::first_page`]).
    ahead: Option<StoreResult<ChangedBlockPage>>,
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
            ahead: None,
        }
    }

    /// The first page, asked for on its own (see [`BlockLister::first_page`]).
    pub async fn first_page(
        store: &dyn SnapshotStore,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
    ) -> StoreResult<ChangedBlockPage> {
        let request = PageRequest::from_token(None);
        store.list_changed_blocks(first, second, request).await
    }

    /// Starts from a first page already asked for (its failure is the first call's).
    pub fn with_first(mut self, first: Option<StoreResult<ChangedBlockPage>>) -> Self {
        self.ahead = first;
        self
    }

    pub async fn next_page(&mut self) -> StoreResult<Option<Vec<ChangedBlock>>> {
        let Some(request) = self.cursor.request() else {
            return Ok(None);
        };
        let page = match self.ahead.take() {
            Some(page) => page?,
            None => {
                let (store, first, second) = (self.store, self.first, self.second);
                store.list_changed_blocks(first, second, request).await?
            }
        };
        self.cursor.advance(page.next_token);
        Ok(Some(page.blocks))
    }
}

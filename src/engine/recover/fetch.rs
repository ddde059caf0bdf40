//! Fetching one block for the reader: its token (kept, or listed again), the get
//! through the flow, the checksum checked off the async threads. A refused token is
//! listed again and the get tried once more; so is a block that arrives damaged (a
//! transfer can damage it; a damaged copy in the store stays damaged, and fails).

use super::BlockReader;
use crate::block::BlockIndex;
use crate::engine::checked::checked;
use crate::engine::flow::Pass;
use crate::engine::{Error, Result};
use crate::store::{BlockToken, PageRequest, StoreError, ValidationReason};
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// Blocks a page listed for a missing token asks for: the neighbours a sequential
/// reader wants next come with it.
const REFILL_PAGE: u32 = 1000;

impl BlockReader {
    /// Block `index`, which holds data, fetched and checked. A failure is logged here,
    /// once, with the snapshot and index: the reader's caller only answers EIO.
    /// `place`: one taken already (read-ahead's), for the first request.
    pub(super) async fn fetch(&self, index: BlockIndex, place: Option<Pass>) -> Result<Bytes> {
        let result = self.fetch_checked(index, place).await;
        match &result {
            Ok(_) => {
                self.0.fetched.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(
                "snapshot {}, block {index}: {e} (read fails: EIO)",
                self.0.id
            ),
        }
        result
    }

    async fn fetch_checked(&self, index: BlockIndex, mut place: Option<Pass>) -> Result<Bytes> {
        let mut second_try = false;
        loop {
            let token = self.token(index).await?;
            let error = match self.get_checked(index, &token, place.take()).await {
                Ok(data) => return Ok(data),
                Err(e) if second_try => return Err(e),
                Err(e) => e,
            };
            if refused_token(&error) {
                self.0.tokens.forget(index.0);
            }
            if !refused_token(&error) && !matches!(error, Error::BadBlock { .. }) {
                return Err(error);
            }
            tracing::warn!(
                "snapshot {}, block {index}: {error}: trying again",
                self.0.id
            );
            second_try = true;
        }
    }

    /// A second try, or a demand read, takes its place as a demand read.
    async fn get_checked(
        &self,
        index: BlockIndex,
        token: &BlockToken,
        place: Option<Pass>,
    ) -> Result<Bytes> {
        let id = &self.0.id;
        let pass = match place {
            Some(pass) => pass,
            None => self.0.flow.enter().await,
        };
        let fetched = self
            .0
            .store
            .get_block(id, index, token)
            .await
            .map_err(Error::block(id, index))?;
        pass.finished();
        let (id, size) = (id.clone(), self.0.size);
        tokio::task::spawn_blocking(move || {
            checked(&id, index, fetched, size).map(|b| b.data().clone())
        })
        .await
        .expect("checking a block panicked")
    }

    /// The token for `index`: kept from a listing, else from a page listed from it.
    async fn token(&self, index: BlockIndex) -> Result<BlockToken> {
        if let Some(token) = self.0.tokens.get(index.0) {
            return Ok(token);
        }
        let id = &self.0.id;
        let request = PageRequest {
            starting_block: index,
            max_results: Some(REFILL_PAGE),
            token: None,
        };
        let page = self
            .0
            .store
            .list_blocks(id, request)
            .await
            .map_err(Error::block(id, index))?;
        self.0.tokens.keep(index.0, &page);
        let listed = page.blocks.iter().find(|b| b.index == index);
        listed.map(|b| b.token.clone()).ok_or_else(|| Error::Store {
            snapshot: Some(id.clone()),
            index: Some(index),
            source: StoreError::invalid(
                ValidationReason::InvalidBlockToken,
                "the block was listed when the snapshot was opened, and is no longer",
            ),
        })
    }
}

/// Whether the store refused the token (expired, or from a listing it forgot).
fn refused_token(e: &Error) -> bool {
    e.store_error()
        .is_some_and(|s| s.reason() == Some(ValidationReason::InvalidBlockToken))
}

//! Pagination shared by the stores: where a page starts, how long it is, the tokens it
//! hands out, and the token for the next page. A store only supplies its blocks, in
//! ascending index order, from a starting index.

use super::merge::changed;
use super::token::{TokenKey, BLOCK_TOKEN_LIFETIME};
use super::{
    BlockPage, BlockRef, ChangedBlock, ChangedBlockPage, PageRequest, PageToken, SnapshotId,
    SnapshotInfo, StoreError, StoreResult,
};
use crate::block::{BlockIndex, Digest};
use std::time::SystemTime;

pub(crate) const MIN_RESULTS: u32 = 100;
pub(crate) const MAX_RESULTS: u32 = 10_000;

/// A page's length: 100 to 10000, values below 100 clamped up (as the service does).
fn page_len(request: &PageRequest) -> usize {
    request
        .max_results
        .unwrap_or(MAX_RESULTS)
        .clamp(MIN_RESULTS, MAX_RESULTS) as usize
}

/// The first index of the page: the token's, else the starting index.
fn page_start(key: &TokenKey, scope: &str, request: &PageRequest) -> StoreResult<BlockIndex> {
    match &request.token {
        Some(token) => key.open_page_token(scope, token),
        None => Ok(request.starting_block),
    }
}

/// Takes one page from an ascending stream of items; returns the items and, when more
/// remain, the token for the next page.
fn take_page<T>(
    key: &TokenKey,
    scope: &str,
    len: usize,
    mut items: impl Iterator<Item = StoreResult<(BlockIndex, T)>>,
) -> StoreResult<(Vec<T>, Option<PageToken>)> {
    let mut page = Vec::with_capacity(len.min(1024));
    for item in items.by_ref() {
        let (index, value) = item?;
        if page.len() == len {
            return Ok((page, Some(key.page_token(scope, index))));
        }
        page.push(value);
    }
    Ok((page, None))
}

/// One page of ListSnapshotBlocks. `blocks(start)` yields the indexes of the blocks the
/// snapshot holds from `start` on, ascending.
pub(crate) fn block_page<I: Iterator<Item = BlockIndex>>(
    key: &TokenKey,
    info: &SnapshotInfo,
    request: &PageRequest,
    blocks: impl FnOnce(BlockIndex) -> I,
) -> StoreResult<BlockPage> {
    let id = &info.id;
    let scope = format!("blocks/{id}");
    let start = page_start(key, &scope, request)?;
    let items = blocks(start).map(|index| {
        Ok((
            index,
            BlockRef {
                index,
                token: key.block_token(id, index),
            },
        ))
    });
    let (blocks, next_token) = take_page(key, &scope, page_len(request), items)?;
    Ok(BlockPage {
        blocks,
        next_token,
        expiry_time: block_token_expiry(),
        volume_size_gib: info.volume_size_gib,
        block_size: info.block_size,
    })
}

/// One page of ListChangedBlocks between `first` (if any) and `second`. `blocks(start)`
/// yields both snapshots' `(index, digest)` from `start` on, ascending.
pub(crate) fn changed_page<I, J>(
    key: &TokenKey,
    first: Option<&SnapshotId>,
    second: &SnapshotInfo,
    request: &PageRequest,
    blocks: impl FnOnce(BlockIndex) -> (I, J),
) -> StoreResult<ChangedBlockPage>
where
    I: Iterator<Item = (BlockIndex, Digest)>,
    J: Iterator<Item = (BlockIndex, Digest)>,
{
    let id = &second.id;
    let scope = format!("changed/{}/{id}", first.map_or("", |f| f.as_str()));
    let start = page_start(key, &scope, request)?;
    let (a, b) = blocks(start);
    let tagged = |(i, d): (BlockIndex, Digest)| Ok::<_, StoreError>((i, d, ()));
    let items = changed(a.map(tagged), b.map(tagged)).map(|r| {
        r.map(|(index, d)| {
            let block = ChangedBlock {
                index,
                first_token: d.first.and(first).map(|f| key.block_token(f, index)),
                second_token: d.second.map(|_| key.block_token(id, index)),
            };
            (index, block)
        })
    });
    let (blocks, next_token) = take_page(key, &scope, page_len(request), items)?;
    Ok(ChangedBlockPage {
        blocks,
        next_token,
        expiry_time: block_token_expiry(),
        volume_size_gib: second.volume_size_gib,
        block_size: second.block_size,
    })
}

/// When the block tokens handed out now expire.
fn block_token_expiry() -> SystemTime {
    SystemTime::now() + BLOCK_TOKEN_LIFETIME
}

//! Pagination shared by the stores: where a page starts, how long it is, and the token
//! for the next one.

use super::token::{TokenKey, BLOCK_TOKEN_LIFETIME};
use super::{PageRequest, PageToken, StoreResult};
use crate::block::BlockIndex;
use std::time::SystemTime;

pub(crate) const MIN_RESULTS: u32 = 100;
pub(crate) const MAX_RESULTS: u32 = 10_000;

/// A page's length: 100 to 10000, values below 100 clamped up (as the service does).
pub(crate) fn page_len(request: &PageRequest) -> usize {
    request
        .max_results
        .unwrap_or(MAX_RESULTS)
        .clamp(MIN_RESULTS, MAX_RESULTS) as usize
}

/// The first index of the page: the token's, else the starting index.
pub(crate) fn page_start(
    key: &TokenKey,
    scope: &str,
    request: &PageRequest,
) -> StoreResult<BlockIndex> {
    match &request.token {
        Some(token) => key.open_page_token(scope, token),
        None => Ok(request.starting_block),
    }
}

/// Takes one page from an ascending stream of items; returns the items and, when more
/// remain, the token for the next page.
pub(crate) fn take_page<T>(
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

/// When the block tokens handed out now expire.
pub(crate) fn block_token_expiry() -> SystemTime {
    SystemTime::now() + BLOCK_TOKEN_LIFETIME
}

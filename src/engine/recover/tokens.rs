//! Block tokens for GetSnapshotBlock, a bounded number of them. The snapshot is
//! listed once when the reader opens; the tokens of that listing are kept up to a cap
//! (a few hundred thousand: tens of MiB), and a block whose token was not kept, has
//! been dropped or is about to expire gets a fresh page listed from its index.

use crate::store::{BlockPage, BlockRef, BlockToken};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Tokens kept at most, all pages together.
pub(super) const MAX_TOKENS: usize = 1 << 18;

/// A token this close to its expiry is not used: a page is listed again instead.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// The tokens of one listed page, valid for the indexes `start..end` (a block in that
/// range that the page does not name holds no data).
struct Page {
    end: u64,
    blocks: Vec<BlockRef>,
    stale_at: SystemTime,
}

#[derive(Default)]
struct Pages {
    by_start: BTreeMap<u64, Page>,
    /// Page starts, oldest first: the first to go when the cap is reached.
    order: VecDeque<u64>,
    count: usize,
}

#[derive(Default)]
pub(super) struct Tokens {
    pages: Mutex<Pages>,
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token kept for `index`, if a fresh page covers it.
    pub fn get(&self, index: u64) -> Option<BlockToken> {
        let pages = self.lock();
        let (_, page) = pages.by_start.range(..=index).next_back()?;
        if index >= page.end || SystemTime::now() >= page.stale_at {
            return None;
        }
        let at = page
            .blocks
            .binary_search_by_key(&index, |b| b.index.0)
            .ok()?;
        Some(page.blocks[at].token.clone())
    }

    /// Keeps the tokens of `page`, listed from index `start`, while the cap allows
    /// (the oldest pages make room). Returns the index the page ends before.
    pub fn keep(&self, start: u64, page: &BlockPage) -> u64 {
        let end = match (&page.next_token, page.blocks.last()) {
            (None, _) => u64::MAX,
            (Some(_), Some(last)) => last.index.0 + 1,
            (Some(_), None) => start,
        };
        let stale_at = page
            .expiry_time
            .checked_sub(EXPIRY_MARGIN)
            .unwrap_or(page.expiry_time);
        let mut pages = self.lock();
        pages.insert(start, end, page.blocks.clone(), stale_at);
        end
    }

    /// Forgets the page that covers `index` (its token was refused).
    pub fn forget(&self, index: u64) {
        let mut pages = self.lock();
        if let Some((&start, _)) = pages.by_start.range(..=index).next_back() {
            pages.remove(start);
        }
    }

    /// Tokens kept now.
    pub fn count(&self) -> usize {
        self.lock().count
    }
}

impl Pages {
    fn insert(&mut self, start: u64, end: u64, blocks: Vec<BlockRef>, stale_at: SystemTime) {
        if blocks.len() > MAX_TOKENS || end <= start {
            return;
        }
        self.remove(start);
        while self.count + blocks.len() > MAX_TOKENS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(oldest);
        }
        self.count += blocks.len();
        self.order.push_back(start);
        let page = Page {
            end,
            blocks,
            stale_at,
        };
        self.by_start.insert(start, page);
    }

    fn remove(&mut self, start: u64) {
        if let Some(page) = self.by_start.remove(&start) {
            self.count -= page.blocks.len();
            self.order.retain(|&s| s != start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockIndex;
    use crate::store::PageToken;

    fn page(indexes: &[u64], more: bool, expiry: SystemTime) -> BlockPage {
        BlockPage {
            blocks: indexes
                .iter()
                .map(|&i| BlockRef {
                    index: BlockIndex(i),
                    token: BlockToken(format!("t{i}")),
                })
                .collect(),
            next_token: more.then(|| PageToken("next".into())),
            expiry_time: expiry,
            volume_size_gib: 1,
            block_size: 524_288,
        }
    }

    #[test]
    fn pages_cover_their_range_until_they_go_stale_or_are_forgotten() {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let tokens = Tokens::default();
        assert_eq!(tokens.keep(0, &page(&[1, 5], true, later)), 6);
        assert_eq!(tokens.keep(6, &page(&[9], false, later)), u64::MAX);
        assert_eq!(tokens.get(5), Some(BlockToken("t5".into())));
        assert_eq!(tokens.get(9), Some(BlockToken("t9".into())));
        assert_eq!(tokens.get(2), None);
        tokens.forget(5);
        assert_eq!(tokens.get(1), None);
        assert_eq!(tokens.count(), 1);
        let soon = SystemTime::now() + Duration::from_secs(60);
        tokens.keep(20, &page(&[20], false, soon));
        assert_eq!(tokens.get(20), None, "a token about to expire is not used");
    }

    #[test]
    fn the_oldest_pages_make_room() {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let tokens = Tokens::default();
        let big: Vec<u64> = (0..MAX_TOKENS as u64 - 1).collect();
        tokens.keep(0, &page(&big, true, later));
        let start = MAX_TOKENS as u64;
        tokens.keep(start, &page(&[start, start + 1], false, later));
        assert_eq!(tokens.get(0), None);
        assert!(tokens.get(start + 1).is_some());
        assert_eq!(tokens.count(), 2);
    }
}

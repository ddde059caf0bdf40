//! A set of block indexes, one bit each: which blocks a snapshot holds data for, or
//! changed. Backup, verify and the recovery reader use it.

use crate::block::BlockIndex;

/// A set of block indexes, one bit each (16 MiB for a 64 TiB volume).
#[derive(Clone, Debug, Default)]
pub(crate) struct Bitmap(Vec<u64>);

impl Bitmap {
    pub fn set(&mut self, i: BlockIndex) {
        let (word, bit) = ((i.0 / 64) as usize, i.0 % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    pub fn get(&self, i: BlockIndex) -> bool {
        self.0
            .get((i.0 / 64) as usize)
            .is_some_and(|w| w & (1 << (i.0 % 64)) != 0)
    }

    /// The first index set at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let first = (from / 64) as usize;
        let word = self.0.get(first)? & (!0u64 << (from % 64));
        if word != 0 {
            return Some(first as u64 * 64 + u64::from(word.trailing_zeros()));
        }
        let (at, word) = self.0[first + 1..]
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)?;
        Some((first + 1 + at) as u64 * 64 + u64::from(word.trailing_zeros()))
    }

    /// The first index not set at or after `from`.
    pub fn next_clear(&self, from: u64) -> u64 {
        let mut at = (from / 64) as usize;
        let Some(first) = self.0.get(at) else {
            return from;
        };
        let mut word = !first & (!0u64 << (from % 64));
        while word == 0 {
            at += 1;
            match self.0.get(at) {
                Some(w) => word = !w,
                None => return at as u64 * 64,
            }
        }
        at as u64 * 64 + u64::from(word.trailing_zeros())
    }

    /// One past the highest index set.
    pub fn end(&self) -> u64 {
        self.0.iter().rposition(|&w| w != 0).map_or(0, |w| {
            w as u64 * 64 + 64 - u64::from(self.0[w].leading_zeros())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_finds_the_next_index_set() {
        let mut b = Bitmap::default();
        assert_eq!(b.next_set(0), None);
        for i in [3, 64, 200] {
            b.set(BlockIndex(i));
        }
        assert_eq!(b.next_set(0), Some(3));
        assert_eq!(b.next_set(3), Some(3));
        assert_eq!(b.next_set(4), Some(64));
        assert_eq!(b.next_set(65), Some(200));
        assert_eq!(b.next_set(201), None);
        assert_eq!(b.next_set(10_000), None);
        assert_eq!(b.next_clear(0), 0);
        assert_eq!(b.next_clear(3), 4);
        assert_eq!(b.next_clear(64), 65);
        assert_eq!(b.next_clear(10_000), 10_000);
        let mut full = Bitmap::default();
        (0..130).for_each(|i| full.set(BlockIndex(i)));
        assert_eq!(full.next_clear(5), 130);
        assert_eq!(full.next_clear(64), 130);
    }

    #[test]
    fn bitmap_sets_gets_and_knows_its_end() {
        let mut b = Bitmap::default();
        assert_eq!(b.end(), 0);
        b.set(BlockIndex(3));
        b.set(BlockIndex(130));
        assert!(b.get(BlockIndex(3)) && b.get(BlockIndex(130)));
        assert!(!b.get(BlockIndex(4)) && !b.get(BlockIndex(10_000)));
        assert_eq!(b.end(), 131);
    }
}

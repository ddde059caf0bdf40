//! Reading a snapshot through its lineage: its own map first, then its parent's, and so
//! on up to the first snapshot. The nearest map that holds an index wins.

use super::map::{MapFile, Record};
use crate::block::BlockIndex;
use std::iter::Peekable;
use std::sync::Arc;

/// The maps of a snapshot and its ancestors, nearest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chain(pub Vec<Arc<MapFile>>);

impl Chain {
    pub fn get(&self, index: BlockIndex) -> Option<Record> {
        self.0.iter().find_map(|m| m.get(index))
    }

    /// Every block the snapshot holds from `from` on, ascending.
    pub fn iter_from(&self, from: BlockIndex) -> ChainIter<'_> {
        let heads = self
            .0
            .iter()
            .map(|m| (Box::new(m.iter_from(from)) as Box<dyn Iterator<Item = Record>>).peekable())
            .collect();
        ChainIter { heads }
    }
}

pub(crate) struct ChainIter<'a> {
    heads: Vec<Peekable<Box<dyn Iterator<Item = Record> + 'a>>>,
}

impl Iterator for ChainIter<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let lowest = self
            .heads
            .iter_mut()
            .filter_map(|h| h.peek().map(|r| r.index))
            .min()?;
        let mut found = None;
        for head in &mut self.heads {
            if head.peek().is_some_and(|r| r.index == lowest) {
                let record = head.next();
                // Heads are nearest first: the first hit is the one that counts.
                found = found.or(record);
            }
        }
        found
    }
}

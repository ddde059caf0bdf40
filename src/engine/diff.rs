//! Diff: the blocks that differ between two snapshots (ListChangedBlocks).

use super::pages::ChangedLister;
use crate::engine::{Error, Result};
use crate::store::{SnapshotId, SnapshotStore};

#[derive(Clone, Debug, serde::Serialize)]
pub struct DiffReport {
    pub first_snapshot_id: String,
    pub second_snapshot_id: String,
    /// Number of block indexes whose data differs.
    pub changed_blocks: u64,
    /// The indexes, ascending.
    pub changed_block_indexes: Vec<u64>,
}

pub async fn diff(
    store: &dyn SnapshotStore,
    first: &SnapshotId,
    second: &SnapshotId,
) -> Result<DiffReport> {
    let mut indexes = Vec::new();
    let mut pages = ChangedLister::new(store, Some(first), second);
    while let Some(page) = pages.next_page().await.map_err(Error::store(second))? {
        indexes.extend(page.iter().map(|b| b.index.0));
    }
    Ok(DiffReport {
        first_snapshot_id: first.to_string(),
        second_snapshot_id: second.to_string(),
        changed_blocks: indexes.len() as u64,
        changed_block_indexes: indexes,
    })
}

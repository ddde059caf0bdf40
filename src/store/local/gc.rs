//! Deleting snapshots, and freeing the space of blocks nothing refers to any more.

use super::chain::Chain;
use super::encrypted;
use super::fsutil::remove_if_present;
use super::map::{MapWriter, ZERO_PACK};
use super::pack::SLOTS_PER_PACK;
use super::store::{sync_snapshots_dir, Inner, Shared};
use crate::block::BlockIndex;
use crate::store::rules;
use crate::store::{SnapshotId, SnapshotStatus, StoreResult};
use std::collections::HashMap;

impl Shared {
    /// Deletes a snapshot. Each child first takes over the blocks it inherited from it
    /// (its map becomes the union, its own blocks winning), so children stay whole; then
    /// the snapshot's files go, then the space of blocks no snapshot uses is freed.
    ///
    /// Every step leaves a consistent store: a crash after some children were rewritten
    /// leaves them reading the same data as before, and running the delete again finishes.
    pub(super) fn delete(&self, id: &SnapshotId) -> StoreResult<()> {
        self.writable()?;
        let mut inner = self.lock();
        let entry = inner.get(id)?;
        let parent = entry.info.parent.clone();
        let completed = entry.info.status == SnapshotStatus::Completed;
        let children: Vec<(SnapshotId, SnapshotStatus)> = inner
            .snapshots
            .values()
            .filter(|e| e.info.parent.as_ref() == Some(id))
            .map(|e| (e.info.id.clone(), e.info.status))
            .collect();
        rules::check_delete(id, &children)?;
        if completed {
            for (child, _) in &children {
                self.adopt(&mut inner, child, id, parent.as_ref())?;
            }
        }
        remove_if_present(&self.snapshot_path(id, "json"))?;
        remove_if_present(&self.snapshot_path(id, "map"))?;
        remove_if_present(&self.snapshot_path(id, "journal"))?;
        sync_snapshots_dir(&self.root)?;
        inner.forget_map(id);
        inner.snapshots.remove(id);
        let freed = collect_garbage(&mut inner)?;
        tracing::info!("deleted {id}; freed {freed} unused blocks");
        Ok(())
    }

    /// Makes `child` hold what it inherited from `dying`, and reparents it.
    fn adopt(
        &self,
        inner: &mut Inner,
        child: &SnapshotId,
        dying: &SnapshotId,
        grandparent: Option<&SnapshotId>,
    ) -> StoreResult<()> {
        let merged = Chain(vec![inner.map(child)?, inner.map(dying)?]);
        // The aggregate is over the blocks' SHA-256s, which an encrypted child's map
        // holds sealed: without its key, the child keeps no aggregate (verify then
        // checks every block, not the aggregate), and the delete still goes on.
        let key = self
            .snapshot_key(&inner.get(child)?.meta)
            .inspect_err(|e| tracing::warn!("{child} keeps no aggregate: {e}"))
            .ok();
        let mut writer = MapWriter::create(&self.snapshot_path(child, "map"))?;
        let block_key = key.as_ref().and_then(|k| k.as_deref());
        for record in merged.iter_from(BlockIndex(0)) {
            let checksum = encrypted::checksum(block_key, &record);
            writer.push(&record, &checksum)?;
        }
        let (map, count, aggregate) = writer.finish()?;
        let aggregate = key.is_some().then_some(aggregate);
        map.commit()?;
        inner.forget_map(child);
        let entry = inner.get_mut(child)?;
        entry.meta.parent = grandparent.map(|g| g.to_string());
        entry.meta.changed_blocks_count = Some(count);
        entry.meta.aggregate = aggregate.map(|a| a.to_base64());
        self.save_meta(&entry.meta)?;
        entry.info = entry.meta.to_info()?;
        Ok(())
    }
}

/// Frees every pack slot that no snapshot (completed or pending) refers to.
/// Returns the number of slots freed.
pub(super) fn collect_garbage(inner: &mut Inner) -> StoreResult<u64> {
    let mut live: HashMap<u32, Vec<bool>> = HashMap::new();
    let mut mark = |pack: u32, slot: u32| {
        if pack != ZERO_PACK {
            let slots = live
                .entry(pack)
                .or_insert_with(|| vec![false; SLOTS_PER_PACK as usize]);
            // A damaged record may name a slot past any pack: it keeps nothing alive
            // (`check` reports it), and must not stop the collection.
            if let Some(live) = slots.get_mut(slot as usize) {
                *live = true;
            }
        }
    };
    let ids: Vec<SnapshotId> = inner.snapshots.keys().cloned().collect();
    for id in &ids {
        let entry = &inner.snapshots[id];
        if let Some(journal) = entry.journal.clone() {
            for record in journal.records() {
                let r = record?;
                mark(r.location.pack, r.location.slot);
            }
        } else if entry.meta.status == SnapshotStatus::Completed.as_str() {
            for r in inner.map(id)?.iter_from(BlockIndex(0)) {
                mark(r.location.pack, r.location.slot);
            }
        }
    }
    let mut freed = 0;
    for pack in inner.packs.pack_ids()? {
        freed += inner
            .packs
            .free_unused(pack, live.get(&pack).map_or(&[][..], |v| v))?;
    }
    Ok(freed)
}

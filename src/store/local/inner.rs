//! The store's state in memory: its snapshots (metadata, journals of pending ones),
//! the maps of completed ones, and reading a snapshot through its lineage.

use super::chain::Chain;
use super::journal::Journal;
use super::lock::Access;
use super::map::{MapFile, ZERO_PACK};
use super::meta::Meta;
use super::store::{Entry, Inner};
use crate::store::rules;
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStatus, StoreError, StoreResult};
use std::sync::Arc;

impl Inner {
    pub(super) fn load_snapshots(&mut self, access: Access) -> StoreResult<()> {
        let dir = self.root.join("snapshots");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        for file in entries.flatten() {
            let path = file.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let raw = std::fs::read(&path)
                .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
            let meta = Meta::parse(&raw, &path.display().to_string())?;
            let info = meta.to_info()?;
            // Maps and journals are found by id: metadata under another snapshot's
            // name would read (and on delete, leave behind) the wrong files.
            if path.file_stem().and_then(|s| s.to_str()) != Some(info.id.as_str()) {
                return Err(StoreError::corrupt(
                    path.display().to_string(),
                    format!("it holds the metadata of {}", info.id),
                ));
            }
            let journal_path = path.with_extension("journal");
            // Read before any repair touches the journal: a crash long ago must not
            // look like recent activity.
            let last_activity = std::fs::metadata(&journal_path)
                .and_then(|m| m.modified())
                .unwrap_or(meta.start_time())
                .max(meta.start_time());
            // Only a writer needs (and may repair) the journals of pending snapshots.
            let journal = if info.status == SnapshotStatus::Pending && access == Access::Write {
                let j = Arc::new(Journal::open(&journal_path)?);
                self.repair_journal(&j)?;
                // Durable (and closed): a store with many pending snapshots opens with
                // no descriptor held for any of them.
                j.sync()?;
                Some(j)
            } else {
                None
            };
            self.snapshots.insert(
                info.id.clone(),
                Entry {
                    meta,
                    info,
                    last_activity,
                    journal,
                },
            );
        }
        Ok(())
    }

    /// Drops journal records whose data did not reach the disk before a crash.
    /// Streams the journal (it may describe a 64 TiB volume), clearing as it goes.
    fn repair_journal(&self, journal: &Journal) -> StoreResult<()> {
        for record in journal.records() {
            let r = record?;
            let durable =
                r.location.pack == ZERO_PACK || self.packs.digest_at(r.location)? == Some(r.digest);
            if !durable {
                journal.clear(r.index)?;
            }
        }
        Ok(())
    }

    /// The snapshot's entry, with an idle pending snapshot moved to `error` first.
    pub fn get_mut(&mut self, id: &SnapshotId) -> StoreResult<&mut Entry> {
        let entry = self
            .snapshots
            .get_mut(id)
            .ok_or_else(|| StoreError::snapshot_not_found(id))?;
        entry.expire();
        Ok(entry)
    }

    pub fn get(&mut self, id: &SnapshotId) -> StoreResult<&Entry> {
        self.get_mut(id).map(|e| &*e)
    }

    pub fn map(&mut self, id: &SnapshotId) -> StoreResult<Arc<MapFile>> {
        if let Some(m) = self.maps.get(id) {
            return Ok(m.clone());
        }
        let map = Arc::new(MapFile::open(
            &self.root.join("snapshots").join(format!("{id}.map")),
        )?);
        self.maps.insert(id.clone(), map.clone());
        Ok(map)
    }

    pub fn forget_map(&mut self, id: &SnapshotId) {
        self.maps.remove(id);
    }

    /// The maps of a completed snapshot and its ancestors, nearest first.
    pub fn chain(&mut self, id: &SnapshotId) -> StoreResult<Chain> {
        let mut maps = Vec::new();
        let mut next = Some(id.clone());
        while let Some(ancestor) = next {
            // A lineage is never longer than the store: damaged metadata whose parents
            // loop back would otherwise hold the store's lock for ever.
            if maps.len() == self.snapshots.len() {
                return Err(StoreError::corrupt(
                    format!("metadata of {id}"),
                    "its parents loop",
                ));
            }
            let entry = self.get(&ancestor)?;
            next = entry.info.parent.clone();
            maps.push(self.map(&ancestor)?);
        }
        Ok(Chain(maps))
    }

    pub(super) fn readable_chain(&mut self, id: &SnapshotId) -> StoreResult<(SnapshotInfo, Chain)> {
        let info = self.get(id)?.info.clone();
        rules::check_readable(&info)?;
        Ok((info, self.chain(id)?))
    }
}

//! `ebsnap check`: the local store's structure, and with `read_data` every block's data,
//! checked against what its maps and pack indexes say.

use super::map::ZERO_PACK;
use super::pack::Packs;
use super::store::{LocalStore, Shared};
use crate::block::{BlockIndex, Digest, BLOCK_SIZE};
use crate::store::{SnapshotId, SnapshotStatus, StoreResult};
use std::collections::HashMap;

/// One problem found: in which snapshot, at which block (if a block), what.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub snapshot_id: String,
    pub block: Option<u64>,
    pub problem: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub snapshots_checked: u64,
    pub blocks_checked: u64,
    pub data_read: bool,
    pub damaged: Vec<Damage>,
    /// Parts of the store that users other than its owner can read or enter: each
    /// path, with its mode. The store holds whole disks; nothing in it should be.
    pub readable_by_others: Vec<String>,
}

impl LocalStore {
    /// Checks every completed snapshot: its map opens and is sorted, every block it wrote
    /// lives in a pack slot whose index holds the same digest, and (with `read_data`)
    /// the slot's data hashes to it. Children inherit their parents' blocks: a damaged
    /// block is reported for the snapshot that wrote it.
    pub fn check(&self, read_data: bool) -> StoreResult<CheckReport> {
        self.shared().check(read_data)
    }
}

impl Shared {
    fn check(&self, read_data: bool) -> StoreResult<CheckReport> {
        let mut report = CheckReport {
            data_read: read_data,
            ..CheckReport::default()
        };
        let mut inner = self.lock();
        let ids: Vec<SnapshotId> = inner.snapshots.keys().cloned().collect();
        let mut indexes: HashMap<u32, Vec<Digest>> = HashMap::new();
        let mut buf = vec![0u8; BLOCK_SIZE];
        for id in ids {
            if inner.get(&id)?.info.status != SnapshotStatus::Completed {
                continue;
            }
            report.snapshots_checked += 1;
            let damage = |block: Option<BlockIndex>, problem: String| Damage {
                snapshot_id: id.to_string(),
                block: block.map(|b| b.0),
                problem,
            };
            let map = match inner.map(&id) {
                Ok(map) => map,
                Err(e) => {
                    report
                        .damaged
                        .push(damage(None, format!("its block map is unreadable: {e}")));
                    continue;
                }
            };
            for record in map.iter_from(BlockIndex(0)) {
                report.blocks_checked += 1;
                let at = Some(record.index);
                if record.location.pack == ZERO_PACK {
                    if record.digest != Digest::zero_block() {
                        report
                            .damaged
                            .push(damage(at, "a zero block with another checksum".into()));
                    }
                    continue;
                }
                let pack = record.location.pack;
                if let std::collections::hash_map::Entry::Vacant(slot) = indexes.entry(pack) {
                    slot.insert(inner.packs.idx_digests(pack).unwrap_or_default());
                }
                let listed = indexes[&pack].get(record.location.slot as usize).copied();
                if listed != Some(record.digest) {
                    let problem = format!(
                        "pack {pack:08x} slot {} is not indexed with this block's checksum",
                        record.location.slot
                    );
                    report.damaged.push(damage(at, problem));
                    continue;
                }
                if read_data {
                    let file = inner.packs.file(pack)?;
                    let actual =
                        Packs::read(&file, record.location, &mut buf).map(|()| Digest::of(&buf));
                    match actual {
                        Ok(d) if d == record.digest => {}
                        Ok(d) => report.damaged.push(damage(
                            at,
                            format!(
                                "data does not match its checksum (stored {}, read {d})",
                                record.digest
                            ),
                        )),
                        Err(e) => report.damaged.push(damage(at, format!("unreadable: {e}"))),
                    }
                }
            }
        }
        report.ok = report.damaged.is_empty();
        report.readable_by_others = readable_by_others(&self.root);
        Ok(report)
    }
}

/// The store's directories and files that group or others may read: the root, its
/// directories, and what is in them (one level down: packs/ and snapshots/ are flat).
fn readable_by_others(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut paths = vec![root.to_owned()];
    for dir in [root.to_owned(), root.join("packs"), root.join("snapshots")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            paths.extend(entries.flatten().map(|e| e.path()));
        }
    }
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|p| {
            let mode = std::fs::symlink_metadata(&p).ok()?.mode();
            (mode & 0o044 != 0).then(|| format!("{} (mode {:o})", p.display(), mode & 0o7777))
        })
        .collect()
}

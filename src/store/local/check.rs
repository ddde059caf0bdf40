//! `ebsnap check`: the local store's structure, and with `read_data` every block's data,
//! checked against what its maps and pack indexes say.

use super::encrypted;
use super::keys::NamedKey;
use super::map::{Record, ZERO_PACK};
use super::store::{Inner, LocalStore, Shared};
use crate::block::{BlockIndex, Digest, BLOCK_SIZE};
use crate::store::{SnapshotId, SnapshotStatus, StoreResult};
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Encrypted snapshots whose data was not read, and why (their key is missing):
    /// their structure was checked, their data was not.
    pub not_read: Vec<String>,
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

/// What checking one snapshot's data needs: the key its blocks open with, and the
/// indexes and buffer shared across snapshots.
struct DataCheck<'a> {
    read_data: bool,
    key: Option<Arc<NamedKey>>,
    indexes: &'a mut HashMap<u32, Vec<Digest>>,
    buf: &'a mut [u8],
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
            // Without its key an encrypted snapshot's structure is still checked (its
            // map against the pack indexes), but not its data: the report says so.
            let key = self.snapshot_key(&inner.get(&id)?.meta);
            if let (Err(e), true) = (&key, read_data) {
                report.not_read.push(format!("{id}: {e}"));
            }
            let mut data = DataCheck {
                read_data: read_data && key.is_ok(),
                key: key.ok().flatten(),
                indexes: &mut indexes,
                buf: &mut buf,
            };
            check_snapshot(&mut inner, &id, &mut data, &mut report)?;
        }
        report.ok = report.damaged.is_empty();
        report.readable_by_others = readable_by_others(&self.root);
        Ok(report)
    }
}

fn check_snapshot(
    inner: &mut Inner,
    id: &SnapshotId,
    data: &mut DataCheck<'_>,
    report: &mut CheckReport,
) -> StoreResult<()> {
    let damage = |block: Option<BlockIndex>, problem: String| Damage {
        snapshot_id: id.to_string(),
        block: block.map(|b| b.0),
        problem,
    };
    let map = match inner.map(id) {
        Ok(map) => map,
        Err(e) => {
            let problem = format!("its block map is unreadable: {e}");
            report.damaged.push(damage(None, problem));
            return Ok(());
        }
    };
    for record in map.iter_from(BlockIndex(0)) {
        report.blocks_checked += 1;
        if let Some(problem) = check_record(inner, &record, data)? {
            report.damaged.push(damage(Some(record.index), problem));
        }
    }
    Ok(())
}

/// What is wrong with one block of a map, if anything.
fn check_record(
    inner: &mut Inner,
    record: &Record,
    data: &mut DataCheck<'_>,
) -> StoreResult<Option<String>> {
    if record.location.pack == ZERO_PACK {
        let bad = record.digest != Digest::zero_block();
        return Ok(bad.then(|| "a zero block with another checksum".into()));
    }
    let pack = record.location.pack;
    if let std::collections::hash_map::Entry::Vacant(slot) = data.indexes.entry(pack) {
        slot.insert(inner.packs.idx_digests(pack).unwrap_or_default());
    }
    let listed = data.indexes[&pack]
        .get(record.location.slot as usize)
        .copied();
    if listed != Some(record.digest) {
        return Ok(Some(format!(
            "pack {pack:08x} slot {} is not indexed with this block's checksum",
            record.location.slot
        )));
    }
    if !data.read_data {
        return Ok(None);
    }
    let key = data.key.as_deref();
    let (file, aead) = inner.packs.files(pack, key.is_some())?;
    let read = encrypted::read_block(&file, aead.as_deref(), key, record, data.buf);
    let expected = encrypted::checksum(key, record);
    Ok(match read.map(|opened| (opened, Digest::of(data.buf))) {
        Ok((true, d)) if d == expected => None,
        Ok((false, _)) => Some("data fails its authentication tag (damaged, or moved)".into()),
        Ok((true, d)) => Some(format!(
            "data does not match its checksum (stored {expected}, read {d})"
        )),
        Err(e) => Some(format!("unreadable: {e}")),
    })
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

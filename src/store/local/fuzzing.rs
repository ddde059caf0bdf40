//! Entry points for the fuzz targets (`fuzz/`): the local store's on-disk parsers,
//! each given a file's bytes. Not an API: hidden from the documentation, and free to
//! change with the targets. `dir` is a scratch directory the caller owns.

use super::journal::Journal;
use super::layout::{check_format, read_key};
use super::map::MapFile;
use super::meta::Meta;
use super::pack::Packs;
use crate::block::BlockIndex;
use crate::store::{SnapshotInfo, StoreResult};
use std::path::Path;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("the scratch directory is writable");
}

/// A completed snapshot's block map: opened, every record read in order, and each
/// looked up. `Ok`: the number of records.
pub fn map_file(dir: &Path, bytes: &[u8]) -> StoreResult<usize> {
    let path = dir.join("fuzz.map");
    write(&path, bytes);
    let map = MapFile::open(&path)?;
    let mut count = 0;
    for record in map.iter_from(BlockIndex(0)) {
        // A map that is not sorted (only damage makes one) may not find its records,
        // but must neither crash nor loop.
        let _ = map.get(record.index);
        count += 1;
    }
    Ok(count)
}

/// A pending snapshot's journal: every record, in index order.
pub fn journal(dir: &Path, bytes: &[u8]) -> StoreResult<usize> {
    let path = dir.join("fuzz.journal");
    write(&path, bytes);
    let journal = Journal::open(&path)?;
    let mut count = 0;
    for record in journal.records() {
        record?;
        count += 1;
    }
    Ok(count)
}

/// A pack index: the digests it lists.
pub fn pack_index(dir: &Path, bytes: &[u8]) -> StoreResult<usize> {
    let packs = dir.join("packs");
    std::fs::create_dir_all(&packs).expect("the scratch directory is writable");
    write(&packs.join("00000001.idx"), bytes);
    Ok(Packs::new(&packs)?.idx_digests(1)?.len())
}

/// A snapshot's metadata file.
pub fn meta(bytes: &[u8]) -> StoreResult<SnapshotInfo> {
    Meta::parse(bytes, "fuzz")?.to_info()
}

/// The store's format file and its token key.
pub fn format_and_key(dir: &Path, format: &[u8], key: &[u8]) -> (StoreResult<()>, bool) {
    write(&dir.join("format.json"), format);
    write(&dir.join("key"), key);
    (
        check_format(&dir.join("format.json")),
        read_key(&dir.join("key")).is_ok(),
    )
}

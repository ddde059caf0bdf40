//! Block maps: which block of a snapshot lives where.
//!
//! A completed snapshot has a `.map` file: a header, then fixed 48-byte records sorted by
//! block index, holding only the blocks written to that snapshot (its parent's come from
//! the parent's map). A pending snapshot has a `.journal`: a sparse file with the record
//! of block `i` at byte `48 * i`, so puts in any order need no sorting and no memory, and
//! completing reads it back in index order, skipping its holes.

use crate::block::{BlockIndex, Digest, LinearAggregate};
use crate::store::{StoreError, StoreResult};
use crate::sys::{sync_dir, tmp_path};
use memmap2::Mmap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const RECORD_LEN: usize = 48;
const MAP_MAGIC: &[u8; 8] = b"EBSNMAP1";
const MAP_HEADER_LEN: usize = 16;
/// `pack` value of a block that is all zeros: nothing is stored for it.
pub(crate) const ZERO_PACK: u32 = u32::MAX;

/// Where one block's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Pack file number (from 1), or [`ZERO_PACK`].
    pub pack: u32,
    pub slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub index: BlockIndex,
    pub location: Location,
    pub digest: Digest,
}

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..8].copy_from_slice(&self.index.0.to_le_bytes());
        out[8..12].copy_from_slice(&self.location.pack.to_le_bytes());
        out[12..16].copy_from_slice(&self.location.slot.to_le_bytes());
        out[16..].copy_from_slice(&self.digest.0);
        out
    }

    /// Decodes a record; `None` for an empty journal slot (pack 0).
    pub fn decode(raw: &[u8]) -> Option<Record> {
        Some(Record::decode_any(raw)).filter(|r| r.location.pack != 0)
    }

    /// Decodes a record whatever it holds. In a map every record is one: a damaged
    /// record with pack 0 names a pack that does not exist, which reading the block
    /// (and `check`) then report.
    fn decode_any(raw: &[u8]) -> Record {
        let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
        Record {
            index: BlockIndex(u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"))),
            location: Location {
                pack: u32_at(8),
                slot: u32_at(12),
            },
            digest: Digest(raw[16..48].try_into().expect("32 bytes")),
        }
    }
}

/// A completed snapshot's map, memory-mapped: opening it costs nothing and reading it
/// touches only the pages needed.
#[derive(Debug)]
pub(crate) struct MapFile {
    mmap: Option<Mmap>,
    count: usize,
}

impl MapFile {
    pub fn open(path: &Path) -> StoreResult<MapFile> {
        let file = File::open(path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
            .len() as usize;
        let corrupt = |m: &str| StoreError::corrupt(path.display().to_string(), m.to_owned());
        if len < MAP_HEADER_LEN {
            return Err(corrupt("shorter than its header"));
        }
        // SAFETY: map files are never modified in place (only replaced by rename), so the
        // mapping cannot change under us.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| StoreError::io(format!("mapping {}", path.display()), e))?;
        if &mmap[..8] != MAP_MAGIC {
            return Err(corrupt("not a block map (bad magic)"));
        }
        let count = u64::from_le_bytes(mmap[8..16].try_into().expect("8 bytes")) as usize;
        if count
            .checked_mul(RECORD_LEN)
            .and_then(|n| n.checked_add(MAP_HEADER_LEN))
            != Some(len)
        {
            return Err(corrupt("record count does not match the file length"));
        }
        Ok(MapFile {
            mmap: (count > 0).then_some(mmap),
            count,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    fn record(&self, i: usize) -> Record {
        let mmap = self.mmap.as_ref().expect("non-empty map");
        let at = MAP_HEADER_LEN + i * RECORD_LEN;
        Record::decode_any(&mmap[at..at + RECORD_LEN])
    }

    /// Position of the first record with index >= `index`.
    fn seek(&self, index: BlockIndex) -> usize {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.record(mid).index < index {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn get(&self, index: BlockIndex) -> Option<Record> {
        let at = self.seek(index);
        (at < self.count)
            .then(|| self.record(at))
            .filter(|r| r.index == index)
    }

    pub fn iter_from(&self, index: BlockIndex) -> impl Iterator<Item = Record> + '_ {
        (self.seek(index)..self.count).map(|i| self.record(i))
    }
}

/// Writes a map file from records given in ascending order, computing the block count
/// and the LINEAR aggregate on the way. Written under a temporary name; `commit`
/// fsyncs and renames it into place.
pub(crate) struct MapWriter {
    path: PathBuf,
    out: BufWriter<File>,
    aggregate: LinearAggregate,
}

impl MapWriter {
    pub fn create(path: &Path) -> StoreResult<MapWriter> {
        let tmp = tmp_path(path);
        let file = crate::sys::create_private(&tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let header = [*MAP_MAGIC, [0; 8]].concat();
        out.write_all(&header)
            .map_err(|e| StoreError::io(format!("writing {}", tmp.display()), e))?;
        Ok(MapWriter {
            path: path.to_owned(),
            out,
            aggregate: LinearAggregate::new(),
        })
    }

    /// Adds a record; `checksum` is its block's SHA-256 (which the record holds only
    /// sealed, for an encrypted block), for the LINEAR aggregate.
    pub fn push(&mut self, record: &Record, checksum: &Digest) -> StoreResult<()> {
        self.aggregate
            .push(record.index, checksum)
            .map_err(|e| StoreError::corrupt(self.path.display().to_string(), e.to_string()))?;
        self.out
            .write_all(&record.encode())
            .map_err(|e| StoreError::io(format!("writing {}", self.path.display()), e))
    }

    /// Block count and aggregate of what was pushed; the map is not yet in place.
    pub fn finish(self) -> StoreResult<(PendingMap, u64, Digest)> {
        let count = self.aggregate.count();
        let aggregate = self.aggregate.finish();
        let tmp = tmp_path(&self.path);
        let io = |e| StoreError::io(format!("writing {}", tmp.display()), e);
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.write_all_at(&(count).to_le_bytes(), 8).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok((PendingMap { path: self.path }, count, aggregate))
    }
}

/// A finished map under its temporary name.
pub(crate) struct PendingMap {
    path: PathBuf,
}

impl PendingMap {
    /// Renames the map into place, durably.
    pub fn commit(self) -> StoreResult<()> {
        let io = |e| StoreError::io(format!("renaming {} into place", self.path.display()), e);
        std::fs::rename(tmp_path(&self.path), &self.path).map_err(io)?;
        sync_dir(self.path.parent().expect("maps live in a directory")).map_err(io)
    }

    pub fn discard(self) {
        let _ = std::fs::remove_file(tmp_path(&self.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64, pack: u32) -> Record {
        Record {
            index: BlockIndex(i),
            location: Location {
                pack,
                slot: i as u32,
            },
            digest: Digest([i as u8; 32]),
        }
    }

    #[test]
    fn map_file_round_trips_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let mut w = MapWriter::create(&path).unwrap();
        for i in [1u64, 5, 9] {
            w.push(&rec(i, 1), &rec(i, 1).digest).unwrap();
        }
        assert!(
            w.push(&rec(2, 1), &rec(2, 1).digest).is_err(),
            "out-of-order records are refused"
        );
        let (pending, count, _) = w.finish().unwrap();
        pending.commit().unwrap();
        assert_eq!(count, 3);
        let m = MapFile::open(&path).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(BlockIndex(5)), Some(rec(5, 1)));
        assert_eq!(m.get(BlockIndex(6)), None);
        let from6: Vec<u64> = m.iter_from(BlockIndex(6)).map(|r| r.index.0).collect();
        assert_eq!(from6, vec![9]);
    }

    /// Found by the local_files fuzz target: a map record with pack 0 (an empty slot
    /// in a journal) panicked when read.
    #[test]
    fn a_map_record_with_pack_0_is_read_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let mut raw = [*MAP_MAGIC, 1u64.to_le_bytes()].concat();
        raw.extend_from_slice(&rec(3, 0).encode());
        std::fs::write(&path, raw).unwrap();
        let m = MapFile::open(&path).unwrap();
        assert_eq!(m.get(BlockIndex(3)), Some(rec(3, 0)));
        assert_eq!(m.iter_from(BlockIndex(0)).count(), 1);
    }

    #[test]
    fn damaged_map_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.map");
        std::fs::write(&path, b"EBSNMAP1\x05\0\0\0\0\0\0\0short").unwrap();
        assert!(matches!(
            MapFile::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

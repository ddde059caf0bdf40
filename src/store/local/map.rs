//! Block maps: which block of a snapshot lives where.
//!
//! A completed snapshot has a `.map` file: a header, then fixed 48-byte records sorted by
//! block index, holding only the blocks written to that snapshot (its parent's come from
//! the parent's map). A pending snapshot has a `.journal`: a sparse file with the record
//! of block `i` at byte `48 * i`, so puts in any order need no sorting and no memory, and
//! completing reads it back in index order, skipping its holes.

use super::fsutil::open_rw;
use crate::block::{BlockIndex, Digest, LinearAggregate};
use crate::store::{StoreError, StoreResult};
use crate::sys::{seek_data, sync_dir, tmp_path};
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

    pub fn push(&mut self, record: &Record) -> StoreResult<()> {
        self.aggregate
            .push(record.index, &record.digest)
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

/// A pending snapshot's journal: the record for block `i` at byte `48 * i`.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    pub fn open(path: &Path) -> StoreResult<Journal> {
        Ok(Journal {
            file: open_rw(path, true)?,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, record: &Record) -> StoreResult<()> {
        self.file
            .write_all_at(&record.encode(), self.offset(record.index)?)
            .map_err(|e| StoreError::io(format!("writing {}", self.path.display()), e))
    }

    /// Makes the records written so far durable.
    pub fn sync(&self) -> StoreResult<()> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(format!("syncing {}", self.path.display()), e))
    }

    pub fn clear(&self, index: BlockIndex) -> StoreResult<()> {
        self.file
            .write_all_at(&[0u8; RECORD_LEN], self.offset(index)?)
            .map_err(|e| StoreError::io(format!("writing {}", self.path.display()), e))
    }

    /// Where block `index`'s record is (an index past any volume is refused, not
    /// wrapped around onto another record).
    fn offset(&self, index: BlockIndex) -> StoreResult<u64> {
        index.0.checked_mul(RECORD_LEN as u64).ok_or_else(|| {
            StoreError::corrupt(
                self.path.display().to_string(),
                format!("block index {index} is past any journal"),
            )
        })
    }

    /// Every record, ascending, skipping the holes of the sparse file so that a large
    /// volume with few puts reads little.
    pub fn records(&self) -> JournalRecords<'_> {
        JournalRecords {
            journal: self,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            at: 0,
            done: false,
        }
    }
}

pub(crate) struct JournalRecords<'a> {
    journal: &'a Journal,
    pos: u64,
    buf: Vec<u8>,
    /// Where in the file `buf` starts.
    buf_start: u64,
    at: usize,
    done: bool,
}

const JOURNAL_CHUNK: usize = RECORD_LEN * 16384;

impl JournalRecords<'_> {
    /// Reads the next chunk holding data into `buf`; `false` at the end.
    fn refill(&mut self) -> std::io::Result<bool> {
        let Some(data) = seek_data(&self.journal.file, self.pos)? else {
            return Ok(false);
        };
        let start = (data / RECORD_LEN as u64) * RECORD_LEN as u64;
        let start = start.max(self.pos);
        self.buf.resize(JOURNAL_CHUNK, 0);
        let n = read_at_most(&self.journal.file, &mut self.buf, start)?;
        if n == 0 {
            return Ok(false);
        }
        self.buf.truncate(n - n % RECORD_LEN);
        self.buf_start = start;
        self.pos = start + self.buf.len() as u64;
        self.at = 0;
        Ok(!self.buf.is_empty())
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Iterator for JournalRecords<'_> {
    type Item = StoreResult<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            while self.at + RECORD_LEN <= self.buf.len() {
                let raw = &self.buf[self.at..self.at + RECORD_LEN];
                let offset = self.buf_start + self.at as u64;
                self.at += RECORD_LEN;
                // A slot holds a record only if the record names that slot's block:
                // anything else is damage, and is skipped like an empty slot (a put
                // at that index overwrites it). Taken for a record, it would make a
                // repair clear the slot of the block it names, another block's.
                if let Some(record) = Record::decode(raw)
                    .filter(|r| r.index.0.checked_mul(RECORD_LEN as u64) == Some(offset))
                {
                    return Some(Ok(record));
                }
            }
            match self.refill() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(StoreError::io(
                        format!("reading {}", self.journal.path.display()),
                        e,
                    )));
                }
            }
        }
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
    fn journal_yields_records_in_index_order_whatever_the_write_order() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        for i in [900_000u64, 3, 70_000, 0, 3] {
            j.write(&rec(i, 1)).unwrap();
        }
        j.write(&rec(70_001, 2)).unwrap();
        j.clear(BlockIndex(70_001)).unwrap();
        let got: Vec<u64> = j.records().map(|r| r.unwrap().index.0).collect();
        assert_eq!(got, vec![0, 3, 70_000, 900_000]);
    }

    /// Found by the local_store fuzz target: a damaged journal record naming another
    /// block (or no possible block) made a repair clear that other block's record (or
    /// overflow).
    #[test]
    fn journal_records_must_name_their_own_slot() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        j.write(&rec(5, 1)).unwrap();
        j.file.write_all_at(&rec(5, 2).encode(), 2 * 48).unwrap();
        j.file.write_all_at(&rec(u64::MAX, 3).encode(), 48).unwrap();
        let got: Vec<Record> = j.records().map(|r| r.unwrap()).collect();
        assert_eq!(got, vec![rec(5, 1)], "only the record in its own slot");
        assert!(
            j.clear(BlockIndex(u64::MAX)).is_err(),
            "refused, not wrapped"
        );
        assert!(j.write(&rec(u64::MAX / 2, 1)).is_err());
    }

    #[test]
    fn map_file_round_trips_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let mut w = MapWriter::create(&path).unwrap();
        for i in [1u64, 5, 9] {
            w.push(&rec(i, 1)).unwrap();
        }
        assert!(
            w.push(&rec(2, 1)).is_err(),
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

//! A pending snapshot's journal: a sparse file with the record of block `i` at byte
//! `48 * i`, so puts in any order need no sorting and no memory.
//!
//! A journal holds a descriptor only while it has records that no flush has yet made
//! durable. A store may hold many pending snapshots (and more that timed out to
//! `error`); a descriptor each ran a server out of them (EMFILE) at about a thousand,
//! after which it could not even reopen its own store. And a flush syncs only the
//! journals that were written since the last one, not every pending snapshot's: with
//! thousands pending, syncing them all under the store lock made each put take seconds.

use super::fsutil::open_rw;
use super::map::{Record, RECORD_LEN};
use crate::block::BlockIndex;
use crate::store::{StoreError, StoreResult};
use crate::sys::seek_data;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// Open while records written through it are not yet synced; `None` otherwise.
    unsynced: Mutex<Option<File>>,
}

impl Journal {
    /// Creates the journal if it does not exist. No descriptor is kept.
    pub fn open(path: &Path) -> StoreResult<Journal> {
        drop(open_rw(path, true)?);
        Ok(Journal {
            path: path.to_owned(),
            unsynced: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unsynced(&self) -> MutexGuard<'_, Option<File>> {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` at `offset`, keeping the descriptor until the next sync.
    fn write_at(&self, bytes: &[u8], offset: u64) -> StoreResult<()> {
        let mut unsynced = self.unsynced();
        if unsynced.is_none() {
            *unsynced = Some(open_rw(&self.path, false)?);
        }
        let file = unsynced.as_ref().expect("just opened");
        file.write_all_at(bytes, offset)
            .map_err(|e| StoreError::io(format!("writing {}", self.path.display()), e))
    }

    pub fn write(&self, record: &Record) -> StoreResult<()> {
        self.write_at(&record.encode(), self.offset(record.index)?)
    }

    pub fn clear(&self, index: BlockIndex) -> StoreResult<()> {
        self.write_at(&[0u8; RECORD_LEN], self.offset(index)?)
    }

    /// Whether records were written since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced().is_some()
    }

    /// Makes the records written so far durable, and lets the descriptor go. (Nothing to
    /// do for a journal not written since its last sync.) A failed sync keeps the
    /// descriptor, so that the next flush tries again.
    pub fn sync(&self) -> StoreResult<()> {
        let mut unsynced = self.unsynced();
        if let Some(file) = unsynced.as_ref() {
            file.sync_data()
                .map_err(|e| StoreError::io(format!("syncing {}", self.path.display()), e))?;
            *unsynced = None;
        }
        Ok(())
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
    /// volume with few puts reads little. The file is open while the records are read.
    pub fn records(&self) -> JournalRecords<'_> {
        let file = File::open(&self.path);
        JournalRecords {
            journal: self,
            file,
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
    file: std::io::Result<File>,
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
        let file = match &self.file {
            Ok(f) => f,
            Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        let Some(data) = seek_data(file, self.pos)? else {
            return Ok(false);
        };
        let start = (data / RECORD_LEN as u64) * RECORD_LEN as u64;
        let start = start.max(self.pos);
        self.buf.resize(JOURNAL_CHUNK, 0);
        let n = read_at_most(file, &mut self.buf, start)?;
        if n == 0 {
            return Ok(false);
        }
        self.buf.truncate(n - n % RECORD_LEN);
        self.buf_start = start;
        self.pos = start + self.buf.len() as u64;
        self.at = 0;
        Ok(!self.buf.is_empty())
    }

    /// The next record in the buffer that names its own slot.
    fn next_buffered(&mut self) -> Option<Record> {
        while self.at + RECORD_LEN <= self.buf.len() {
            let raw = &self.buf[self.at..self.at + RECORD_LEN];
            let offset = self.buf_start + self.at as u64;
            self.at += RECORD_LEN;
            // A slot holds a record only if the record names that slot's block:
            // anything else is damage, and is skipped like an empty slot (a put at
            // that index overwrites it). Taken for a record, it would make a repair
            // clear the slot of the block it names, another block's.
            if let Some(record) = Record::decode(raw)
                .filter(|r| r.index.0.checked_mul(RECORD_LEN as u64) == Some(offset))
            {
                return Some(record);
            }
        }
        None
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
        while !self.done {
            if let Some(record) = self.next_buffered() {
                return Some(Ok(record));
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
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Digest;
    use crate::store::local::map::Location;

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

    #[test]
    fn a_descriptor_is_held_only_until_the_records_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        assert!(!j.has_unsynced(), "a new journal holds no descriptor");
        j.write(&rec(2, 1)).unwrap();
        assert!(j.has_unsynced());
        j.sync().unwrap();
        assert!(!j.has_unsynced(), "synced: the descriptor is gone");
        let got: Vec<Record> = j.records().map(|r| r.unwrap()).collect();
        assert_eq!(got, vec![rec(2, 1)], "and the record is there");
    }

    /// Found by the local_store fuzz target: a damaged journal record naming another
    /// block (or no possible block) made a repair clear that other block's record (or
    /// overflow).
    #[test]
    fn journal_records_must_name_their_own_slot() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        j.write(&rec(5, 1)).unwrap();
        let file = open_rw(j.path(), false).unwrap();
        file.write_all_at(&rec(5, 2).encode(), 2 * 48).unwrap();
        file.write_all_at(&rec(u64::MAX, 3).encode(), 48).unwrap();
        let got: Vec<Record> = j.records().map(|r| r.unwrap()).collect();
        assert_eq!(got, vec![rec(5, 1)], "only the record in its own slot");
        assert!(
            j.clear(BlockIndex(u64::MAX)).is_err(),
            "refused, not wrapped"
        );
        assert!(j.write(&rec(u64::MAX / 2, 1)).is_err());
    }
}

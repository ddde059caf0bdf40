//! The upload journal: what an interrupted backup had already put, so that running the
//! same command again continues its pending snapshot and puts only what is missing.
//!
//! One file per (store, source) under `$XDG_STATE_HOME/ebsnap/uploads`: a 4 KiB header
//! (magic, then JSON: store, source, snapshot id, client token, parent, volume size,
//! encryption, timeout, the window of uncertain puts, the completion once requested),
//! then one 32-byte record per
//! block at `4096 + 32 * index`: the SHA-256 of the block put there, or zeros where
//! nothing was put (a sparse file, like a manifest: a 64 TiB volume with few puts costs
//! little). A record is written only after the store has said the block is durable
//! ([`SnapshotStore::flush`](crate::store::SnapshotStore::flush)), and is fsynced before
//! the backup goes on, so the journal never claims a block the store could have lost.
//!
//! Puts that were under way at a crash may have reached the store without a record.
//! Puts go out in ascending index order, so the header bounds them: every put below
//! `settled_below` is recorded (or never happened), and none was sent at or above
//! `intent_below` (raised, durably, before a put beyond it is sent). A resumed backup
//! writes every block in between again, so no stray put survives unaccounted. A
//! resumed backup that puts a block again below `settled_below` (its content changed)
//! first lowers the mark to it: until the next checkpoint, that record is stale.
//!
//! A record's position is its block index, so records written twice (a block put again
//! with new content) simply overwrite.
//!
//! The journal is made before StartSnapshot is sent, naming its client token and no
//! snapshot yet; the snapshot id is added when the answer comes. A run killed in
//! between leaves the token, and the rerun sends StartSnapshot again with it: the store
//! then hands back the snapshot the first request may have made, instead of that one
//! staying behind, pending and known to nobody.

use super::baseline::Bitmap;
use crate::block::{BlockIndex, Digest, Source, BLOCK_SIZE};
use crate::store::SnapshotId;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 8] = b"EBSNUPL1";
const HEADER_LEN: u64 = 4096;
const RECORD_LEN: u64 = 32;

/// What the pending snapshot is, and what it was started with: a rerun resumes only a
/// snapshot started the way it would start one itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadHeader {
    pub store: String,
    pub source: String,
    /// The source's size in bytes when the snapshot was started (its size tag).
    #[serde(default)]
    pub source_bytes: u64,
    /// `None` while StartSnapshot is in doubt (sent, and its answer not yet recorded).
    pub snapshot_id: Option<String>,
    /// The StartSnapshot request's `ClientToken`.
    pub client_token: String,
    pub parent: Option<String>,
    pub volume_size_gib: u64,
    pub encrypted: bool,
    /// The snapshot's `Timeout`: minutes it may stay idle before the service fails it.
    pub timeout_minutes: u32,
    /// Every put below this index is recorded.
    pub settled_below: u64,
    /// No put was sent at or above this index.
    pub intent_below: u64,
    /// Set (durably) before CompleteSnapshot is sent: the snapshot may be sealing, so
    /// it is never written to again, only completed with these same figures.
    pub completion: Option<Completion>,
}

/// What CompleteSnapshot was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Completion {
    pub changed_blocks_count: u64,
    pub aggregate: String,
}

#[derive(Debug)]
pub(crate) struct UploadJournal {
    file: File,
    path: PathBuf,
    header: UploadHeader,
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

impl UploadJournal {
    /// Starts a journal for a snapshot about to be started, replacing any older one.
    /// The header is durable (and the file in place) before StartSnapshot is sent.
    pub fn create(path: &Path, header: UploadHeader) -> io::Result<UploadJournal> {
        let dir = path.parent().expect("journals live in a directory");
        crate::sys::private_dir_all(dir)?;
        let tmp = path.with_extension("journal.tmp");
        let file = crate::sys::create_private(&tmp)?;
        let journal = UploadJournal {
            file,
            path: path.to_owned(),
            header,
        };
        journal.write_header()?;
        std::fs::rename(&tmp, path)?;
        crate::sys::sync_dir(dir)?;
        Ok(journal)
    }

    /// Opens the journal at `path`; `Ok(None)` when there is none.
    pub fn open(path: &Path) -> io::Result<Option<UploadJournal>> {
        let file = match crate::sys::private_options()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = parse_header(&file, path)?;
        Ok(Some(UploadJournal {
            file,
            path: path.to_owned(),
            header,
        }))
    }

    pub fn header(&self) -> &UploadHeader {
        &self.header
    }

    /// The snapshot StartSnapshot answered with, once recorded (and well formed).
    pub fn snapshot(&self) -> Option<SnapshotId> {
        self.header.snapshot_id.as_deref()?.parse().ok()
    }

    /// Records (durably) the snapshot StartSnapshot answered with, before any block
    /// is put into it.
    pub fn started(&mut self, id: &str) -> io::Result<()> {
        self.header.snapshot_id = Some(id.to_owned());
        self.write_header()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the journal last recorded progress: the snapshot's idle time counts from
    /// about then.
    pub fn last_activity(&self) -> io::Result<SystemTime> {
        self.file.metadata()?.modified()
    }

    /// Whether the snapshot's idle timeout has (nearly) run out: resuming it would only
    /// fail at the first put. `margin` is kept for the time the rerun takes to get going.
    pub fn expired(&self, now: SystemTime, margin: Duration) -> bool {
        let timeout = Duration::from_secs(u64::from(self.header.timeout_minutes) * 60);
        match self.last_activity() {
            Ok(at) => at + timeout.saturating_sub(margin) <= now,
            Err(_) => true,
        }
    }

    /// Records blocks the store has made durable, and makes the records durable; then
    /// notes (durably, after them) that every put below `settled_below` is recorded,
    /// and raises the intent mark to `intent_below` in the same write.
    pub fn record(
        &mut self,
        blocks: &[(BlockIndex, Digest)],
        settled_below: u64,
        intent_below: u64,
    ) -> io::Result<()> {
        for (index, digest) in blocks {
            self.file.write_all_at(&digest.0, record_offset(*index)?)?;
        }
        self.file.sync_data()?;
        let intent_below = intent_below.max(self.header.intent_below);
        if (settled_below, intent_below) != (self.header.settled_below, self.header.intent_below) {
            self.header.settled_below = settled_below;
            self.header.intent_below = intent_below;
            self.write_header()?;
        }
        Ok(())
    }

    /// Notes (durably) that puts may be sent below `intent_below`, before they are.
    pub fn raise_intent(&mut self, intent_below: u64) -> io::Result<()> {
        if intent_below > self.header.intent_below {
            self.header.intent_below = intent_below;
            self.write_header()?;
        }
        Ok(())
    }

    /// Notes (durably) that a put is about to be sent at `index`, below the settled
    /// mark: the puts from there on are not all recorded until a checkpoint says so.
    pub fn unsettle(&mut self, index: u64) -> io::Result<()> {
        if index < self.header.settled_below {
            self.header.settled_below = index;
            self.write_header()?;
        }
        Ok(())
    }

    /// The indexes at which a put may have landed without being recorded.
    pub fn uncertain(&self) -> std::ops::Range<u64> {
        self.header.settled_below..self.header.intent_below.max(self.header.settled_below)
    }

    /// The digest recorded for `index`, if a block was put there.
    pub fn digest_at(&self, index: BlockIndex) -> io::Result<Option<Digest>> {
        let mut raw = [0u8; RECORD_LEN as usize];
        match self.file.read_exact_at(&mut raw, record_offset(index)?) {
            Ok(()) => Ok(Some(Digest(raw)).filter(|_| raw != [0; 32])),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The indexes at which blocks were put. Reads only the data regions of the sparse
    /// file (as a [`Source`] does), so a large volume with few puts reads little.
    pub fn put_blocks(&self) -> io::Result<Bitmap> {
        let source = Source::open(&self.path)?;
        let mut bitmap = Bitmap::default();
        let mut buf = vec![0u8; BLOCK_SIZE];
        for chunk in source.data_blocks() {
            let chunk = chunk?;
            source.read_block(chunk, &mut buf)?;
            // Chunks and records both align on 32 bytes: no record straddles two chunks.
            for (slot, raw) in buf.chunks_exact(RECORD_LEN as usize).enumerate() {
                let offset = chunk.offset() + slot as u64 * RECORD_LEN;
                if offset >= HEADER_LEN && raw.iter().any(|&b| b != 0) {
                    bitmap.set(BlockIndex((offset - HEADER_LEN) / RECORD_LEN));
                }
            }
        }
        Ok(bitmap)
    }

    /// Notes that CompleteSnapshot is about to be sent (durably, before it is).
    pub fn mark_completing(&mut self, completion: Completion) -> io::Result<()> {
        self.header.completion = Some(completion);
        self.write_header()
    }

    /// Forgets the upload: the snapshot completed, or was given up.
    pub fn remove(self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn write_header(&self) -> io::Result<()> {
        let json = serde_json::to_vec(&self.header).expect("serializable");
        if json.len() > HEADER_LEN as usize - 12 {
            return Err(invalid(&self.path, "journal header too long"));
        }
        let mut head = vec![0u8; HEADER_LEN as usize];
        head[..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&(json.len() as u32).to_le_bytes());
        head[12..12 + json.len()].copy_from_slice(&json);
        self.file.write_all_at(&head, 0)?;
        self.file.sync_data()
    }
}

fn record_offset(index: BlockIndex) -> io::Result<u64> {
    index
        .0
        .checked_mul(RECORD_LEN)
        .and_then(|o| o.checked_add(HEADER_LEN))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "block index too large"))
}

fn parse_header(file: &File, path: &Path) -> io::Result<UploadHeader> {
    let mut head = vec![0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|_| invalid(path, "shorter than a journal header"))?;
    if &head[..8] != MAGIC {
        return Err(invalid(path, "not an ebsnap upload journal"));
    }
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
    let json = head
        .get(12..12 + len)
        .ok_or_else(|| invalid(path, "header too long"))?;
    serde_json::from_slice(json).map_err(|e| invalid(path, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> UploadHeader {
        UploadHeader {
            store: "local:/s".into(),
            source: "/dev/x".into(),
            source_bytes: 1 << 30,
            snapshot_id: Some("snap-0123456789abcdef0".into()),
            client_token: "t".into(),
            parent: None,
            volume_size_gib: 1,
            encrypted: false,
            timeout_minutes: 60,
            settled_below: 0,
            intent_below: 0,
            completion: None,
        }
    }

    #[test]
    fn records_survive_reopening_and_only_put_blocks_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads/x.journal");
        let mut j = UploadJournal::create(&path, header()).unwrap();
        let far = BlockIndex(3 * 16384 + 5); // beyond the first 512 KiB of records
        j.raise_intent(far.0 + 256).unwrap();
        j.record(
            &[(BlockIndex(0), Digest([1; 32])), (far, Digest([2; 32]))],
            7,
            9,
        )
        .unwrap();
        let j = UploadJournal::open(&path).unwrap().expect("exists");
        assert_eq!(j.uncertain(), 7..far.0 + 256);
        assert_eq!(j.digest_at(far).unwrap(), Some(Digest([2; 32])));
        assert_eq!(j.digest_at(BlockIndex(1)).unwrap(), None);
        assert_eq!(j.digest_at(BlockIndex(1 << 40)).unwrap(), None);
        let put = j.put_blocks().unwrap();
        assert!(put.get(BlockIndex(0)) && put.get(far) && !put.get(BlockIndex(1)));
        assert_eq!(put.end(), far.0 + 1);
    }

    #[test]
    fn completing_is_durable_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.journal");
        let mut j = UploadJournal::create(&path, header()).unwrap();
        let done = Completion {
            changed_blocks_count: 3,
            aggregate: "x".into(),
        };
        j.mark_completing(done.clone()).unwrap();
        let j = UploadJournal::open(&path).unwrap().unwrap();
        assert_eq!(j.header().completion, Some(done));
        std::fs::write(&path, b"not a journal").unwrap();
        assert!(UploadJournal::open(&path).is_err());
        assert!(UploadJournal::open(&dir.path().join("none"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_start_in_doubt_keeps_its_token_until_the_snapshot_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.journal");
        let in_doubt = UploadHeader {
            snapshot_id: None,
            ..header()
        };
        let mut j = UploadJournal::create(&path, in_doubt.clone()).unwrap();
        assert_eq!(
            UploadJournal::open(&path).unwrap().unwrap().header(),
            &in_doubt
        );
        j.started("snap-0123456789abcdef0").unwrap();
        let j = UploadJournal::open(&path).unwrap().unwrap();
        assert_eq!(j.header(), &header());
    }

    #[test]
    fn an_idle_journal_expires_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let j = UploadJournal::create(&dir.path().join("x.journal"), header()).unwrap();
        let now = SystemTime::now();
        assert!(!j.expired(now, Duration::from_secs(120)));
        assert!(j.expired(now + Duration::from_secs(59 * 60), Duration::from_secs(120)));
    }
}

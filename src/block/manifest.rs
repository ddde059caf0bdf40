//! Manifests: what ebsnap knows about a source's last backup, block by block.
//!
//! A manifest is one file: a 4 KiB header (magic, then JSON: which store and snapshot
//! it describes, the source, its size), then one 32-byte record per block at
//! `4096 + 32 * index`: the block's BLAKE3 digest, or all zeros for a block of zeros
//! (so the zero blocks of a sparse source are holes in a sparse manifest). Records are
//! fixed-size and memory-mapped: a 64 TiB volume's 134 million blocks are never loaded
//! into memory. A manifest is written under a temporary name and renamed into place only
//! after the snapshot it describes has completed.

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"EBSNMAN1";
const HEADER_LEN: u64 = 4096;
const RECORD_LEN: u64 = 32;
/// Records buffered before a write (1 MiB).
const RUN_RECORDS: usize = 32 * 1024;

/// A change-detection digest of one block (BLAKE3: faster than SHA-256, and only
/// compared with itself).
pub type ContentDigest = [u8; 32];

/// The digest of a block's content for change detection.
pub fn content_digest(data: &[u8]) -> ContentDigest {
    *blake3::hash(data).as_bytes()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    /// The store the snapshot is in (its identity, as `SnapshotStore::identity` gives it).
    pub store: String,
    pub snapshot_id: String,
    pub source: String,
    pub source_bytes: u64,
    /// Number of records.
    pub blocks: u64,
    pub digest: String,
}

/// What the manifest says of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Zero,
    Data(ContentDigest),
    /// Beyond the manifest (the source has grown since).
    Unknown,
}

/// A manifest, memory-mapped.
#[derive(Debug)]
pub struct Manifest {
    header: ManifestHeader,
    mmap: Option<Mmap>,
    /// Kept open to find the data of the sparse file (SEEK_DATA) without reading holes.
    file: File,
}

impl Manifest {
    /// Opens the manifest at `path`; `Ok(None)` when there is none.
    pub fn open(path: &Path) -> io::Result<Option<Manifest>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |m: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {m}", path.display()),
            )
        };
        let mut head = vec![0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| bad("shorter than a manifest header"))?;
        if &head[..8] != MAGIC {
            return Err(bad("not an ebsnap manifest"));
        }
        let json_len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        let json = head
            .get(12..12 + json_len)
            .ok_or_else(|| bad("header too long"))?;
        let header: ManifestHeader =
            serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
        if header.digest != "blake3" {
            return Err(bad("unknown digest"));
        }
        let len = file.metadata()?.len();
        let needed = header
            .blocks
            .checked_mul(RECORD_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN));
        if needed.is_none_or(|n| n > len) {
            return Err(bad("shorter than its records"));
        }
        // SAFETY: manifests are never modified in place (a new one replaces the old by
        // rename), so the mapping cannot change under us.
        let mmap = if header.blocks > 0 {
            Some(unsafe { Mmap::map(&file)? })
        } else {
            None
        };
        Ok(Some(Manifest { header, mmap, file }))
    }

    pub fn header(&self) -> &ManifestHeader {
        &self.header
    }

    /// The first index at or after `from` whose record may hold a digest: records in
    /// the file's holes are zero blocks, skipped without reading them (a 15 TiB
    /// source's manifest is a 961 MiB file, most of it holes). `None` past the last.
    pub fn next_data(&self, from: u64) -> io::Result<Option<u64>> {
        if from >= self.header.blocks {
            return Ok(None);
        }
        let offset = HEADER_LEN + from * RECORD_LEN;
        let data = match crate::sys::seek_data(&self.file, offset) {
            // A filesystem without SEEK_DATA: every record may hold a digest.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some(offset),
            other => other?,
        };
        Ok(data
            .map(|at| (at.max(offset) - HEADER_LEN) / RECORD_LEN)
            .filter(|&i| i < self.header.blocks))
    }

    pub fn entry(&self, index: u64) -> Entry {
        let Some(mmap) = self.mmap.as_ref().filter(|_| index < self.header.blocks) else {
            return Entry::Unknown;
        };
        let at = (HEADER_LEN + index * RECORD_LEN) as usize;
        let record: ContentDigest = mmap[at..at + RECORD_LEN as usize]
            .try_into()
            .expect("32 bytes");
        if record == [0; 32] {
            Entry::Zero
        } else {
            Entry::Data(record)
        }
    }
}

/// Writes a new manifest, records in ascending index order, under a temporary name.
pub struct ManifestWriter {
    file: File,
    path: PathBuf,
    tmp: PathBuf,
    run_start: u64,
    run: Vec<u8>,
    finished: bool,
}

impl ManifestWriter {
    pub fn create(path: &Path) -> io::Result<ManifestWriter> {
        if let Some(dir) = path.parent() {
            crate::sys::private_dir_all(dir)?;
        }
        // A name of its own: a second writer (which the caller's lock should prevent)
        // could never truncate or rename this one's file.
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(
            "{name}.{}.{}.tmp",
            std::process::id(),
            u64::from_le_bytes(nonce)
        ));
        let file = crate::sys::private_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(ManifestWriter {
            file,
            path: path.to_owned(),
            tmp,
            run_start: 0,
            run: Vec::new(),
            finished: false,
        })
    }

    /// Records block `index`: its digest, or `None` for a zero block (left a hole).
    pub fn record(&mut self, index: u64, digest: Option<&ContentDigest>) -> io::Result<()> {
        let Some(digest) = digest else { return Ok(()) };
        let contiguous = self.run_start + (self.run.len() as u64 / RECORD_LEN) == index;
        if !contiguous || self.run.len() >= RUN_RECORDS * RECORD_LEN as usize {
            self.flush()?;
            self.run_start = index;
        }
        self.run.extend_from_slice(digest);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.run.is_empty() {
            self.file
                .write_all_at(&self.run, HEADER_LEN + self.run_start * RECORD_LEN)?;
            self.run.clear();
        }
        Ok(())
    }

    /// Writes the header and makes the file durable; it is not yet in place.
    pub fn finish(mut self, header: &ManifestHeader) -> io::Result<PendingManifest> {
        self.flush()?;
        let json = serde_json::to_vec(header).expect("serializable");
        if json.len() > HEADER_LEN as usize - 12 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "manifest header too long",
            ));
        }
        let mut head = Vec::with_capacity(HEADER_LEN as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        head.resize(HEADER_LEN as usize, 0);
        self.file.write_all_at(&head, 0)?;
        self.file.set_len(HEADER_LEN + header.blocks * RECORD_LEN)?;
        self.file.sync_all()?;
        self.finished = true;
        Ok(PendingManifest {
            path: self.path.clone(),
            tmp: self.tmp.clone(),
            committed: false,
        })
    }
}

impl Drop for ManifestWriter {
    /// An unfinished manifest is never left behind (a finished one is the
    /// PendingManifest's to rename or remove).
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A finished manifest under its temporary name.
pub struct PendingManifest {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl PendingManifest {
    /// Puts the manifest in place (after the snapshot it describes has completed).
    pub fn commit(mut self) -> io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingManifest {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(blocks: u64) -> ManifestHeader {
        ManifestHeader {
            store: "local:/s".into(),
            snapshot_id: "snap-0123456789abcdef0".into(),
            source: "/dev/x".into(),
            source_bytes: blocks * 524288,
            blocks,
            digest: "blake3".into(),
        }
    }

    #[test]
    fn records_round_trip_and_zero_blocks_are_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.manifest");
        let mut w = ManifestWriter::create(&path).unwrap();
        let a = content_digest(b"a");
        let b = content_digest(b"b");
        w.record(0, Some(&a)).unwrap();
        w.record(1, None).unwrap();
        w.record(5, Some(&b)).unwrap();
        w.finish(&header(100_000)).unwrap().commit().unwrap();
        let m = Manifest::open(&path).unwrap().unwrap();
        assert_eq!(m.header(), &header(100_000));
        assert_eq!(m.entry(0), Entry::Data(a));
        assert_eq!(m.entry(1), Entry::Zero);
        assert_eq!(m.entry(5), Entry::Data(b));
        assert_eq!(m.entry(99_999), Entry::Zero);
        assert_eq!(m.entry(100_000), Entry::Unknown);
        assert_eq!(m.next_data(0).unwrap(), Some(0));
        // Records 0 to 127 share the file's first data page: each may hold a digest.
        assert_eq!(m.next_data(6).unwrap(), Some(6));
        // Past it, the file is a hole: no record there holds one.
        assert_eq!(m.next_data(200).unwrap(), None);
        assert_eq!(m.next_data(100_000).unwrap(), None);
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&path).unwrap().blocks() * 512 < 64 * 1024,
            "sparse on disk"
        );
    }

    #[test]
    fn an_unfinished_manifest_leaves_nothing_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.manifest");
        {
            let mut w = ManifestWriter::create(&path).unwrap();
            w.record(0, Some(&content_digest(b"x"))).unwrap();
            let pending = w.finish(&header(1)).unwrap();
            drop(pending);
        }
        {
            let mut w = ManifestWriter::create(&path).unwrap();
            w.record(0, Some(&content_digest(b"x"))).unwrap();
        }
        assert!(Manifest::open(&path).unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Manifest::open(&path).is_err());
    }
}

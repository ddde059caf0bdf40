//! Pack files: block data, appended in 512 KiB slots, many blocks to a file.
//!
//! `packs/NNNNNNNN.pack` holds the data of slot `s` at byte `s * 512 KiB`; its sidecar
//! `NNNNNNNN.idx` holds the SHA-256 of every slot. An idx is written (atomically) only
//! after its pack's data is fsynced, so a slot listed in an idx is durable; anything in a
//! pack beyond its idx is the debris of a crash and is cut off when a writer opens the
//! store. Identical blocks are stored once: a digest index, built from the idx files
//! the first time a writer needs it, finds an existing copy.

use super::crypt::{AeadEntry, AEAD_ENTRY_LEN};
use super::fsutil::{atomic_write, open_rw, remove_if_present};
use super::map::Location;
pub(crate) use super::slot::SlotWriter;
use crate::block::{Digest, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::store::{StoreError, StoreResult};
use crate::sys::{data_extents, punch_hole};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Slots per pack: 1 GiB pack files keep a 1 TiB store near a thousand files.
pub(crate) const SLOTS_PER_PACK: u32 = 2048;
const IDX_MAGIC: &[u8; 8] = b"EBSNIDX1";
const IDX_HEADER_LEN: usize = 16;
/// Slots whose space is allocated at a time ahead of the `O_DIRECT` writes into a pack
/// (32 MiB). A write past a file's end is an append, which ext4 runs one at a time
/// under the inode lock, each waiting for its device write; a write into allocated
/// space within the file is not, and runs beside the others.
const ALLOCATE_SLOTS: u32 = 64;
/// Digest recorded for a slot that holds nothing valid (freed, or never finished).
const NO_DIGEST: Digest = Digest([0; 32]);

#[derive(Debug)]
pub(crate) struct Packs {
    dir: PathBuf,
    handles: HashMap<u32, Arc<File>>,
    /// Packs written in this session, with the digest of each slot once its data is
    /// written (`None` while a write is under way).
    unsealed: BTreeMap<u32, Vec<Option<Digest>>>,
    /// The pack new blocks go to.
    open: Option<u32>,
    next_id: u32,
    /// Digest prefix -> location, for finding an existing copy of a block.
    dedup: Option<HashMap<u64, Location>>,
    /// `O_DIRECT` handles on this session's packs, where the filesystem allows them.
    direct: HashMap<u32, Arc<File>>,
    /// Open `.aead` sidecars (nonce and tag of each encrypted slot), by pack.
    aead: HashMap<u32, Arc<File>>,
    /// Each pack's writers take turns (see [`SlotWriter::write`]).
    turns: HashMap<u32, Arc<Mutex<()>>>,
    /// Slots of each `O_DIRECT` pack whose space is allocated ahead (the pack's whole
    /// size where allocating failed, and its writes append).
    allocated: HashMap<u32, u32>,
}

impl Packs {
    pub fn new(dir: &Path) -> StoreResult<Packs> {
        let next_id = pack_ids(dir)?.last().map_or(1, |id| id + 1);
        Ok(Packs {
            dir: dir.to_owned(),
            handles: HashMap::new(),
            unsealed: BTreeMap::new(),
            open: None,
            next_id,
            dedup: None,
            direct: HashMap::new(),
            aead: HashMap::new(),
            turns: HashMap::new(),
            allocated: HashMap::new(),
        })
    }

    /// Cuts every pack back to what its idx vouches for; removes packs with no idx.
    /// Only a writer (which excludes every other process) may do this.
    pub fn recover(&mut self) -> StoreResult<()> {
        for id in pack_ids(&self.dir)? {
            let slots = self.idx_digests(id)?.len() as u64;
            if slots == 0 {
                self.remove(id)?;
                continue;
            }
            let path = self.pack_path(id);
            let file = open_rw(&path, false)?;
            let len = file
                .metadata()
                .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
                .len();
            if len > slots * BLOCK_SIZE_U64 {
                tracing::info!(
                    "cutting {} back to the {slots} blocks its index vouches for",
                    path.display()
                );
                file.set_len(slots * BLOCK_SIZE_U64)
                    .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    pub fn pack_ids(&self) -> StoreResult<Vec<u32>> {
        pack_ids(&self.dir)
    }

    fn pack_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id:08x}.pack"))
    }

    fn idx_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id:08x}.idx"))
    }

    fn aead_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id:08x}.aead"))
    }

    /// The `.aead` sidecar of pack `id`, created (0600) for a writer that needs it.
    /// `None` for a pack that never held an encrypted block.
    pub fn aead_file(&mut self, id: u32, create: bool) -> StoreResult<Option<Arc<File>>> {
        if let Some(f) = self.aead.get(&id) {
            return Ok(Some(f.clone()));
        }
        let path = self.aead_path(id);
        // This session's packs are written to: their handle must allow it.
        let writable = create || self.unsealed.contains_key(&id);
        let opened = crate::sys::private_options()
            .read(true)
            .write(writable)
            .create(writable)
            .truncate(false)
            .open(&path);
        let file = match opened {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
        };
        self.aead.insert(id, file.clone());
        Ok(Some(file))
    }

    /// The nonce and tag of an encrypted slot, read from its pack's sidecar.
    pub fn read_aead(
        file: Option<&File>,
        location: Location,
    ) -> std::io::Result<Option<AeadEntry>> {
        let Some(file) = file else { return Ok(None) };
        let mut raw = [0u8; AEAD_ENTRY_LEN];
        let at = u64::from(location.slot) * AEAD_ENTRY_LEN as u64;
        match file.read_exact_at(&mut raw, at) {
            Ok(()) => Ok(AeadEntry::decode(&raw)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An open handle on pack `id`, shared by readers and writers.
    pub fn file(&mut self, id: u32) -> StoreResult<Arc<File>> {
        if let Some(f) = self.handles.get(&id) {
            return Ok(f.clone());
        }
        let path = self.pack_path(id);
        let file = crate::sys::private_options()
            .read(true)
            .write(self.open.is_some() || self.unsealed.contains_key(&id))
            .open(&path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        let file = Arc::new(file);
        self.handles.insert(id, file.clone());
        Ok(file)
    }

    /// Pack `id`'s handle, and its `.aead` sidecar's where the block read from it is
    /// `encrypted` (`None` if the pack has none).
    pub fn files(
        &mut self,
        id: u32,
        encrypted: bool,
    ) -> StoreResult<(Arc<File>, Option<Arc<File>>)> {
        let file = self.file(id)?;
        let aead = match encrypted {
            true => self.aead_file(id, false)?,
            false => None,
        };
        Ok((file, aead))
    }

    /// The digests an idx file lists, by slot (empty when it has no idx).
    pub fn idx_digests(&self, id: u32) -> StoreResult<Vec<Digest>> {
        let path = self.idx_path(id);
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        };
        let corrupt = |m: &str| StoreError::corrupt(path.display().to_string(), m.to_owned());
        if raw.len() < IDX_HEADER_LEN || &raw[..8] != IDX_MAGIC {
            return Err(corrupt("not a pack index (bad magic)"));
        }
        let slots = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
        // Checked: a damaged count must not wrap around to the file's length.
        let expected = slots
            .checked_mul(32)
            .and_then(|n| n.checked_add(IDX_HEADER_LEN as u64));
        if expected != Some(raw.len() as u64) {
            return Err(corrupt("slot count does not match the file length"));
        }
        Ok(raw[IDX_HEADER_LEN..]
            .chunks_exact(32)
            .map(|c| Digest(c.try_into().expect("32 bytes")))
            .collect())
    }

    fn write_idx(
        &self,
        id: u32,
        digests: impl ExactSizeIterator<Item = Digest>,
    ) -> StoreResult<()> {
        let mut raw = Vec::with_capacity(IDX_HEADER_LEN + digests.len() * 32);
        raw.extend_from_slice(IDX_MAGIC);
        raw.extend_from_slice(&(digests.len() as u64).to_le_bytes());
        for d in digests {
            raw.extend_from_slice(&d.0);
        }
        atomic_write(&self.idx_path(id), &raw)
    }

    /// Reserves a slot for a new block; the caller writes the data there, then calls
    /// [`Packs::written`].
    pub fn reserve(&mut self, encrypted: bool) -> StoreResult<SlotWriter> {
        let id = match self.open {
            Some(id) if self.unsealed[&id].len() < SLOTS_PER_PACK as usize => id,
            _ => self.open_pack()?,
        };
        // Everything that can fail comes first: a slot reserved and then given up
        // would keep its pack unsettled for the rest of the session.
        let file = self.file(id)?;
        let aead = match encrypted {
            true => self.aead_file(id, true)?,
            false => None,
        };
        let slots = self.unsealed.get_mut(&id).expect("open pack is unsealed");
        let slot = slots.len() as u32;
        slots.push(None);
        let direct = self.direct.get(&id).cloned();
        if direct.is_some() {
            self.allocate_ahead(id, slot, &file);
        }
        Ok(SlotWriter {
            location: Location { pack: id, slot },
            file,
            direct,
            path: self.pack_path(id),
            aead,
            turn: self.turns.entry(id).or_default().clone(),
        })
    }

    /// Allocates the space of the slots from `slot` on, unless it is already: see
    /// [`ALLOCATE_SLOTS`]. Only a help to the writes: where it fails (a filesystem
    /// without it, or too little space left for a whole step), the pack's writes
    /// append, as they would without it, and report what the disk says.
    fn allocate_ahead(&mut self, id: u32, slot: u32, file: &File) {
        let allocated = self.allocated.get(&id).copied().unwrap_or(0);
        if slot < allocated {
            return;
        }
        let end = (slot + ALLOCATE_SLOTS).min(SLOTS_PER_PACK);
        let from = u64::from(slot) * BLOCK_SIZE_U64;
        let len = u64::from(end - slot) * BLOCK_SIZE_U64;
        let end = match crate::sys::allocate(file, from, len) {
            Ok(()) => end,
            Err(e) => {
                tracing::debug!("{}: appending: {e}", self.pack_path(id).display());
                SLOTS_PER_PACK
            }
        };
        self.allocated.insert(id, end);
    }

    /// Cuts pack `id` back to its reserved slots: space allocated ahead, or grown
    /// by an allocation that failed part way, is given back.
    fn trim(&mut self, id: u32) -> StoreResult<()> {
        let reserved = self.unsealed[&id].len() as u64;
        self.allocated.remove(&id);
        let path = self.pack_path(id);
        let file = self.file(id)?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
            .len();
        let held = reserved * BLOCK_SIZE_U64;
        if len > held {
            file.set_len(held)
                .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Seals every pack (see [`Packs::seal`]) as the store closes, the open one cut
    /// back to its slots too.
    pub fn close(&mut self) -> StoreResult<()> {
        self.open = None;
        self.seal()
    }

    /// Continues the last pack if it has room, else starts a new one.
    fn open_pack(&mut self) -> StoreResult<u32> {
        let last = self.next_id - 1;
        let reusable = self.open.is_none() && last >= 1 && !self.unsealed.contains_key(&last) && {
            let n = self.idx_digests(last)?.len();
            n > 0 && n < SLOTS_PER_PACK as usize
        };
        let id = if reusable {
            last
        } else {
            let id = self.next_id;
            self.next_id += 1;
            open_rw(&self.pack_path(id), true)?;
            id
        };
        let existing: Vec<Option<Digest>> = self.idx_digests(id)?.into_iter().map(Some).collect();
        self.handles.remove(&id); // reopen for writing
        self.aead.remove(&id);
        self.unsealed.insert(id, existing);
        self.open = Some(id);
        // The O_DIRECT twin of the (now writable) handle, never opened by path.
        let file = self.file(id)?;
        if let Some(direct) = crate::sys::reopen_direct(&file, crate::sys::Access::Write) {
            self.direct.insert(id, Arc::new(direct));
        }
        Ok(id)
    }

    /// Records that a reserved slot now holds the block with `digest`.
    pub fn written(&mut self, location: Location, digest: Digest) {
        if let Some(slot) = self
            .unsealed
            .get_mut(&location.pack)
            .and_then(|s| s.get_mut(location.slot as usize))
        {
            *slot = Some(digest);
        }
        if let Some(dedup) = &mut self.dedup {
            dedup.insert(digest.prefix_u64(), location);
        }
    }

    /// An existing, fully written copy of the block with `digest`, if the store has one.
    pub fn find(&mut self, digest: Digest) -> StoreResult<Option<Location>> {
        if self.dedup.is_none() {
            self.dedup = Some(self.build_dedup()?);
        }
        let Some(&candidate) = self
            .dedup
            .as_ref()
            .expect("built")
            .get(&digest.prefix_u64())
        else {
            return Ok(None);
        };
        // The table is keyed by a prefix: confirm the whole digest.
        Ok((self.digest_at(candidate)? == Some(digest)).then_some(candidate))
    }

    fn build_dedup(&self) -> StoreResult<HashMap<u64, Location>> {
        let mut table = HashMap::new();
        for id in self.pack_ids()? {
            let digests: Vec<Option<Digest>> = match self.unsealed.get(&id) {
                Some(d) => d.clone(),
                None => self.idx_digests(id)?.into_iter().map(Some).collect(),
            };
            for (slot, d) in digests.iter().enumerate() {
                if let Some(d) = d.filter(|d| *d != NO_DIGEST) {
                    table.insert(
                        d.prefix_u64(),
                        Location {
                            pack: id,
                            slot: slot as u32,
                        },
                    );
                }
            }
        }
        Ok(table)
    }

    /// The digest of a written slot, from memory for this session's packs, else its idx.
    pub fn digest_at(&self, location: Location) -> StoreResult<Option<Digest>> {
        if let Some(slots) = self.unsealed.get(&location.pack) {
            return Ok(slots.get(location.slot as usize).copied().flatten());
        }
        let path = self.idx_path(location.pack);
        let mut raw = [0u8; 32];
        let at = (IDX_HEADER_LEN + location.slot as usize * 32) as u64;
        match File::open(&path).and_then(|f| f.read_exact_at(&mut raw, at)) {
            Ok(()) => Ok(Some(Digest(raw)).filter(|d| *d != NO_DIGEST)),
            Err(e)
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Makes every block written in this session durable: fsync the data, then write
    /// each pack's idx. Called before any map may refer to those blocks.
    pub fn seal(&mut self) -> StoreResult<()> {
        let ids: Vec<u32> = self.unsealed.keys().copied().collect();
        for id in ids {
            // The open pack keeps the space allocated ahead: the server seals after
            // every put, and would otherwise allocate and cut back each time.
            // Best effort: a pack left too long is cut back by the next writer, and the
            // fsync and idx below are what the puts so far rely on.
            if self.open != Some(id) {
                if let Err(e) = self.trim(id) {
                    tracing::warn!("{e}");
                }
            }
            let file = self.file(id)?;
            file.sync_data().map_err(|e| {
                StoreError::io(format!("syncing {}", self.pack_path(id).display()), e)
            })?;
            // Nonces and tags are vouched for by the idx like the data they open.
            if let Some(aead) = self.aead.get(&id) {
                aead.sync_data().map_err(|e| {
                    StoreError::io(format!("syncing {}", self.aead_path(id).display()), e)
                })?;
            }
            let digests = &self.unsealed[&id];
            self.write_idx(id, digests.iter().map(|d| d.unwrap_or(NO_DIGEST)))?;
            // A full pack may still have writes under way (another snapshot's puts):
            // it stays unsealed, to be sealed again, until every slot is written.
            let settled = digests.iter().all(Option::is_some);
            if self.open != Some(id) && settled {
                self.unsealed.remove(&id);
                self.direct.remove(&id);
                self.allocated.remove(&id);
            }
        }
        Ok(())
    }

    /// Reads the block at `location` into `buf`.
    pub fn read(file: &File, location: Location, buf: &mut [u8]) -> std::io::Result<()> {
        file.read_exact_at(
            &mut buf[..BLOCK_SIZE],
            location.slot as u64 * BLOCK_SIZE_U64,
        )
    }

    /// Frees every slot of pack `id` not in `live`: the idx forgets them first (so no
    /// new block can be deduplicated onto them), then their space is punched out. A
    /// pack with nothing live is removed.
    pub fn free_unused(&mut self, id: u32, live: &[bool]) -> StoreResult<u64> {
        if self.unsealed.contains_key(&id) {
            return Ok(0); // in use by this session's writes; the next session frees it
        }
        let is_live = |s: usize| live.get(s).copied().unwrap_or(false);
        let mut digests = self.idx_digests(id)?;
        let slots = digests.len() as u64;
        if !(0..digests.len()).any(is_live) {
            let freed = digests.iter().filter(|d| **d != NO_DIGEST).count() as u64;
            self.remove(id)?;
            return Ok(freed);
        }
        let newly_dead: Vec<usize> = (0..digests.len())
            .filter(|&s| !is_live(s) && digests[s] != NO_DIGEST)
            .collect();
        if !newly_dead.is_empty() {
            for &s in &newly_dead {
                digests[s] = NO_DIGEST;
            }
            self.write_idx(id, digests.into_iter())?;
            self.dedup = None;
        }
        // Punch every dead slot that still holds space, not only the newly dead: a crash
        // or an error after an earlier idx rewrite must not leak the space for good.
        let path = self.pack_path(id);
        let file = open_rw(&path, false)?;
        let slots = slots_holding_space(&file, slots)
            .map_err(|e| StoreError::io(format!("scanning {}", path.display()), e))?;
        for s in slots.into_iter().filter(|&s| !is_live(s as usize)) {
            if let Err(e) = punch_hole(&file, s * BLOCK_SIZE_U64, BLOCK_SIZE_U64) {
                tracing::warn!("could not free slot {s} of {}: {e}", path.display());
            }
        }
        Ok(newly_dead.len() as u64)
    }

    fn remove(&mut self, id: u32) -> StoreResult<()> {
        self.handles.remove(&id);
        self.aead.remove(&id);
        self.dedup = None;
        remove_if_present(&self.idx_path(id))?;
        remove_if_present(&self.pack_path(id))?;
        remove_if_present(&self.aead_path(id))
    }
}

/// The slots of a pack of `slots` slots that may hold disk space: those with data
/// (SEEK_DATA), or all of them where the file holds more space than its data. Space
/// allocated ahead of a write that never came reads as a hole to SEEK_DATA, yet is
/// the disk's until punched.
fn slots_holding_space(file: &File, slots: u64) -> std::io::Result<Vec<u64>> {
    use std::os::unix::fs::MetadataExt;
    let extents = data_extents(file)?;
    let data: u64 = extents.iter().map(|(start, end)| end - start).sum();
    // Beyond the data, a filesystem keeps its extent tree: far less than half a slot.
    if file.metadata()?.blocks() * 512 > data + BLOCK_SIZE_U64 / 2 {
        return Ok((0..slots).collect());
    }
    Ok(extents
        .into_iter()
        .flat_map(|(start, end)| start / BLOCK_SIZE_U64..end.div_ceil(BLOCK_SIZE_U64))
        .collect())
}

fn pack_ids(dir: &Path) -> StoreResult<Vec<u32>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".pack")) else {
            continue;
        };
        if let Ok(id) = u32::from_str_radix(stem, 16) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Space is allocated ahead of `O_DIRECT` writes. The open pack keeps it while
    /// the store is open, even sealed (the server seals after every put); closing
    /// the store gives it back, and so does the next writer after a crash.
    #[test]
    fn space_allocated_ahead_is_given_back_when_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("00000001.pack");
        let len = || std::fs::metadata(&pack).unwrap().len() / BLOCK_SIZE_U64;
        let mut packs = Packs::new(dir.path()).unwrap();
        let block = crate::block::BufferPool::new(1).take();
        let write = |packs: &mut Packs, n: u8| {
            let slot = packs.reserve(false).unwrap();
            slot.write(&block).unwrap();
            packs.written(slot.location, Digest([n; 32]));
        };
        for n in 1..=3 {
            write(&mut packs, n);
        }
        if len() != u64::from(ALLOCATE_SLOTS) {
            eprintln!(
                "SKIPPED: no O_DIRECT or no fallocate in {}",
                dir.path().display()
            );
            return;
        }
        packs.seal().unwrap();
        assert_eq!(
            len(),
            u64::from(ALLOCATE_SLOTS),
            "the open pack keeps its space"
        );
        write(&mut packs, 4);
        packs.close().unwrap();
        assert_eq!(len(), 4, "closing cuts the pack back to its slots");

        // A writer that dies with space allocated: the next one cuts it off.
        let mut crashed = Packs::new(dir.path()).unwrap();
        let reserved = crashed.reserve(false).unwrap();
        assert_eq!(reserved.location.slot, 4);
        assert_eq!(len(), u64::from(4 + ALLOCATE_SLOTS));
        drop(crashed);
        Packs::new(dir.path()).unwrap().recover().unwrap();
        assert_eq!(len(), 4, "recovery cuts the pack back to its idx");
    }

    /// A slot reserved and sealed but never written holds allocated space that
    /// SEEK_DATA calls a hole: freeing the pack's dead slots gives it back too.
    #[test]
    fn space_of_a_slot_never_written_is_freed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("00000001.pack");
        let mut packs = Packs::new(dir.path()).unwrap();
        let mut data = crate::block::BufferPool::new(1).take();
        data.fill(7);
        let slot = packs.reserve(false).unwrap();
        slot.write(&data).unwrap();
        packs.written(slot.location, Digest([1; 32]));
        let _never_written = packs.reserve(false).unwrap();
        packs.close().unwrap();
        let held = || std::fs::metadata(&pack).unwrap().blocks() * 512;
        if held() < 2 * BLOCK_SIZE_U64 {
            eprintln!(
                "SKIPPED: no O_DIRECT or no fallocate in {}",
                dir.path().display()
            );
            return;
        }
        let mut later = Packs::new(dir.path()).unwrap();
        later.free_unused(1, &[true, false]).unwrap();
        assert!(held() < 2 * BLOCK_SIZE_U64, "{} bytes still held", held());
        // The live slot keeps its space and its data.
        assert!(held() >= BLOCK_SIZE_U64);
        let (file, _) = later.files(1, false).unwrap();
        let mut back = vec![0; BLOCK_SIZE];
        Packs::read(&file, Location { pack: 1, slot: 0 }, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 7));
    }

    /// Found by the local_files fuzz target: a slot count whose size overflowed.
    #[test]
    fn a_damaged_slot_count_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::new(dir.path()).unwrap();
        let mut raw = IDX_MAGIC.to_vec();
        // 2^59 + 1 slots: times 32, 32 bytes once wrapped.
        raw.extend_from_slice(&((1u64 << 59) + 1).to_le_bytes());
        raw.extend_from_slice(&[7; 32]);
        std::fs::write(dir.path().join("00000001.idx"), &raw).unwrap();
        assert!(matches!(
            packs.idx_digests(1),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

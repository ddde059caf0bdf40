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
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod space;

/// Slots per pack: 1 GiB pack files keep a 1 TiB store near a thousand files.
pub(crate) const SLOTS_PER_PACK: u32 = 2048;
const IDX_MAGIC: &[u8; 8] = b"EBSNIDX1";
const IDX_HEADER_LEN: usize = 16;
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
    /// Times slots were freed in this session (a copy found before may be gone).
    frees: u64,
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
            frees: 0,
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
            let file = open_rw(&self.pack_path(id), false)?;
            if self.cut_back(id, &file, slots)? {
                tracing::info!(
                    "cut {} back to the {slots} blocks its index vouches for",
                    self.pack_path(id).display()
                );
            }
        }
        Ok(())
    }

    pub fn pack_ids(&self) -> StoreResult<Vec<u32>> {
        pack_ids(&self.dir)
    }

    pub(super) fn pack_path(&self, id: u32) -> PathBuf {
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

    /// Slots were freed: the digest index is built again, and the count goes up.
    fn forget_copies(&mut self) {
        self.dedup = None;
        self.frees += 1;
    }

    /// How many times slots were freed so far: a copy [`Packs::find`] gave is still
    /// there while this has not changed.
    pub fn frees(&self) -> u64 {
        self.frees
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
            // Packs left behind are cut back, but not the open one: the server seals
            // after every put, and would allocate and cut back each time. Best effort:
            // the next writer cuts back a pack left too long, and the fsync and idx
            // below are what the puts so far rely on.
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

    fn remove(&mut self, id: u32) -> StoreResult<()> {
        self.handles.remove(&id);
        self.aead.remove(&id);
        self.forget_copies();
        remove_if_present(&self.idx_path(id))?;
        remove_if_present(&self.pack_path(id))?;
        remove_if_present(&self.aead_path(id))
    }
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

//! A pack's disk space: allocated ahead of its `O_DIRECT` writes, cut back to its
//! slots, and given back slot by slot once no snapshot needs them.

use super::*;
use crate::sys::{data_extents, punch_hole};

/// Slots whose space is allocated at a time ahead of the `O_DIRECT` writes into a pack
/// (32 MiB). A write past a file's end is an append, which ext4 runs one at a time
/// under the inode lock, each waiting for its device write; a write into allocated
/// space within the file is not, and runs beside the others.
pub(super) const ALLOCATE_SLOTS: u32 = 64;

impl Packs {
    /// Allocates the space of the slots from `slot` on, unless it is already: see
    /// [`ALLOCATE_SLOTS`]. Only a help to the writes: where it fails (a filesystem
    /// without it, or too little space left for a whole step), the pack's writes
    /// append, as they would without it, and report what the disk says.
    pub(super) fn allocate_ahead(&mut self, id: u32, slot: u32, file: &File) {
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
    /// by an allocation that failed part way, is given back. A pack never allocated
    /// ahead (or cut back already) is left alone: only allocating grows a pack past
    /// its slots while the store is open.
    pub(super) fn trim(&mut self, id: u32) -> StoreResult<()> {
        if self.allocated.remove(&id).is_none() {
            return Ok(());
        }
        let reserved = self.unsealed[&id].len() as u64;
        let file = self.file(id)?;
        self.cut_back(id, &file, reserved).map(drop)
    }

    /// Cuts pack `id`'s `file` back to `slots` slots if it is longer; says whether
    /// it was.
    pub(super) fn cut_back(&self, id: u32, file: &File, slots: u64) -> StoreResult<bool> {
        let path = self.pack_path(id);
        let len = file
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
            .len();
        let held = slots * BLOCK_SIZE_U64;
        if len <= held {
            return Ok(false);
        }
        file.set_len(held)
            .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
        Ok(true)
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
            self.forget_copies();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Says loudly that a test could not run where `dir` is (tmpfs, say).
    fn skipped(dir: &Path) {
        eprintln!("SKIPPED: no O_DIRECT or no fallocate in {}", dir.display());
    }

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
            return skipped(dir.path());
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
            return skipped(dir.path());
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
}

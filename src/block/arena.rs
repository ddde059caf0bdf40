//! Where block buffers live: 2 MiB chunks of four, each asked to be one transparent
//! huge page, and kept for reuse.
//!
//! A 512 KiB buffer of 4 KiB pages takes 128 page faults the first time it is touched,
//! each zeroing its page, and the allocator gave freed buffers back to the kernel to
//! fault in again: a 1 GiB restore through `ebsnap serve` faulted 17,000 to 26,000
//! times, about 8% of its CPU time, and a backup 12,000. In huge-page chunks kept here,
//! the restore faults 3,000 to 6,000 times and the backup 2,000. Where the kernel gives
//! no huge pages (`transparent_hugepage` set to `never`, or a page size whose huge
//! pages are not 2 MiB) the chunks are plain pages, still kept for reuse; a restore
//! then faults as often as before. With the kernel's `defrag=madvise`, a fault in a new
//! chunk may compact memory first: a rare stall of a few milliseconds, against 512
//! faults saved.
//!
//! Slots come back to their chunk when a buffer is dropped. Chunks whose four slots are
//! all free are given back to the kernel while more than [`KEPT_FREE`] slots are free,
//! so that a long-lived process (`serve`, a mount) holds its peak of buffers in use
//! only while it uses them.

use super::BLOCK_SIZE;
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

/// A chunk's size: one huge page on x86-64, and on aarch64 with 4 KiB pages.
const CHUNK: usize = 2 << 20;
/// Buffers in a chunk.
const SLOTS: usize = CHUNK / BLOCK_SIZE;
const _: () = assert!(CHUNK.is_multiple_of(BLOCK_SIZE) && SLOTS >= 1 && SLOTS <= 8);
/// A chunk's mask when every slot is free.
const ALL_FREE: u8 = ((1u16 << SLOTS) - 1) as u8;
/// Free slots kept mapped: what the stores' own spare-buffer bounds let go of when a
/// burst ends (the EBS store keeps 32), so that the next burst finds them mapped.
const KEPT_FREE: usize = 32;

/// The free slots: chunks with some free (base address to the mask of free slots),
/// and chunks with all four free; and every chunk mapped, free or not, so that a slot
/// that is not one of ours is caught before it enters the lists.
struct Chunks {
    partly: BTreeMap<usize, u8>,
    empty: Vec<usize>,
    free_slots: usize,
    mapped: BTreeSet<usize>,
}

static CHUNKS: Mutex<Chunks> = Mutex::new(Chunks::new());

/// A block-sized slot, aligned to the block: zeros when its chunk is new, else what
/// the last buffer there held. Fails the process, as `alloc` does, when the kernel has
/// no memory to map.
pub(super) fn take() -> NonNull<u8> {
    let found = lock().take();
    // Mapped outside the lock: the other threads' buffers need not wait for it.
    let addr = found.unwrap_or_else(|| {
        let base = map_chunk();
        lock().take_from_new(base)
    });
    NonNull::new(addr as *mut u8).expect("mapped memory is not null")
}

/// Gives a slot from [`take`] back.
///
/// # Safety
/// `ptr` came from [`take`], and nothing refers to its memory any more.
pub(super) unsafe fn give_back(ptr: NonNull<u8>) {
    if cfg!(debug_assertions) {
        // Tests then catch a reader of a reused buffer who expects zeros.
        // SAFETY: the slot is BLOCK_SIZE bytes of ours, unused now.
        unsafe { ptr.as_ptr().write_bytes(0xA5, BLOCK_SIZE) };
    }
    let to_unmap = lock().give_back(ptr.as_ptr() as usize);
    for base in to_unmap {
        // SAFETY: the whole chunk is free, out of the lists, and was mapped by map_chunk.
        let unmapped = unsafe { libc::munmap(base as *mut libc::c_void, CHUNK) };
        debug_assert_eq!(unmapped, 0, "munmap of a chunk");
    }
}

fn lock() -> MutexGuard<'static, Chunks> {
    CHUNKS.lock().unwrap_or_else(|e| e.into_inner())
}

impl Chunks {
    const fn new() -> Self {
        Chunks {
            partly: BTreeMap::new(),
            empty: Vec::new(),
            free_slots: 0,
            mapped: BTreeSet::new(),
        }
    }

    /// A free slot's address, if one is mapped: from the chunk with the fewest free
    /// slots (so that the others may empty and go back), else from an empty one.
    fn take(&mut self) -> Option<usize> {
        let base = self.fullest().or_else(|| {
            let base = self.empty.pop()?;
            self.partly.insert(base, ALL_FREE);
            Some(base)
        })?;
        Some(self.claim(base))
    }

    /// The partly used chunk with the fewest free slots; the scan, under the one lock,
    /// ends at a chunk with only one.
    fn fullest(&self) -> Option<usize> {
        let mut fullest: Option<(usize, u32)> = None;
        for (base, mask) in &self.partly {
            let free = mask.count_ones();
            if fullest.is_none_or(|(_, least)| free < least) {
                fullest = Some((*base, free));
            }
            if free == 1 {
                break;
            }
        }
        fullest.map(|(base, _)| base)
    }

    /// A slot of the chunk just mapped at `base`; its others become free.
    fn take_from_new(&mut self, base: usize) -> usize {
        self.mapped.insert(base);
        self.partly.insert(base, ALL_FREE);
        self.free_slots += SLOTS;
        self.claim(base)
    }

    /// Takes the lowest free slot of `base`, a chunk in `partly`.
    fn claim(&mut self, base: usize) -> usize {
        let mask = self
            .partly
            .get_mut(&base)
            .expect("a chunk with a free slot");
        let slot = mask.trailing_zeros() as usize;
        *mask &= !(1 << slot);
        if *mask == 0 {
            self.partly.remove(&base);
        }
        self.free_slots -= 1;
        base + slot * BLOCK_SIZE
    }

    /// Frees the slot at `addr`; returns the chunks to unmap (out of the lists now).
    fn give_back(&mut self, addr: usize) -> Vec<usize> {
        let (base, slot) = (addr & !(CHUNK - 1), (addr % CHUNK) / BLOCK_SIZE);
        // A chunk unmapped already, or never ours: entering it in the lists would hand
        // out memory the kernel may have given to someone else.
        assert!(
            self.mapped.contains(&base),
            "a slot freed twice, or not ours"
        );
        assert!(!self.empty.contains(&base), "a slot freed twice");
        let mask = self.partly.entry(base).or_insert(0);
        assert_eq!(*mask & (1 << slot), 0, "a slot freed twice");
        *mask |= 1 << slot;
        self.free_slots += 1;
        if *mask == ALL_FREE {
            self.partly.remove(&base);
            self.empty.push(base);
        }
        let mut to_unmap = Vec::new();
        while self.free_slots > KEPT_FREE {
            let Some(base) = self.empty.pop() else { break };
            self.free_slots -= SLOTS;
            self.mapped.remove(&base);
            to_unmap.push(base);
        }
        to_unmap
    }
}

/// Maps a chunk at a `CHUNK`-aligned address (so that it can be one huge page) and asks
/// for a huge page. Returns its base.
///
/// Twice a chunk is mapped, for an aligned chunk to lie inside, and the margins are
/// unmapped at once. By hand, not with memmap2: its mappings cannot be cut down, and a
/// margin kept would count against the commit limit (`vm.overcommit_memory=2`,
/// `ulimit -v`) for the chunk's whole life, halving the buffers a strict host allows.
fn map_chunk() -> usize {
    let len = 2 * CHUNK;
    // SAFETY: an anonymous private mapping at an address the kernel picks.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        let layout = std::alloc::Layout::from_size_align(CHUNK, CHUNK).expect("valid layout");
        std::alloc::handle_alloc_error(layout);
    }
    let start = raw as usize;
    let base = start.next_multiple_of(CHUNK);
    // SAFETY: both ranges lie inside the mapping just made, outside the chunk kept.
    unsafe {
        unmap(start, base - start);
        unmap(base + CHUNK, start + len - (base + CHUNK));
        // Only advice: without huge pages the chunk is plain pages.
        libc::madvise(base as *mut libc::c_void, CHUNK, libc::MADV_HUGEPAGE);
    }
    base
}

/// # Safety
/// `[start, start + len)` is mapped and unused.
unsafe fn unmap(start: usize, len: usize) {
    if len > 0 {
        // SAFETY: as the caller promises.
        let unmapped = unsafe { libc::munmap(start as *mut libc::c_void, len) };
        debug_assert_eq!(unmapped, 0, "munmap of a chunk's margin");
    }
}

#[cfg(test)]
mod tests;

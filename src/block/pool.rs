//! Reusable block buffers. A backup reads every block into a 512 KiB buffer; taking a
//! fresh allocation each time costs a page fault per 4 KiB and a memset, which showed
//! up as a tenth of a backup's CPU time. Buffers return to the pool when the last
//! `Bytes` referring to them is dropped (after the store has written them).
//!
//! Buffers are aligned to 4 KiB (to the block, in fact: see [`super::arena`], where
//! they live) so that a store may hand them to `O_DIRECT` writes, which skip the page
//! cache copy.

use super::{arena, BLOCK_SIZE};
use bytes::Bytes;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Alignment of pooled buffers: what `O_DIRECT` asks of memory on common devices.
pub const BUFFER_ALIGN: usize = 4096;

/// Whether `O_DIRECT` may move `buf` at `offset`: memory, length and offset aligned.
pub fn direct_io_fits(buf: &[u8], offset: u64) -> bool {
    !buf.is_empty()
        && (buf.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN)
        && buf.len().is_multiple_of(BUFFER_ALIGN)
        && offset.is_multiple_of(BUFFER_ALIGN as u64)
}

/// One block-sized buffer, aligned to the block (so also to 4 KiB), living in the
/// [`arena`](super::arena). Its contents are unspecified, though initialized: often
/// another buffer's bytes, of another snapshot, even from another pool. Whoever takes
/// one overwrites all of it (a partial last block is filled with zeros by its reader).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new() -> Self {
        AlignedBuf { ptr: arena::take() }
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is a live slot of BLOCK_SIZE bytes, initialized (mapped zeros or
        // an earlier buffer's bytes).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), BLOCK_SIZE) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), BLOCK_SIZE) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: taken in `new`, and this buffer was its one owner.
        unsafe { arena::give_back(self.ptr) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlignedBuf")
    }
}

/// A bounded stack of spare block buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    spare: Mutex<Vec<AlignedBuf>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` spare buffers.
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            spare: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// A block-sized buffer (contents unspecified: the caller overwrites it).
    pub fn take(&self) -> AlignedBuf {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_default()
    }

    /// Freezes a filled buffer into `Bytes` that give it back to the pool when dropped.
    pub fn freeze(self: &Arc<Self>, buf: AlignedBuf) -> Bytes {
        Bytes::from_owner(Pooled {
            buf: Some(buf),
            pool: self.clone(),
        })
    }

    /// A buffer of this pool to fill from pieces as they arrive (an HTTP body's).
    pub fn fill(self: &Arc<Self>) -> BlockFill {
        BlockFill {
            buf: self.take(),
            len: 0,
            pool: self.clone(),
        }
    }

    /// Returns a buffer that was never frozen.
    pub fn recycle(&self, buf: AlignedBuf) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.keep {
            spare.push(buf);
        }
    }
}

/// A pooled buffer filled piece by piece: the one copy a body that arrives in pieces
/// needs, into memory aligned for `O_DIRECT`.
pub struct BlockFill {
    buf: AlignedBuf,
    len: usize,
    pool: Arc<BufferPool>,
}

/// A piece would have taken a [`BlockFill`] past the end of its block.
#[derive(Debug)]
pub struct PastBlockEnd;

impl BlockFill {
    /// Appends `piece`, unless it would pass the block's end.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), PastBlockEnd> {
        let end = self.len + piece.len();
        let room = self.buf.get_mut(self.len..end).ok_or(PastBlockEnd)?;
        room.copy_from_slice(piece);
        self.len = end;
        Ok(())
    }

    /// Bytes filled so far.
    pub fn filled(&self) -> usize {
        self.len
    }

    /// What was filled, as `Bytes` that give the buffer back to its pool when dropped.
    pub fn freeze(self) -> Bytes {
        self.pool.freeze(self.buf).slice(..self.len)
    }
}

struct Pooled {
    buf: Option<AlignedBuf>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.recycle(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_bytes_are_dropped() {
        let pool = BufferPool::new(2);
        let mut buf = pool.take();
        buf[0] = 42;
        let ptr = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(clone[0], 42);
        drop(clone);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same buffer is reused");
        assert_eq!(again.as_ptr() as usize % BUFFER_ALIGN, 0);
    }
}

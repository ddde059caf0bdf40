//! Writing one new block into its reserved pack slot (and, for an encrypted block,
//! its nonce and tag into the pack's `.aead` sidecar).

use super::crypt::{AeadEntry, AEAD_ENTRY_LEN};
use super::map::Location;
use crate::block::{BLOCK_SIZE_U64, BUFFER_ALIGN};
use crate::store::{StoreError, StoreResult};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where one new block goes, and the handles to write it with.
pub(crate) struct SlotWriter {
    pub location: Location,
    pub(super) file: Arc<File>,
    pub(super) direct: Option<Arc<File>>,
    pub(super) path: PathBuf,
    /// The pack's `.aead` sidecar, for an encrypted block.
    pub(super) aead: Option<Arc<File>>,
    /// Held while a block is written through the page cache: shared by every writer
    /// of this pack.
    pub(super) turn: Arc<Mutex<()>>,
}

impl SlotWriter {
    /// Writes the block's data into its slot.
    ///
    /// Aligned buffers go through `O_DIRECT`: no copy into the page cache and no
    /// writeback later (a backup neither pays for nor evicts the cache with data it
    /// will not read again). Anything else is written through the page cache, with
    /// writeback started early so the fsync at completion has little left to do.
    ///
    /// Page-cache writers of one pack take turns. Appends to one file take its inode
    /// lock one at a time anyway: waiting here sleeps, where waiting there spins (a
    /// tenth of a backup's CPU into a tmpfs store went to `rwsem_spin_on_owner`).
    /// `O_DIRECT` writes do not: they wait for the device, and a filesystem that lets
    /// them through together (XFS) keeps them in parallel.
    pub fn write(&self, data: &[u8]) -> StoreResult<()> {
        if self.write_direct(data)? {
            return Ok(());
        }
        let turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        self.file
            .write_all_at(data, self.offset())
            .map_err(|e| self.error(e))?;
        drop(turn);
        start_writeback(&self.file, self.location.slot);
        Ok(())
    }

    /// Writes `data` with `O_DIRECT` where it can: `Ok(false)` when the page cache must
    /// take it instead.
    fn write_direct(&self, data: &[u8]) -> StoreResult<bool> {
        let aligned = (data.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN);
        let Some(direct) = self.direct.as_ref().filter(|_| aligned) else {
            return Ok(false);
        };
        match direct.write_all_at(data, self.offset()) {
            Ok(()) => Ok(true),
            // Some filesystems refuse O_DIRECT writes they accepted at open.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    fn offset(&self) -> u64 {
        u64::from(self.location.slot) * BLOCK_SIZE_U64
    }

    /// Writes an encrypted block's nonce and tag. Like the data, it is durable once the
    /// pack is sealed, and vouched for only by the pack's idx.
    pub fn write_aead(&self, entry: &AeadEntry) -> StoreResult<()> {
        let file = self.aead.as_ref().ok_or_else(|| {
            StoreError::corrupt(self.path.display().to_string(), "no .aead file reserved")
        })?;
        let offset = u64::from(self.location.slot) * AEAD_ENTRY_LEN as u64;
        // 32 bytes, in a file of their own: too brief to contend for its lock.
        file.write_all_at(&entry.encode(), offset)
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> StoreError {
        StoreError::io(
            format!(
                "writing slot {} of {}",
                self.location.slot,
                self.path.display()
            ),
            e,
        )
    }
}

/// Every `WRITEBACK_SLOTS` slots, asks the kernel to start writing the last ones to
/// disk (without waiting), so writeback overlaps the hashing of later blocks instead
/// of all happening in the fsync at completion.
fn start_writeback(file: &File, slot: u32) {
    use std::os::unix::io::AsRawFd;
    const WRITEBACK_SLOTS: u32 = 64;
    if !(slot + 1).is_multiple_of(WRITEBACK_SLOTS) {
        return;
    }
    let start = u64::from(slot + 1 - WRITEBACK_SLOTS) * BLOCK_SIZE_U64;
    let len = u64::from(WRITEBACK_SLOTS) * BLOCK_SIZE_U64;
    // SAFETY: a hint on our own descriptor; no memory is passed. Failure is harmless:
    // the fsync at completion still makes everything durable.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            start as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

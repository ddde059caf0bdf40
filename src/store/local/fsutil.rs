//! The store's file primitives: [`crate::sys`]'s, with failures as [`StoreError`]s.
//! Every metadata change is temp file + fsync + rename.

use crate::store::{StoreError, StoreResult};
use std::fs::{self, File};
use std::path::Path;

/// Replaces `path` with `bytes` atomically: a reader (or a crash) sees the old file or
/// the new one, never a mix.
pub(super) fn atomic_write(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    crate::sys::atomic_write(path, bytes)
        .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))
}

pub(super) fn open_rw(path: &Path, create: bool) -> StoreResult<File> {
    crate::sys::private_options()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))
}

/// Removes a file that may already be gone.
pub(super) fn remove_if_present(path: &Path) -> StoreResult<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

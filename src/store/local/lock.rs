//! The store lock: one writer, or any number of readers, across processes.

use crate::store::{StoreError, StoreResult};
use crate::sys::{take_lock, LockKind, LockWait};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// How a store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only; many processes may read at once.
    Read,
    /// Reads and writes; excludes every other process.
    Write,
}

/// A held lock; released when dropped (or when the process dies: the kernel drops
/// flock locks with the descriptor, so a killed process never leaves a stale lock).
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

pub(crate) fn acquire(root: &Path, access: Access, wait: LockWait) -> StoreResult<StoreLock> {
    let path = root.join("lock");
    // A reader needs no write access to the store: flock works on a read-only handle.
    let writer = access == Access::Write;
    let mut file = crate::sys::private_options()
        .read(true)
        .write(writer)
        .create(writer)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    let holder = holder_of(&mut file);
    let on_wait = || {
        tracing::warn!(
            "store {} is in use by another ebsnap process{holder}; waiting",
            root.display()
        )
    };
    let kind = match access {
        Access::Read => LockKind::Shared,
        Access::Write => LockKind::Exclusive,
    };
    let taken = take_lock(&file, kind, wait, on_wait)
        .map_err(|e| StoreError::io(format!("locking {}", path.display()), e))?;
    if !taken {
        return Err(StoreError::Locked {
            path: root.to_owned(),
            holder: holder_of(&mut file),
        });
    }
    if access == Access::Write {
        // Say who holds it, for the error message another process will print.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
    }
    Ok(StoreLock { _file: file })
}

fn holder_of(file: &mut File) -> String {
    let mut pid = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut pid);
    match pid.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    }
}

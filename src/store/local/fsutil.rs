//! Crash-safe file primitives: every metadata change is temp file + fsync + rename.

use crate::store::{StoreError, StoreResult};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically: a reader (or a crash) sees the old file or
/// the new one, never a mix.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().expect("store files live in a directory"))
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::io(format!("writing {}", path.display()), e)
    })
}

/// The temporary name a file is written under before it is renamed into place.
pub(crate) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().expect("a file name").to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn open_rw(path: &Path, create: bool) -> StoreResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))
}

/// Removes a file that may already be gone.
pub(crate) fn remove_if_present(path: &Path) -> StoreResult<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

pub(crate) use crate::block::punch_hole;

/// The byte ranges of a file that hold data (SEEK_DATA/SEEK_HOLE), ascending.
pub(crate) fn data_extents(file: &File) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::unix::io::AsRawFd;
    let size = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let seek = |pos: u64, whence| {
        // SAFETY: lseek on our own descriptor; nothing reads through its offset.
        let r = unsafe { libc::lseek(fd, pos as libc::off_t, whence) };
        if r >= 0 {
            Ok(Some(r as u64))
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    };
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(start) = seek(pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size);
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

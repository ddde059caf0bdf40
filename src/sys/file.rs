//! Files: private creation, crash-safe replacement and the layout of sparse files.
//!
//! Everything ebsnap writes holds backup data or traces of it (block digests, device
//! names, snapshot ids), so what it creates is private whatever the umask: files
//! 0600, directories 0700. And it never writes through a symbolic link that someone
//! else planted at a path it creates: files are opened with `O_NOFOLLOW`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The user this process acts as: who "ours" means for a file or directory.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Open options for a private file: created 0600 (the umask can only take bits
/// away), and never opened through a symbolic link at its last component.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    options
}

/// A new private file at `path`, opened read-write: whatever was there (a stale
/// file, or a link someone planted, which is removed, not followed) is replaced, and
/// the file is created anew (`O_EXCL`), so it is ours alone.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Creates `dir` and its missing parents, each 0700, and makes `dir` itself 0700 if
/// it already was there (a store or state directory that an older version, or
/// the umask, left open to others). A directory of someone else is left as it is.
///
/// A directory (or the one a link leads to) that belongs to another user, or that
/// others may write to, is refused: whoever can write there could delete, swap or
/// plant the files ebsnap keeps in it (a store's token key, say).
pub(crate) fn private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let me = euid();
    // A link of our own (or root's) may lead elsewhere; one planted by another user
    // chooses where our files go.
    let link = fs::symlink_metadata(dir)?;
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return Err(refused(dir, &format!("it is a link of uid {}", link.uid())));
    }
    let meta = fs::metadata(dir)?;
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refused(dir, &format!("it belongs to uid {}", meta.uid())));
    }
    if meta.uid() == me && meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    } else if meta.mode() & 0o022 != 0 {
        return Err(refused(dir, "other users may write to it"));
    }
    Ok(())
}

fn refused(dir: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} is not a private directory: {why}", dir.display()),
    )
}

/// Replaces `path` with `bytes` atomically: a temporary file, fsync, rename, directory
/// fsync. A reader (or a crash) sees the old file or the new one, never a mix.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().expect("a file in a directory"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temporary name a file is written under before it is renamed into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().expect("a file name").to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Frees the disk space of a byte range, keeping the file's size (a hole reads as zeros).
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

/// Allocates the disk space of a byte range, growing the file's size to cover it (the
/// range reads as zeros until written). Fails with EOPNOTSUPP where the filesystem
/// cannot.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(file, 0, offset, len)
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where the first data at or after `pos` starts (SEEK_DATA); `None` past the last.
/// A filesystem without SEEK_DATA fails with EINVAL.
pub(crate) fn seek_data(file: &File, pos: u64) -> io::Result<Option<u64>> {
    lseek(file, pos, libc::SEEK_DATA)
}

/// The data extent at or after `pos` in a file of `size` bytes: its start, and its end
/// (the next hole, cut at `size`). `None` past the last.
pub(crate) fn next_data_extent(file: &File, pos: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    let Some(start) = seek_data(file, pos)? else {
        return Ok(None);
    };
    let end = lseek(file, start, libc::SEEK_HOLE)?.unwrap_or(size);
    Ok(Some((start, end.min(size))))
}

/// The byte ranges of a file that hold data, ascending.
pub(crate) fn data_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let size = file.metadata()?.len();
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some((start, end)) = next_data_extent(file, pos, size)? else {
            break;
        };
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

/// `lseek`, with ENXIO (no more data past the offset) as `None`.
fn lseek(file: &File, pos: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: plain syscall on a descriptor we own; it only moves the file offset,
    // which nothing else uses (every read and write is positional).
    let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// Whether a file was opened for reading or for writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Whether `O_DIRECT` may be used at all: the process's choice, made once at start.
static DIRECT_IO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Opens `path` and lets `check` judge the open file's metadata (its owner and mode):
/// judged on the descriptor the caller then reads, so the file cannot be swapped
/// between the check and the read.
pub(crate) fn open_checked<E>(
    path: &Path,
    io_error: impl Fn(io::Error) -> E,
    check: impl FnOnce(&fs::Metadata) -> Result<(), E>,
) -> Result<File, E> {
    let file = File::open(path).map_err(&io_error)?;
    check(&file.metadata().map_err(&io_error)?)?;
    Ok(file)
}

/// [`open_checked`], then the file's text.
pub(crate) fn read_checked<E>(
    path: &Path,
    io_error: impl Fn(io::Error) -> E,
    check: impl FnOnce(&fs::Metadata) -> Result<(), E>,
) -> Result<String, E> {
    let file = open_checked(path, &io_error, check)?;
    io::read_to_string(file).map_err(io_error)
}

/// Turns `O_DIRECT` off (or on again) for every file opened from now on: sources,
/// restore targets and the local store's packs then go through the page cache.
pub fn set_direct_io(enabled: bool) {
    DIRECT_IO.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn direct_io() -> bool {
    DIRECT_IO.load(std::sync::atomic::Ordering::Relaxed)
}

/// A second descriptor of an open file with `O_DIRECT`, or `None` where that is
/// refused (a system without `/proc`), turned off, or pointless: tmpfs (Linux 6.6 and
/// later) accepts `O_DIRECT` and serves it from its page cache anyway, so there the
/// file's own descriptor and its page-cache path (with its turns) are used. It is
/// reopened through `/proc/self/fd`, so it names the very file `file` names, never
/// whatever the path names by now.
pub(crate) fn reopen_direct(file: &File, access: Access) -> Option<File> {
    if !direct_io() || on_tmpfs(file) {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(access == Access::Read)
        .write(access == Access::Write)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// Whether `file` is a regular file on tmpfs (or `/dev/shm`). Unknown counts as not.
/// Only a regular file: a device node in `/dev` (devtmpfs, which reports tmpfs too)
/// stands for the device, whose own page cache can be stale, and keeps its `O_DIRECT`.
// `f_type`'s integer type differs between architectures: the cast is not always a no-op.
#[allow(clippy::unnecessary_cast)]
fn on_tmpfs(file: &File) -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct it is given, on our own open descriptor.
    let filled = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } == 0;
    // SAFETY: filled by a successful fstatfs.
    let tmpfs = filled && unsafe { stat.assume_init() }.f_type as i64 == libc::TMPFS_MAGIC as i64;
    tmpfs && file.metadata().is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_gets_no_direct_twin() {
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("SKIPPED: no /dev/shm");
            return;
        };
        let file = File::create(shm.path().join("f")).unwrap();
        assert!(on_tmpfs(&file));
        assert!(reopen_direct(&file, Access::Write).is_none());
        // /dev is devtmpfs, which says tmpfs: a device there still gets O_DIRECT.
        let null = File::open("/dev/null").unwrap();
        assert!(!on_tmpfs(&null));
    }

    #[test]
    fn a_link_planted_by_another_user_is_refused() {
        if euid() != 0 {
            eprintln!("SKIPPED: needs root to plant a link as another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("root-owned");
        fs::create_dir(&target).unwrap();
        let link = tmp.path().join("spool");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let e = private_dir_all(&link).unwrap_err();
        assert!(e.to_string().contains("link of uid 65534"), "{e}");
        // A link of our own is followed.
        let ours = tmp.path().join("ours");
        std::os::unix::fs::symlink(&target, &ours).unwrap();
        private_dir_all(&ours).unwrap();
    }
}

//! Restore targets: a file (written sparse under a temporary name, renamed into place
//! only when whole) or a block device (every block written, zeros included); or, for an
//! incremental restore, an existing file or device changed in place.

use crate::block::{direct_io_fits, source::device_size, BlockIndex, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::engine::{Error, Result};
use crate::store::SnapshotId;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
enum Kind {
    /// Written under `partial`, renamed to the target's path at the end.
    File {
        partial: PathBuf,
    },
    /// An existing file, changed where the snapshots differ.
    FileInPlace,
    Device,
}

#[derive(Debug)]
pub(crate) struct Target {
    file: File,
    /// The same file with `O_DIRECT`, for whole aligned blocks: no copy into the page
    /// cache, no writeback to wait for at the end, and a restore of a large disk
    /// does not push the host's own data out of the cache. `None` where refused.
    direct: Option<File>,
    path: PathBuf,
    kind: Kind,
    /// Bytes the restore produces; blocks are cut at this size.
    size: u64,
    /// Done, or kept for a resume: the partial file is not removed.
    keep: AtomicBool,
    /// A new file's partial file was kept from an interrupted restore and reopened.
    reopened: bool,
    /// Held while a block is written. Writes to one file take its inode lock one at a
    /// time anyway; waiting here sleeps, where waiting there spins (a tenth of a
    /// restore's CPU went to `rwsem_spin_on_owner`). Checksums are still checked in
    /// parallel, before the lock.
    writing: std::sync::Mutex<()>,
}

/// What a full restore does with a file already at the target's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Refuses it ([`Error::TargetExists`]).
    Refuse,
    /// Replaces it (`--force`, or a file ebsnap restored before).
    Overwrite,
}

/// Where a new file's blocks go: a fresh partial file, or the one an interrupted
/// restore kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Partial {
    Create,
    Reopen,
}

/// What the target's path holds, as far as a full restore cares.
enum Found {
    Device,
    /// A file to be made anew (none there yet, or one that may be replaced).
    File,
}

impl Target {
    /// Opens `path` for a restore of `size` bytes, refusing what must not be written.
    pub fn open(
        path: &Path,
        size: u64,
        existing: Existing,
        snapshot: &SnapshotId,
    ) -> Result<Target> {
        Target::open_with(path, size, existing, snapshot, Partial::Create)
    }

    /// The same, for a restore that resumes an interrupted one: a new file's partial
    /// file is reopened as it is, if it is still there whole ([`Target::reopened`]).
    pub fn reopen(
        path: &Path,
        size: u64,
        existing: Existing,
        snapshot: &SnapshotId,
    ) -> Result<Target> {
        Target::open_with(path, size, existing, snapshot, Partial::Reopen)
    }

    fn open_with(
        path: &Path,
        size: u64,
        existing: Existing,
        snapshot: &SnapshotId,
        partial: Partial,
    ) -> Result<Target> {
        match inspect(path, existing)? {
            Found::Device => Target::device(path, size, snapshot),
            Found::File => Target::new_file(path, size, partial),
        }
    }

    fn new(file: File, path: &Path, kind: Kind, size: u64) -> Target {
        Target {
            direct: crate::sys::reopen_direct(&file, crate::sys::Access::Write),
            file,
            path: path.to_owned(),
            kind,
            size,
            keep: AtomicBool::new(false),
            reopened: false,
            writing: std::sync::Mutex::new(()),
        }
    }

    /// A block device, refused if it is smaller than the restore.
    fn device(path: &Path, size: u64, snapshot: &SnapshotId) -> Result<Target> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(target_error("cannot open", path))?;
        let device = device_size(&file).map_err(target_error("cannot size", path))?;
        if device < size {
            return Err(Error::TargetTooSmall {
                path: path.to_owned(),
                size: device,
                needed: size,
                snapshot: snapshot.clone(),
            });
        }
        Ok(Target::new(file, path, Kind::Device, size))
    }

    /// A new file, written under its partial name: the kept one when asked and whole.
    fn new_file(path: &Path, size: u64, partial: Partial) -> Result<Target> {
        let partial_path = partial_path(path);
        let kind = Kind::File {
            partial: partial_path.clone(),
        };
        if partial == Partial::Reopen {
            // Non-blocking: a FIFO planted there must not hang the open (it fails, or
            // is found not to be a regular file, and the restore starts anew).
            let kept = crate::sys::private_options()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&partial_path);
            if let Some(file) = kept.ok().filter(|f| kept_whole(f, size)) {
                let mut target = Target::new(file, path, kind, size);
                target.reopened = true;
                return Ok(target);
            }
        }
        // Created anew (O_EXCL, O_NOFOLLOW, 0600): a link or a file that someone who
        // may write to the target's directory planted there is removed, never
        // followed or written into.
        let file = crate::sys::create_private(&partial_path)
            .map_err(target_error("cannot create", &partial_path))?;
        let target = Target::new(file, path, kind, size);
        // Set the size first: what is never written stays a hole and reads as zeros.
        target
            .file
            .set_len(size)
            .map_err(target_error("cannot size", &partial_path))?;
        Ok(target)
    }

    /// Whether a kept partial file was reopened (see [`Target::reopen`]).
    pub fn reopened(&self) -> bool {
        self.reopened
    }

    /// Where the blocks go: the partial file of a new file, else the target itself.
    pub fn written_path(&self) -> &Path {
        self.write_path()
    }

    /// Makes what was written so far durable (a checkpoint of a resumable restore).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(target_error("syncing", self.write_path()))
    }

    /// Keeps a new file's partial file when the restore stops, to be resumed.
    pub fn keep_partial(&self) {
        self.keep.store(true, Ordering::SeqCst);
    }

    /// Whether the target existed before this restore (its old data must be cleared).
    pub fn in_place(&self) -> bool {
        matches!(self.kind, Kind::FileInPlace | Kind::Device)
    }

    pub fn is_device(&self) -> bool {
        matches!(self.kind, Kind::Device)
    }

    /// The bytes of block `index` that lie within the restore's size (0 past it).
    pub fn bytes_of(&self, index: BlockIndex) -> usize {
        index.bytes_within(self.size)
    }

    /// Bytes the restore produces.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Blocks the restore covers.
    pub fn blocks(&self) -> u64 {
        crate::block::blocks_for_bytes(self.size)
    }

    fn write_path(&self) -> &Path {
        match &self.kind {
            Kind::File { partial } => partial,
            Kind::FileInPlace | Kind::Device => &self.path,
        }
    }

    /// Writes one block, cut at the target's size. Returns the bytes written.
    pub fn write_block(&self, index: BlockIndex, data: &[u8]) -> Result<u64> {
        let len = self.bytes_of(index);
        // A device takes no inode lock for a write: its writes need not take turns.
        let turn =
            (!self.is_device()).then(|| self.writing.lock().unwrap_or_else(|e| e.into_inner()));
        let (data, offset) = (&data[..len], index.offset());
        let direct = self
            .write_direct(data, offset)
            .map_err(target_error("writing", self.write_path()))?;
        if !direct {
            self.file
                .write_all_at(data, offset)
                .map_err(target_error("writing", self.write_path()))?;
        }
        drop(turn);
        if !direct {
            start_writeback(&self.file, offset, len as u64);
        }
        Ok(len as u64)
    }

    /// Writes `data` at `offset` with `O_DIRECT` where it fits: `Ok(false)` when the
    /// caller must write through the page cache instead.
    fn write_direct(&self, data: &[u8], offset: u64) -> std::io::Result<bool> {
        let Some(direct) = self
            .direct
            .as_ref()
            .filter(|_| direct_io_fits(data, offset))
        else {
            return Ok(false);
        };
        match direct.write_all_at(data, offset) {
            Ok(()) => Ok(true),
            // Some filesystems accept O_DIRECT at open and refuse it on write.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens an existing file or device that holds an earlier snapshot, to bring it to
    /// one of `size` bytes by changing only what differs.
    pub fn open_in_place(path: &Path, size: u64, snapshot: &SnapshotId) -> Result<Target> {
        let meta = std::fs::metadata(path).map_err(target_error("cannot open", path))?;
        if meta.file_type().is_block_device() {
            return Target::device(path, size, snapshot);
        }
        if !meta.is_file() {
            return Err(Error::TargetKind {
                path: path.to_owned(),
            });
        }
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(target_error("cannot open", path))?;
        file.set_len(size)
            .map_err(target_error("cannot size", path))?;
        Ok(Target::new(file, path, Kind::FileInPlace, size))
    }

    /// Makes blocks `from..to` read as zeros: a hole punched in a file, zeros (or a
    /// zeroing discard) on a device. Returns the bytes zeroed.
    pub fn clear_blocks(&self, from: BlockIndex, to: BlockIndex) -> Result<u64> {
        if self.is_device() {
            return self.zero_blocks(from, to);
        }
        let start = from.offset().min(self.size);
        let end = to.offset().min(self.size);
        if start < end {
            crate::sys::punch_hole(&self.file, start, end - start)
                .map_err(target_error("zeroing", &self.path))?;
        }
        Ok(end - start)
    }

    /// Zeros the bytes `start..end` of a device: the part of a block before the next
    /// block boundary by writing, whole blocks as [`Target::zero_blocks`] does.
    pub fn zero_range(&self, start: u64, end: u64) -> Result<u64> {
        let end = end.min(self.size);
        if start >= end {
            return Ok(0);
        }
        let boundary = start.next_multiple_of(BLOCK_SIZE_U64).min(end);
        if boundary > start {
            let zeros = vec![0u8; (boundary - start) as usize];
            self.file
                .write_all_at(&zeros, start)
                .map_err(target_error("zeroing", &self.path))?;
        }
        let blocks = crate::block::blocks_for_bytes(end);
        self.zero_blocks(BlockIndex(boundary / BLOCK_SIZE_U64), BlockIndex(blocks))?;
        Ok(end - start)
    }

    /// Zeros blocks `from..to` on a device, so a reused disk keeps no old data there.
    /// (A new file needs nothing: its holes read as zeros.) Returns the bytes zeroed.
    pub fn zero_blocks(&self, from: BlockIndex, to: BlockIndex) -> Result<u64> {
        if !self.is_device() || from >= to {
            return Ok(0);
        }
        let start = from.offset();
        let end = to.offset().min(self.size);
        if zero_out(&self.file, start, end - start).is_ok() {
            return Ok(end - start);
        }
        // No BLKZEROOUT here: write the zeros.
        let zeros = vec![0u8; BLOCK_SIZE];
        for i in from.0..to.0 {
            self.write_block(BlockIndex(i), &zeros)?;
        }
        Ok(end - start)
    }

    /// Makes the restore durable and, for a file, moves it into place.
    pub fn finish(self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(target_error("syncing", self.write_path()))?;
        if let Kind::File { partial } = &self.kind {
            if let Some(mode) = inherited_mode(&self.path) {
                self.file
                    .set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(target_error("cannot set the mode of", partial))?;
            }
            std::fs::rename(partial, &self.path)
                .map_err(target_error("renaming into place", &self.path))?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::sys::sync_dir(dir)
                    .map_err(target_error("syncing the directory of", &self.path))?;
            }
        }
        self.keep_partial();
        Ok(())
    }
}

impl Drop for Target {
    /// A restore that did not finish leaves no partial file behind.
    fn drop(&mut self) {
        if let (false, Kind::File { partial }) = (*self.keep.get_mut(), &self.kind) {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// The mode a file restored over `path` takes: that of the file it replaces under
/// --force, if that file is ours, without setuid, setgid or write access for others;
/// else `None` (the restored file stays 0600). A restore never opens a file up to more
/// readers than it had, nor takes the mode of a file someone else planted.
fn inherited_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let old = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())?;
    (old.uid() == crate::sys::euid()).then_some(old.mode() & 0o777 & !0o022)
}

/// Whether a kept partial file can be resumed: a regular file of the restore's size,
/// ours, and private (one that another user made, or could read, is started anew).
fn kept_whole(file: &File, size: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::euid();
    file.metadata().is_ok_and(|m| {
        m.is_file() && m.len() == size && m.uid() == me && m.mode() & 0o077 == 0 && m.nlink() == 1
    })
}

/// Asks the kernel to start writing a range to disk now, without waiting: writeback
/// overlaps the rest of the restore instead of all happening in the final fsync.
/// A hint only; failure changes nothing (the fsync still makes everything durable).
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a hint on our own descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Decides what the path holds for a full restore, refusing what must not be written.
/// A symbolic link is followed only if it is ours or root's (`/dev/disk/by-id` and the
/// like): one that another user planted could point a restore at any disk.
fn inspect(path: &Path, existing: Existing) -> Result<Found> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(link) = std::fs::symlink_metadata(path) {
        let trusted = [0, crate::sys::euid()].contains(&link.uid());
        if link.file_type().is_symlink() && !trusted {
            return Err(target_error("refusing to follow", path)(
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "a symbolic link owned by uid {}; give the real path",
                        link.uid()
                    ),
                ),
            ));
        }
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => Ok(Found::Device),
        Ok(meta) if !meta.is_file() => Err(Error::TargetKind {
            path: path.to_owned(),
        }),
        Ok(_) if existing == Existing::Refuse => Err(Error::TargetExists {
            path: path.to_owned(),
        }),
        Ok(_) => Ok(Found::File),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::File),
        Err(e) => Err(target_error("cannot inspect", path)(e)),
    }
}

/// An I/O failure on the target (or its partial file) at `path`, while doing `what`.
fn target_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Target {
        what,
        path: path.to_owned(),
        source,
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".ebsnap-partial");
    path.with_file_name(name)
}

/// BLKZEROOUT: the device zeroes the range itself (fast on thin or SSD storage).
fn zero_out(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    const BLKZEROOUT: libc::c_ulong = 0x127f;
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64s through the pointer.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

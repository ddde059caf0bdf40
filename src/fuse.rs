//! `ebsnap mount`'s filesystem: FUSE (through `fuser`), read-only, one directory
//! holding one file, `disk.img`, the snapshot as a disk image. Reads go to the
//! engine's [`BlockReader`] on the tokio runtime, so the FUSE thread never waits for
//! the store; a read that fails is EIO.

use crate::engine::recover::BlockReader;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use std::ffi::CString;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The one file's name.
pub const IMAGE_NAME: &str = "disk.img";

const ROOT: u64 = fuser::FUSE_ROOT_ID;
const IMAGE: u64 = 2;
/// Nothing here ever changes: the kernel may keep what it learns.
const TTL: Duration = Duration::from_secs(3600);

/// The snapshot's filesystem, until [`Mounted`] is dropped or DIR is unmounted.
struct DiskImage {
    reader: BlockReader,
    runtime: Handle,
    /// When the snapshot was taken: the times of both files.
    time: SystemTime,
    owner: (u32, u32),
    ended: Option<oneshot::Sender<()>>,
}

/// A mounted snapshot. Dropping it unmounts it.
pub struct Mounted {
    session: fuser::BackgroundSession,
    dir: PathBuf,
    ended: oneshot::Receiver<()>,
    /// The filesystem ended (DIR was unmounted from outside).
    over: bool,
    /// Detached while in use: it ends only when its users let go.
    detached: bool,
}

impl Mounted {
    /// Resolves once the filesystem has ended: DIR was unmounted from outside.
    pub async fn ended(&mut self) {
        let _ = (&mut self.ended).await;
        self.over = true;
    }

    /// Unmounts DIR, as root; if it is in use (a loop device on disk.img), detaches
    /// it lazily: it leaves DIR now, and the filesystem goes on serving its users
    /// until they let go. Returns whether it was in use. (Not as root, or if it ended
    /// already, this does nothing: `finish` unmounts through fusermount3.)
    pub fn detach(&mut self) -> bool {
        // Once ended, DIR is not ours: whatever is mounted there now is left alone.
        self.over = self.over || self.ended.try_recv().is_ok();
        self.detached = !self.over && detach_if_busy(&self.dir);
        self.detached
    }

    /// Unmounts what is still mounted and waits (a while) for the filesystem's end,
    /// unless it was detached in use (its users' reads then fail).
    pub async fn finish(self) {
        drop(self.session);
        if !self.over && !self.detached {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.ended).await;
        }
    }
}

/// Mounts `reader`'s snapshot at `dir`, read-only; `time` is given to its files.
pub fn mount(reader: BlockReader, dir: &Path, time: SystemTime) -> std::io::Result<Mounted> {
    let (tell, ended) = oneshot::channel();
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let owner = unsafe { (libc::getuid(), libc::getgid()) };
    let fs = DiskImage {
        reader: reader.clone(),
        runtime: Handle::current(),
        time,
        owner,
        ended: Some(tell),
    };
    let options = [
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::DefaultPermissions,
        MountOption::FSName(format!("ebsnap:{}", reader.snapshot())),
        MountOption::Subtype("ebsnap".into()),
    ];
    let session = fuser::spawn_mount2(fs, dir, &options)?;
    Ok(Mounted {
        session,
        dir: dir.to_owned(),
        ended,
        over: false,
        detached: false,
    })
}

impl DiskImage {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o500, 0, 2),
            IMAGE => (FileType::RegularFile, 0o400, self.reader.size(), 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.time,
            mtime: self.time,
            ctime: self.time,
            crtime: self.time,
            kind,
            perm,
            nlink,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: crate::block::BLOCK_SIZE as u32,
            flags: 0,
        })
    }
}

impl Filesystem for DiskImage {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        // The kernel's own read-ahead, besides the reader's.
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(tell) = self.ended.take() {
            let _ = tell.send(());
        }
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.attr(IMAGE) {
            Some(attr) if parent == ROOT && name == IMAGE_NAME => reply.entry(&TTL, &attr, 0),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        match ino {
            IMAGE => reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE),
            _ => reply.error(libc::EISDIR),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        if ino != IMAGE {
            return reply.error(libc::EISDIR);
        }
        let reader = self.reader.clone();
        self.runtime.spawn(async move {
            match reader.read(offset, size as usize).await {
                Ok(data) => reply.data(&data),
                // The reader logged the block and snapshot.
                Err(_) => reply.error(libc::EIO),
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (IMAGE, FileType::RegularFile, IMAGE_NAME),
        ];
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (at, (ino, kind, name)) in entries.iter().enumerate().skip(skip) {
            if reply.add(*ino, at as i64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Unmounts `dir` if it can (root); if it is busy, detaches it lazily and says so
/// (true). Anything else (not root: EPERM; unmounted already: EINVAL) is left to
/// fuser's unmount.
fn detach_if_busy(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; umount2 reads it and nothing else.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return false;
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::EBUSY) {
        return false;
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("cannot detach {}: {e}", dir.display());
        return false;
    }
    true
}

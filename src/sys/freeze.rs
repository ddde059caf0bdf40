//! Freezing filesystems (FIFREEZE / FITHAW), with a thaw that always happens.
//!
//! A [`Frozen`] guard thaws what it froze when it is dropped: on success, on every
//! error and while a panic unwinds. What a guard cannot survive (`kill -9` of the
//! process, an abort) is covered by the watchdog ([`super::watchdog`]), a process of its
//! own started before the first freeze, which thaws when our end of its pipe closes
//! or when the freeze outlasts its timeout.

use super::watchdog::Watchdog;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from linux/fs.h.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Why a freeze or its thaw failed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("{} is already frozen (by another program?): ebsnap neither freezes nor thaws it", .0.display())]
    AlreadyFrozen(PathBuf),
    #[error("cannot freeze {}: {source}", path.display())]
    Freeze { path: PathBuf, source: io::Error },
    #[error("cannot thaw {}: {source}", path.display())]
    Thaw { path: PathBuf, source: io::Error },
    /// Someone thawed the filesystem while ebsnap read: what was read is torn.
    #[error("{} was thawed by another program while ebsnap read it", .0.display())]
    ThawedEarly(PathBuf),
    #[error("cannot start the freeze watchdog: {0}")]
    Watchdog(io::Error),
    /// Without it, a `kill -9` of ebsnap would leave the filesystems frozen.
    #[error("the freeze watchdog died while {} was frozen: thawed, and no snapshot is completed from that read", .0.display())]
    WatchdogGone(PathBuf),
}

/// A mountpoint, opened to be frozen and thawed by descriptor.
pub(crate) struct Mount {
    path: PathBuf,
    dir: File,
}

impl Mount {
    pub fn open(path: &Path) -> io::Result<Mount> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)?;
        Ok(Mount {
            path: path.to_owned(),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// FIFREEZE; a filesystem frozen already answers EBUSY, and is refused.
    fn freeze(&self) -> Result<(), FreezeError> {
        match ioctl(&self.dir, FIFREEZE) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                Err(FreezeError::AlreadyFrozen(self.path.clone()))
            }
            Err(source) => Err(FreezeError::Freeze {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// FITHAW; EINVAL means it was not frozen any more.
    pub fn thaw(&self) -> Result<(), FreezeError> {
        match ioctl(&self.dir, FITHAW) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Err(FreezeError::ThawedEarly(self.path.clone()))
            }
            Err(source) => Err(FreezeError::Thaw {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Whether `path` is the root of a mount. FIFREEZE on any other path freezes the
/// filesystem that holds it: a mistyped mountpoint, or one whose mount failed, would
/// freeze that filesystem instead (often the root one).
pub(crate) fn is_mountpoint(path: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statx is a valid value for the kernel to fill in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx buffer, both valid for the call.
    let r = unsafe { libc::statx(libc::AT_FDCWD, name.as_ptr(), 0, 0, &mut stx) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let attr = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & attr != 0 {
        return Ok(stx.stx_attributes & attr != 0);
    }
    // A kernel before 5.8: a mount root sits on another device than its parent.
    Ok(device(path)? != device(&path.join(".."))?)
}

fn device(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.dev())
}

fn ioctl(dir: &File, request: libc::c_ulong) -> io::Result<()> {
    let mut unused: libc::c_int = 0;
    // SAFETY: FIFREEZE and FITHAW take an int argument they do not use; the pointer
    // is valid for the call.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, &mut unused) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Filesystems frozen by this process: thawed by [`Frozen::thaw`], or when dropped.
pub struct Frozen {
    mounts: Vec<Mount>,
    watchdog: Option<Watchdog>,
    started: Instant,
}

impl Frozen {
    /// Starts the watchdog (`watchdog` is how to run it: this program's hidden
    /// command), then freezes `paths` in order. If one cannot be frozen, those
    /// frozen already are thawed before the error is returned.
    pub fn freeze(
        paths: &[PathBuf],
        timeout: Duration,
        watchdog: &[std::ffi::OsString],
    ) -> Result<Frozen, FreezeError> {
        // Before the watchdog starts: its timeout never ends later than ours.
        let started = Instant::now();
        let mounts = paths
            .iter()
            .map(|p| {
                Mount::open(p).map_err(|source| FreezeError::Freeze {
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let watchdog = Watchdog::start(watchdog, paths, timeout).map_err(FreezeError::Watchdog)?;
        let mut frozen = Frozen {
            mounts: Vec::with_capacity(mounts.len()),
            watchdog: Some(watchdog),
            started,
        };
        for mount in mounts {
            mount.freeze()?;
            frozen.mounts.push(mount);
        }
        Ok(frozen)
    }

    /// How long since the freeze began (the watchdog's start included).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Fails if the watchdog died: from then on nothing would thaw after a `kill -9`.
    pub fn check_watchdog(&self) -> Result<(), FreezeError> {
        match &self.watchdog {
            Some(w) if w.gone() => {
                let first = self.mounts.first().map(|m| m.path.clone());
                Err(FreezeError::WatchdogGone(first.unwrap_or_default()))
            }
            _ => Ok(()),
        }
    }

    /// Thaws every filesystem; the first failure is returned once all were tried. A
    /// filesystem found thawed already means the read was not of one moment.
    pub fn thaw(mut self) -> Result<Duration, FreezeError> {
        self.thaw_all()?;
        Ok(self.started.elapsed())
    }

    fn thaw_all(&mut self) -> Result<(), FreezeError> {
        let mut first = None;
        for mount in self.mounts.drain(..).rev() {
            if let Err(e) = mount.thaw() {
                first.get_or_insert(e);
            }
        }
        // Thawed: the watchdog may go without thawing again.
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Errors were reported by `thaw` when it was called; here (an error path or
        // a panic) the thaw is what matters, and a failure to thaw is all there is
        // left to say. Nothing is logged before the thaw: stderr may be a file on a
        // filesystem that is still frozen.
        if let Err(e) = self.thaw_all() {
            if !matches!(e, FreezeError::ThawedEarly(_)) {
                tracing::error!("{e}");
            }
        }
    }
}

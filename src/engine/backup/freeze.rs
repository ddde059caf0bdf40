//! `--freeze`: what is checked before anything is started, and the read stage of a
//! frozen backup (freeze, read into the spool, thaw; the upload drains the spool).

use super::consistency::Consistency;
use super::plan::Plan;
use super::reader::{spawn_reader, ReadBlock};
use super::spool::{self, Spool};
use crate::block::volume_blocks;
use crate::engine::{Error, Result};
use crate::sys::Frozen;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A freeze checked and ready to be done.
pub(super) struct FreezePlan {
    pub mountpoints: Vec<PathBuf>,
    pub timeout: Duration,
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    watchdog: Vec<OsString>,
    slow_read: Duration,
}

/// What a frozen read measured, filled in as it goes.
#[derive(Debug, Default)]
pub(super) struct FreezeStats {
    /// From just before the watchdog started to the thaw, in microseconds.
    pub frozen_micros: std::sync::atomic::AtomicU64,
}

impl FreezeStats {
    pub fn frozen_seconds(&self) -> f64 {
        self.frozen_micros
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e6
    }
}

/// Checks `--freeze` before anything starts: each mountpoint is the root of a mount on
/// the source's device (unless the blocks come from `--read-from`), and the spool is not on
/// a filesystem to be frozen (writing it would wait for the thaw).
pub(super) fn plan_freeze(c: &Consistency, source: &Path) -> Result<Option<FreezePlan>> {
    if c.freeze.is_empty() {
        return Ok(None);
    }
    let spool_error = |source| Error::Spool {
        path: c.spool_dir.clone(),
        source,
    };
    // A spool that cannot hold one block would fail at the first changed block, with
    // the filesystem already frozen: say so before freezing anything.
    if c.spool_max < crate::block::BLOCK_SIZE_U64 {
        return Err(spool_error(std::io::Error::other(format!(
            "--spool-max {} is less than one block ({} bytes)",
            c.spool_max,
            crate::block::BLOCK_SIZE_U64
        ))));
    }
    // Where the spool will be (it is created only once it is known not to be on a
    // filesystem to freeze).
    let spool_dev = existing_ancestor(&c.spool_dir)
        .and_then(|d| device_of(&d))
        .map_err(spool_error)?;
    // One filesystem named twice (`/srv` and `/srv/`, or a bind mount of it) is
    // frozen once: a second FIFREEZE would find it frozen, as if by someone else.
    let mut devices = Vec::new();
    let mut mountpoints = Vec::new();
    for mountpoint in &c.freeze {
        let dev = check_mountpoint(c, source, mountpoint, spool_dev)?;
        if !devices.contains(&dev) {
            devices.push(dev);
            mountpoints.push(mountpoint.clone());
        }
    }
    crate::sys::private_dir_all(&c.spool_dir).map_err(spool_error)?;
    Ok(Some(FreezePlan {
        mountpoints,
        timeout: c.freeze_timeout,
        spool_dir: c.spool_dir.clone(),
        spool_max: c.spool_max,
        watchdog: c.watchdog.clone(),
        slow_read: c.slow_read,
    }))
}

/// One `--freeze` path: a mountpoint, not the spool's filesystem, and (unless the
/// blocks come from `--read-from`) the source's. Returns its filesystem's device.
fn check_mountpoint(
    c: &Consistency,
    source: &Path,
    mountpoint: &Path,
    spool_dev: u64,
) -> Result<u64> {
    let refuse = |why: String| Error::FreezeRefused {
        mountpoint: mountpoint.to_owned(),
        why,
    };
    let dev = device_of(mountpoint).map_err(|e| refuse(e.to_string()))?;
    if !crate::sys::is_mountpoint(mountpoint).map_err(|e| refuse(e.to_string()))? {
        return Err(refuse(
            "it is not a mountpoint (freezing it would freeze the filesystem that holds it)".into(),
        ));
    }
    if dev == spool_dev {
        return Err(refuse(format!(
            "the spool directory {} is on that filesystem; choose one elsewhere with --spool",
            c.spool_dir.display()
        )));
    }
    if c.read_from.is_none() {
        source_is_device(source, dev).map_err(refuse)?;
    }
    Ok(dev)
}

/// `dir`, or its nearest ancestor that exists.
fn existing_ancestor(dir: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(dir)?;
    let found = absolute.ancestors().find(|a| a.exists());
    Ok(found.unwrap_or(Path::new("/")).to_owned())
}

/// The device a directory's filesystem is on (its `st_dev`).
fn device_of(dir: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    Ok(meta.dev())
}

/// Whether the source is the block device the filesystem is on: freezing a
/// filesystem makes another device's blocks no more consistent.
fn source_is_device(source: &Path, dev: u64) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if meta.file_type().is_block_device() && meta.rdev() == dev {
        return Ok(());
    }
    Err(format!(
        "the source {} is not the device of that filesystem (device {major}:{minor}); \
         pass --read-from to read another path under the freeze",
        source.display()
    ))
}

/// The batches a backup sends: straight from the reader, or, under a freeze, through
/// the spool. The freeze begins before the first block is read and ends when the last
/// one is in the spool, whatever the upload does.
pub(super) async fn read_stage(
    plan: &Plan,
    in_flight: usize,
    content_digests: bool,
) -> Result<(
    mpsc::Receiver<Result<Vec<ReadBlock>>>,
    Option<Arc<FreezeStats>>,
)> {
    let reader = || {
        spawn_reader(
            plan.source.clone(),
            plan.baseline.clone(),
            volume_blocks(plan.volume_size_gib),
            in_flight,
            content_digests,
        )
    };
    let Some(freeze) = &plan.freeze else {
        return Ok((reader(), None));
    };
    let spool = Spool::create(&freeze.spool_dir, freeze.spool_max)?;
    let frozen = freeze_now(freeze).await?;
    let stats = Arc::new(FreezeStats::default());
    let limits = spool::Limits {
        timeout: freeze.timeout,
        slow_read: freeze.slow_read,
        mountpoints: freeze.mountpoints.clone(),
    };
    let batches = spool::through(reader(), spool, frozen, limits, stats.clone(), in_flight);
    Ok((batches, Some(stats)))
}

/// Freezes (off the async threads: FIFREEZE writes the filesystem's dirty data first).
async fn freeze_now(freeze: &FreezePlan) -> Result<Frozen> {
    let (mountpoints, timeout, watchdog) = (
        freeze.mountpoints.clone(),
        freeze.timeout,
        freeze.watchdog.clone(),
    );
    tracing::info!("freezing {}", joined(&mountpoints));
    let frozen =
        tokio::task::spawn_blocking(move || Frozen::freeze(&mountpoints, timeout, &watchdog))
            .await
            .expect("the freeze does not panic")?;
    Ok(frozen)
}

/// Paths for a message: `a, b`.
pub(super) fn joined(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

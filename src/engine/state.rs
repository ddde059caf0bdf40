//! Local state under `$XDG_STATE_HOME/ebsnap`: manifests of the sources backed up, and
//! records of the snapshot last restored onto each target.

use super::Stop;
use crate::engine::{Busy, Error, Result};
use crate::sys::{self, take_lock, LockKind, LockWait};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A short stable name for a (store, path) pair.
fn key(store: &str, path: &str) -> String {
    let digest = Sha256::digest(format!("{store}\n{path}").as_bytes());
    hex::encode(&digest[..16])
}

/// Where the manifest of `source` backed up into `store` lives.
pub fn manifest_path(state_dir: &Path, store: &str, source: &str) -> PathBuf {
    state_dir
        .join("manifests")
        .join(format!("{}.manifest", key(store, source)))
}

/// Where the journal of an unfinished backup of `source` into `store` lives (a copy's
/// source is the snapshot it copies, named with its store: see `engine::copy`).
pub fn upload_journal_path(state_dir: &Path, store: &str, source: &str) -> PathBuf {
    state_dir
        .join("uploads")
        .join(format!("{}.journal", key(store, source)))
}

/// Which snapshot was last restored onto a target, completely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub store: String,
    pub target: String,
    pub snapshot_id: String,
    pub target_bytes: u64,
}

fn record_path(state_dir: &Path, store: &str, target: &str) -> PathBuf {
    state_dir
        .join("restores")
        .join(format!("{}.json", key(store, target)))
}

pub fn read_restore_record(state_dir: &Path, store: &str, target: &str) -> Option<RestoreRecord> {
    let raw = std::fs::read(record_path(state_dir, store, target)).ok()?;
    serde_json::from_slice::<RestoreRecord>(&raw)
        .ok()
        .filter(|r| r.store == store && r.target == target)
}

/// Saves the record crash-safely.
pub fn write_restore_record(state_dir: &Path, record: &RestoreRecord) -> Result<()> {
    let path = record_path(state_dir, &record.store, &record.target);
    atomic_json(&path, record)
}

/// Writes `value` as JSON at `path`: a temporary file, fsync, rename, directory fsync.
fn atomic_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let io = |e| Error::State {
        path: path.to_owned(),
        source: e,
    };
    sys::private_dir_all(path.parent().expect("a directory")).map_err(io)?;
    let json = serde_json::to_vec_pretty(value).expect("serializable");
    sys::atomic_write(path, &json).map_err(io)
}

/// Forgets every record of `target`, whatever the store (before a restore changes the
/// target, so that an interrupted restore is never taken for a finished one, and a
/// restore from another store leaves no stale claim behind). A record that cannot be
/// removed stops the restore.
pub fn clear_restore_records(state_dir: &Path, target: &str) -> Result<()> {
    let dir = state_dir.join("restores");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::State {
                path: dir,
                source: e,
            })
        }
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let about_target = std::fs::read(&path)
            .ok()
            .and_then(|raw| serde_json::from_slice::<RestoreRecord>(&raw).ok())
            .is_some_and(|r| r.target == target);
        if about_target {
            std::fs::remove_file(&path).map_err(|e| Error::State {
                path: path.clone(),
                source: e,
            })?;
            removed = true;
        }
    }
    if removed {
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Makes the removal of a file in `dir` durable. The target is written next, and its
/// writes can reach the disk before the directory does: a record that came back after
/// a power cut would claim a half-written target.
fn sync_dir(dir: &Path) -> Result<()> {
    sys::sync_dir(dir).map_err(|e| Error::State {
        path: dir.to_owned(),
        source: e,
    })
}

/// The name a target is known by: its canonical path (symlinks such as
/// `/dev/disk/by-id/...` resolved), so that two names of one disk share one record.
pub fn target_name(path: &Path) -> String {
    let canonical = std::fs::canonicalize(path).or_else(|_| {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::canonicalize(parent).map(|p| p.join(path.file_name().unwrap_or_default()))
    });
    canonical
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
        .display()
        .to_string()
}

/// An exclusive lock on one source's backups into one store, held for a whole backup:
/// two overlapping runs (cron) must not interleave their manifests. A second run waits
/// (until `stop` is requested).
pub async fn lock_source(
    state_dir: &Path,
    store: &str,
    source: &str,
    wait: LockWait,
    stop: &Stop,
) -> Result<std::fs::File> {
    let path = state_dir
        .join("manifests")
        .join(format!("{}.lock", key(store, source)));
    let busy = Busy::Backup {
        source_name: source.to_owned(),
    };
    lock_or_stop(&path, busy, wait, stop).await
}

/// An exclusive lock on copies from one store into another, held for a whole copy:
/// two overlapping runs would both start the same copies.
pub async fn lock_copy(
    state_dir: &Path,
    from: &str,
    to: &str,
    wait: LockWait,
    stop: &Stop,
) -> Result<std::fs::File> {
    let path = state_dir
        .join("uploads")
        .join(format!("{}.copy.lock", key(from, to)));
    let busy = Busy::Copy {
        from: from.to_owned(),
        to: to.to_owned(),
    };
    lock_or_stop(&path, busy, wait, stop).await
}

/// An exclusive lock on one restore target (whatever the store), held for a whole
/// restore: two restores onto one disk would interleave their blocks.
pub async fn lock_target(
    state_dir: &Path,
    target: &str,
    wait: LockWait,
    stop: &Stop,
) -> Result<std::fs::File> {
    let path = state_dir
        .join("restoring")
        .join(format!("{}.lock", key("", target)));
    let busy = Busy::Restore {
        target: target.to_owned(),
    };
    lock_or_stop(&path, busy, wait, stop).await
}

/// Takes the lock file at `path` as `wait` says, saying why it waits. The wait polls
/// (flock has no timeout, and a blocked thread could not be called off) and ends with
/// [`Error::Interrupted`] when `stop` is requested: nothing has started, so a signal
/// while waiting needs nothing saved.
async fn lock_or_stop(
    path: &Path,
    busy: Busy,
    wait: LockWait,
    stop: &Stop,
) -> Result<std::fs::File> {
    let io = |e| Error::State {
        path: path.to_owned(),
        source: e,
    };
    sys::private_dir_all(path.parent().expect("a directory")).map_err(io)?;
    let file = sys::private_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    let give_up_at = match wait {
        LockWait::Fail => Some(Instant::now()),
        LockWait::Wait => None,
        LockWait::Up(limit) => Some(Instant::now() + limit),
    };
    let mut said = false;
    // A dead holder's lock is free: flock goes with the process.
    while !take_lock(&file, LockKind::Exclusive, LockWait::Fail, || ()).map_err(io)? {
        if give_up_at.is_some_and(|t| Instant::now() >= t) {
            return Err(Error::Busy { job: busy });
        }
        if !said {
            tracing::warn!("{busy}; waiting for it");
            said = true;
        }
        tokio::select! {
            () = tokio::time::sleep(LOCK_POLL) => {}
            e = stop.stopped() => return Err(e),
        }
    }
    Ok(file)
}

/// How often a lock wait tries again.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// How far an unfinished restore got: every block below `done_below` is written and
/// durable (in the partial file of a new file, or in place).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreProgress {
    pub store: String,
    pub target: String,
    pub snapshot_id: String,
    /// The base of an incremental restore; `None` for a full one.
    pub from: Option<String>,
    pub target_bytes: u64,
    pub done_below: u64,
}

fn progress_path(state_dir: &Path, target: &str) -> PathBuf {
    state_dir
        .join("restoring")
        .join(format!("{}.json", key("", target)))
}

pub fn read_restore_progress(state_dir: &Path, target: &str) -> Option<RestoreProgress> {
    let raw = std::fs::read(progress_path(state_dir, target)).ok()?;
    serde_json::from_slice::<RestoreProgress>(&raw)
        .ok()
        .filter(|p| p.target == target)
}

/// Saves the progress crash-safely; the target's data must be durable first.
pub fn write_restore_progress(state_dir: &Path, progress: &RestoreProgress) -> Result<()> {
    let path = progress_path(state_dir, &progress.target);
    atomic_json(&path, progress)
}

/// Forgets an unfinished restore's progress, durably (see [`sync_dir`]).
pub fn clear_restore_progress(state_dir: &Path, target: &str) -> Result<()> {
    let path = progress_path(state_dir, target);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(path.parent().expect("a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::State { path, source: e }),
    }
}

//! The engine's error: what failed, and on what (path, block index, snapshot).

use crate::block::{BlockIndex, Digest};
use crate::store::{SnapshotId, SnapshotStatus, StoreError};
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open source {path}: {source}")]
    OpenSource {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("reading block {index} of {path}: {source}")]
    ReadSource {
        path: PathBuf,
        index: BlockIndex,
        source: std::io::Error,
    },

    #[error("{what} {path}: {source}")]
    Target {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} already exists: pass --force to overwrite it")]
    TargetExists { path: PathBuf },

    #[error("{path} is {size} bytes, smaller than the {needed} bytes of snapshot {snapshot}")]
    TargetTooSmall {
        path: PathBuf,
        size: u64,
        needed: u64,
        snapshot: SnapshotId,
    },

    #[error("{path} is not a regular file or block device")]
    TargetKind { path: PathBuf },

    #[error("source {path} is {size} bytes, larger than the 64 TiB an EBS snapshot holds")]
    SourceTooLarge { path: PathBuf, size: u64 },

    #[error("{}", with_snapshot(snapshot, source))]
    Store {
        snapshot: SnapshotId,
        source: StoreError,
    },

    #[error("snapshot {snapshot}, block {index}: {source}")]
    StoreBlock {
        snapshot: SnapshotId,
        index: BlockIndex,
        source: StoreError,
    },

    #[error(transparent)]
    StoreOnly(#[from] StoreError),

    #[error("snapshot {snapshot}, block {index}: data does not match its checksum (stored {expected}, read {actual})")]
    BadBlock {
        snapshot: SnapshotId,
        index: BlockIndex,
        expected: Digest,
        actual: Digest,
    },

    #[error("snapshot {snapshot} is {status}, not completed")]
    NotCompleted {
        snapshot: SnapshotId,
        status: SnapshotStatus,
    },

    #[error("the store reports a block size of {got} bytes; ebsnap works with 524288")]
    BlockSize { got: u32 },

    #[error("local state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{message}")]
    UnfitParent { message: String },

    #[error("{what}")]
    Busy { what: String },

    #[error("{message}")]
    UnfitTarget { message: String },

    #[error("interrupted by {}", crate::engine::signal_name(*signal))]
    Interrupted { signal: i32 },

    /// The work stopped, and what it had done is kept: running the same command again
    /// continues it.
    #[error("{source}\n{snapshot} is kept pending: run the same command again to resume it (before it times out, {timeout_minutes} minutes after its last write)")]
    Resumable {
        snapshot: SnapshotId,
        timeout_minutes: u32,
        source: Box<Error>,
    },

    #[error("{source}\nthe restore's progress is kept in {partial}: run the same command again to resume it")]
    RestoreResumable {
        partial: PathBuf,
        source: Box<Error>,
    },

    #[error("the store's lists of snapshot {snapshot} are inconsistent: {message}")]
    Inconsistent {
        snapshot: SnapshotId,
        message: String,
    },
}

impl Error {
    /// Whether the failure is damaged or different data (exit code 3) rather than an
    /// operational failure.
    pub fn is_bad_data(&self) -> bool {
        matches!(
            self,
            Error::BadBlock { .. } | Error::StoreOnly(StoreError::Corrupt { .. })
        ) || matches!(
            self,
            Error::Store {
                source: StoreError::Corrupt { .. },
                ..
            }
        )
    }

    /// The signal that interrupted the work, if a signal did: the process should exit
    /// with 128 + that number, as shells expect.
    pub fn interrupted_by(&self) -> Option<i32> {
        match self {
            Error::Interrupted { signal } => Some(*signal),
            Error::Resumable { source, .. } | Error::RestoreResumable { source, .. } => {
                source.interrupted_by()
            }
            _ => None,
        }
    }

    pub(crate) fn store(snapshot: &SnapshotId) -> impl FnOnce(StoreError) -> Error + '_ {
        move |source| Error::Store {
            snapshot: snapshot.clone(),
            source,
        }
    }

    pub(crate) fn block(
        snapshot: &SnapshotId,
        index: BlockIndex,
    ) -> impl FnOnce(StoreError) -> Error + '_ {
        move |source| Error::StoreBlock {
            snapshot: snapshot.clone(),
            index,
            source,
        }
    }
}

/// The store error, prefixed with the snapshot unless it already names it.
fn with_snapshot(snapshot: &SnapshotId, source: &StoreError) -> String {
    let message = source.to_string();
    if message.contains(snapshot.as_str()) {
        message
    } else {
        format!("snapshot {snapshot}: {message}")
    }
}

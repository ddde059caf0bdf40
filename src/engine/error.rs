//! The engine's error: what failed, and on what (path, block index, snapshot).

use crate::block::{BlockIndex, Digest, OutOfOrder};
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

    /// A store's failure, with the snapshot and block it concerned when known.
    #[error("{}", store_message(snapshot.as_ref(), *index, source))]
    Store {
        snapshot: Option<SnapshotId>,
        index: Option<BlockIndex>,
        source: StoreError,
    },

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

    /// The parent asked for (`--parent`) cannot have this child.
    #[error("{why}; use --full for a new lineage")]
    UnfitParent { why: UnfitParent },

    #[error("{job}")]
    Busy { job: Busy },

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

    #[error("the store's lists of snapshot {snapshot} are inconsistent: {what}")]
    Inconsistent {
        snapshot: SnapshotId,
        what: Inconsistency,
    },

    #[error("no completed snapshot of {source_name} in the store to copy")]
    NothingToCopy { source_name: String },

    #[error("a retention policy that keeps nothing would remove all but the newest snapshot of every source: give at least one --keep-* option")]
    EmptyPolicy,

    /// A forget stopped after it had removed some snapshots: `report` says which.
    #[error("{source}\n{} snapshot(s) were removed before that; run the same command again to finish", report.removed.len())]
    ForgetIncomplete {
        report: Box<crate::engine::ForgetReport>,
        source: Box<Error>,
    },

    #[error("writing to stdout: {source}")]
    Stdout { source: std::io::Error },

    /// A pre-hook failed: nothing was started.
    #[error("{hook} `{command}` {why}: the backup was not started")]
    Hook {
        hook: &'static str,
        command: String,
        why: String,
    },

    #[error("--read-from {read_from} is {bytes} bytes, but the source {source_path} is {source_bytes}: they must be the same size")]
    ReadFromSize {
        source_path: PathBuf,
        source_bytes: u64,
        read_from: PathBuf,
        bytes: u64,
    },

    /// `--freeze` cannot be done as asked; nothing was frozen.
    #[error("--freeze {mountpoint}: {why}")]
    FreezeRefused { mountpoint: PathBuf, why: String },

    #[error(transparent)]
    Freeze(#[from] crate::sys::FreezeError),

    #[error("the freeze of {} lasted longer than --freeze-timeout ({}s): thawed, and no snapshot is completed from that read", display_paths(mountpoints), timeout.as_secs())]
    FreezeTimeout {
        mountpoints: Vec<PathBuf>,
        timeout: std::time::Duration,
    },

    #[error("the spool in {dir} would pass --spool-max ({max} bytes) while {} is frozen: thawed; raise --spool-max or free the spool's disk", display_paths(mountpoints))]
    SpoolFull {
        dir: PathBuf,
        max: u64,
        mountpoints: Vec<PathBuf>,
    },

    /// A backup failed, and then its post-hook ran (and exited with this code).
    #[error("{source}")]
    AfterPostHook {
        source: Box<Error>,
        post_hook_exit_code: i32,
    },

    #[error("spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Why a parent cannot have a child of this source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnfitParent {
    /// A volume cannot shrink below its parent's.
    #[error("the source ({source_bytes} bytes) is smaller than parent {parent}'s {parent_gib} GiB volume")]
    Smaller {
        parent: SnapshotId,
        source_bytes: u64,
        parent_gib: u64,
    },
    /// Encryption cannot be switched on in a lineage.
    #[error("parent {parent} is not encrypted, and a child cannot switch encryption on")]
    Unencrypted { parent: SnapshotId },
}

/// The run that holds a lock another one waits for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("another backup of {source_name} into this store is running")]
    Backup { source_name: String },
    #[error("another restore onto {target} is running")]
    Restore { target: String },
    #[error("another copy from {from} into {to} is running")]
    Copy { from: String, to: String },
}

/// What the store's lists of a snapshot said that cannot be.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    #[error("block {index} listed out of order")]
    ListedOutOfOrder { index: BlockIndex },
    #[error("{0}")]
    Aggregate(OutOfOrder),
    /// Data past the size the snapshot records: the tag was changed (anyone allowed
    /// CreateTags can), or the snapshot was not made by ebsnap as it says.
    #[error(
        "block {index} holds data beyond the {size} bytes that the snapshot's {} tag records",
        crate::engine::SOURCE_BYTES_TAG
    )]
    DataBeyondSize { index: BlockIndex, size: u64 },
    #[error("block {index} came back {len} bytes long, not one block")]
    BlockLength { index: BlockIndex, len: usize },
    /// The recorded size is not a number, or more than the volume holds.
    #[error(
        "its {} tag says {value:?}, which is not a size within its volume",
        crate::engine::SOURCE_BYTES_TAG
    )]
    SizeTag { value: String },
}

impl Error {
    /// Whether the failure is damaged or different data (exit code 3) rather than an
    /// operational failure. A store's damage reported for one block (a put or a get) has
    /// always counted as operational; only damage found outside a block is bad data.
    pub fn is_bad_data(&self) -> bool {
        if let Error::AfterPostHook { source, .. } = self {
            return source.is_bad_data();
        }
        matches!(
            self,
            Error::BadBlock { .. }
                | Error::Inconsistent { .. }
                | Error::Store {
                    index: None,
                    source: StoreError::Corrupt { .. },
                    ..
                }
        )
    }

    /// The code the process exits with for this failure (README: Exit codes): 128 +
    /// the signal of an interruption, 3 for bad data, else 1.
    pub fn exit_code(&self) -> u8 {
        match self.interrupted_by() {
            Some(signal) => 128u8.saturating_add(signal as u8),
            None if self.is_bad_data() => 3,
            // Refused before any work began, like a usage error.
            None if matches!(self, Error::EmptyPolicy) => 2,
            None => 1,
        }
    }

    /// The store's failure this error wraps, if it is one.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Error::Store { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether a failed run is worth resuming rather than starting afresh: it stopped
    /// for a reason outside the snapshot (a signal, the network, the service, the disk),
    /// not because the store refused what was sent.
    pub(crate) fn worth_resuming(&self) -> bool {
        match self {
            Error::Interrupted { .. } | Error::ReadSource { .. } | Error::State { .. } => true,
            _ => self.store_error().is_some_and(|s| {
                matches!(
                    s,
                    StoreError::Throttled { .. }
                        | StoreError::Unavailable { .. }
                        | StoreError::Io { .. }
                        | StoreError::Locked { .. }
                )
            }),
        }
    }

    /// The signal that interrupted the work, if a signal did: the process should exit
    /// with 128 + that number, as shells expect.
    pub fn interrupted_by(&self) -> Option<i32> {
        match self {
            Error::Interrupted { signal } => Some(*signal),
            Error::Resumable { source, .. }
            | Error::RestoreResumable { source, .. }
            | Error::ForgetIncomplete { source, .. }
            | Error::AfterPostHook { source, .. } => source.interrupted_by(),
            _ => None,
        }
    }

    /// The exit code of the post-hook that ran after this failure, if one did.
    pub fn post_hook_exit_code(&self) -> Option<i32> {
        match self {
            Error::AfterPostHook {
                post_hook_exit_code,
                ..
            } => Some(*post_hook_exit_code),
            _ => None,
        }
    }

    /// Wraps a store's failure on `snapshot`.
    pub fn store(snapshot: &SnapshotId) -> impl FnOnce(StoreError) -> Error + '_ {
        move |source| Error::Store {
            snapshot: Some(snapshot.clone()),
            index: None,
            source,
        }
    }

    /// Wraps a store's failure on block `index` of `snapshot`.
    pub fn block(
        snapshot: &SnapshotId,
        index: BlockIndex,
    ) -> impl FnOnce(StoreError) -> Error + '_ {
        move |source| Error::Store {
            snapshot: Some(snapshot.clone()),
            index: Some(index),
            source,
        }
    }
}

impl From<StoreError> for Error {
    /// A store's failure outside any one snapshot.
    fn from(source: StoreError) -> Error {
        Error::Store {
            snapshot: None,
            index: None,
            source,
        }
    }
}

/// What a store error says, prefixed with what it concerned: the snapshot and block,
/// or the snapshot alone unless the message already names it.
fn store_message(
    snapshot: Option<&SnapshotId>,
    index: Option<BlockIndex>,
    source: &StoreError,
) -> String {
    let message = source.to_string();
    match (snapshot, index) {
        (Some(s), Some(i)) => format!("snapshot {s}, block {i}: {message}"),
        (Some(s), None) if !message.contains(s.as_str()) => format!("snapshot {s}: {message}"),
        (None, Some(i)) => format!("block {i}: {message}"),
        _ => message,
    }
}

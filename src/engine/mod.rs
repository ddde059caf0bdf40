//! The engine: backup, restore, copy, verify and diff, over any [`SnapshotStore`].
//!
//! Each operation plans first (open and size things, check what can be checked before
//! anything is written), then applies, streaming blocks with bounded memory.

mod backup;
mod bitmap;
mod checked;
mod copy;
mod diff;
mod error;
mod flow;
pub mod forget;
mod hooks;
mod pages;
mod progress;
pub mod recover;
mod restore;
pub mod state;
mod stop;
mod target;
mod verify;

pub use crate::block::identity::SourceIdentity;
pub use crate::sys::FreezeError;
pub use backup::baseline::ParentChoice;
pub use backup::{
    backup, BackupOptions, BackupReport, Consistency, DEFAULT_FREEZE_TIMEOUT, DEFAULT_HOOK_TIMEOUT,
    DEFAULT_SPOOL_MAX,
};
pub use copy::{
    copy, CopiedSnapshot, CopyOptions, CopyReport, CopySelection, SkippedSnapshot, COPIED_FROM_TAG,
};
pub use diff::{diff, DiffReport};
pub use error::{Busy, Error, Inconsistency, Result, UnfitParent};
pub use forget::{forget, parse_keep_within, ForgetEntry, ForgetOptions, ForgetReport, KeepPolicy};
pub use progress::{NoProgress, Progress};
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use stop::{signal_name, Stop};
pub use verify::{verify, VerifyReport};

use crate::store::{SnapshotId, SnapshotInfo, SnapshotStatus, SnapshotStore};
use std::time::Duration;

/// Block requests in flight at most, by default (`--workers`): the flow finds how many
/// the link needs below that. 256 carry 1000 requests/s at up to 250 ms a request,
/// and hold 128 MiB of blocks at most.
pub const DEFAULT_WORKERS: usize = 256;

/// Tag holding the source's exact size in bytes, so a restore gets the size back.
pub const SOURCE_BYTES_TAG: &str = "ebsnap:source-bytes";
/// Tag holding what the snapshot's source is known by, its lineage's key: a file's
/// absolute path, a block device's stable id (see [`crate::block::identity`]).
/// Snapshots of one source are grouped by it (the parent chosen, `copy --source`,
/// retention).
pub const SOURCE_PATH_TAG: &str = "ebsnap:source";
/// Tag on every snapshot ebsnap made (backup, copy; the EBS store adds it to whatever
/// it starts): only those are ever removed by `forget`.
pub use crate::store::ebs_tags::MANAGED_TAG;
/// Tag holding a block device's stable id (the same as `ebsnap:source`); a snapshot of
/// a device without it predates ids, and its `ebsnap:source` is a path.
pub const DEVICE_ID_TAG: &str = "ebsnap:device-id";
/// Tag holding the path a block device was backed up from (`/dev/sdb`), for people.
pub const DEVICE_PATH_TAG: &str = "ebsnap:device-path";

/// The byte size a restore of `info` produces, for reading the snapshot's data: the
/// recorded size, else the whole volume. Anyone allowed CreateTags can change the tag:
/// one that is not a size within the volume is an inconsistency, not a size to obey.
pub(crate) fn checked_size(info: &SnapshotInfo) -> Result<u64> {
    let volume = info.volume_size_gib * crate::block::GIB;
    let Some(value) = info.tag(SOURCE_BYTES_TAG) else {
        return Ok(volume);
    };
    match value.parse::<u64>() {
        Ok(size) if size <= volume => Ok(size),
        _ => Err(Error::Inconsistent {
            snapshot: info.id.clone(),
            what: Inconsistency::SizeTag {
                value: value.to_owned(),
            },
        }),
    }
}

/// The byte size a restore of `info` produces: the source's size when recorded, else the
/// whole volume. (For display; what reads the data uses [`checked_size`].)
pub fn restored_size(info: &SnapshotInfo) -> u64 {
    info.tag(SOURCE_BYTES_TAG)
        .and_then(|v| v.parse().ok())
        .unwrap_or(info.volume_size_gib * crate::block::GIB)
}

/// Waits (polling) until a snapshot whose completion was requested is `completed`.
/// Stores that seal asynchronously (EBS) answer `pending` for a while.
pub(crate) async fn wait_until_completed(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    mut status: SnapshotStatus,
) -> Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        match status {
            SnapshotStatus::Completed => return Ok(()),
            SnapshotStatus::Error => {
                return Err(Error::NotCompleted {
                    snapshot: id.clone(),
                    status,
                })
            }
            SnapshotStatus::Pending => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                status = store
                    .describe_snapshot(id)
                    .await
                    .map_err(Error::store(id))?
                    .status;
            }
        }
    }
}

/// The snapshot's description, refusing one that is not completed.
pub(crate) async fn described_completed(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
) -> Result<SnapshotInfo> {
    let info = store
        .describe_snapshot(id)
        .await
        .map_err(Error::store(id))?;
    if info.status != SnapshotStatus::Completed {
        return Err(Error::NotCompleted {
            snapshot: id.clone(),
            status: info.status,
        });
    }
    Ok(info)
}

/// The snapshot's description, refusing one that cannot be read.
pub(crate) async fn completed_snapshot(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
) -> Result<SnapshotInfo> {
    let info = described_completed(store, id).await?;
    if !info.block_size_ok() {
        return Err(Error::BlockSize {
            got: info.block_size,
        });
    }
    Ok(info)
}

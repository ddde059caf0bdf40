//! Planning a restore: everything decided before the target changes. Take the
//! target's lock, find what an interrupted restore left and what the target holds,
//! and choose the base of an incremental restore.

use super::RestoreOptions;
use crate::engine::state::{
    clear_restore_progress, lock_target, read_restore_progress, read_restore_record, target_name,
    RestoreProgress, RestoreRecord,
};
use crate::engine::target::Existing;
use crate::engine::{checked_size, completed_snapshot, Result};
use crate::store::{SnapshotId, SnapshotStore};
use std::path::Path;

/// What a restore decides before the target changes.
pub(super) struct Plan {
    /// Bytes the restore produces.
    pub size: u64,
    pub target_name: String,
    pub identity: String,
    /// Held for the whole restore: one restore onto a target at a time.
    _lock: Option<std::fs::File>,
    /// What a full restore does with a file already there.
    pub existing: Existing,
    /// The interrupted restore of the same snapshot this one continues.
    pub resume: Option<RestoreProgress>,
    /// The snapshot the target holds: only what differs from it is changed.
    pub base: Option<SnapshotId>,
}

pub(super) async fn plan(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    path: &Path,
    options: &RestoreOptions,
) -> Result<Plan> {
    let size = checked_size(&completed_snapshot(store, id).await?)?;
    let target_name = target_name(path);
    let identity = store.identity();
    let state = options.state_dir.as_deref();
    let _lock = match state {
        Some(d) => Some(lock_target(d, &target_name, options.lock_wait, &options.stop).await?),
        None => None,
    };
    let record = state.and_then(|d| read_restore_record(d, &identity, &target_name));
    let resume = state
        .and_then(|d| read_restore_progress(d, &target_name))
        .filter(|p| p.store == identity && p.snapshot_id == id.as_str() && p.target_bytes == size)
        .filter(|p| resumable_as_asked(p, options));
    let base = match &resume {
        Some(p) => p.from.as_ref().and_then(|f| f.parse().ok()),
        None if options.full => None,
        None => options
            .from
            .clone()
            .or_else(|| recorded_base(record.as_ref(), path)),
    };
    let existing = if options.force || record.is_some() {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    Ok(Plan {
        size,
        target_name,
        identity,
        _lock,
        existing,
        resume,
        base,
    })
}

impl Plan {
    /// Says what is resumed; otherwise clears another restore's progress before the
    /// target changes: were this one killed before its first checkpoint, the other's
    /// rerun would take what this one wrote for its own.
    pub(super) fn announce(&self, id: &SnapshotId, state: Option<&Path>) -> Result<()> {
        match (&self.resume, state) {
            (Some(p), _) => tracing::info!(
                "resuming the interrupted restore of {id} onto {} at block {}",
                self.target_name,
                p.done_below
            ),
            (None, Some(dir)) => clear_restore_progress(dir, &self.target_name)?,
            (None, None) => {}
        }
        Ok(())
    }

    /// The progress this restore saves at its checkpoints.
    pub(super) fn progress(&self, id: &SnapshotId) -> RestoreProgress {
        RestoreProgress {
            store: self.identity.clone(),
            target: self.target_name.clone(),
            snapshot_id: id.to_string(),
            from: self.base.as_ref().map(|b| b.to_string()),
            target_bytes: self.size,
            done_below: 0,
        }
    }

    /// The record saved once the target holds the snapshot.
    pub(super) fn record(&self, id: &SnapshotId) -> RestoreRecord {
        RestoreRecord {
            store: self.identity.clone(),
            target: self.target_name.clone(),
            snapshot_id: id.to_string(),
            target_bytes: self.size,
        }
    }
}

/// Whether an interrupted restore is what this one asks for (`--full`, `--from`).
fn resumable_as_asked(p: &RestoreProgress, options: &RestoreOptions) -> bool {
    match (&options.from, options.full) {
        (_, true) => p.from.is_none(),
        (Some(base), false) => p.from.as_deref() == Some(base.as_str()),
        (None, false) => true,
    }
}

/// The snapshot the record says the target holds, if the target still looks like it.
fn recorded_base(record: Option<&RestoreRecord>, path: &Path) -> Option<SnapshotId> {
    let record = record?;
    let meta = std::fs::metadata(path).ok()?;
    let plausible = !meta.is_file() || meta.len() == record.target_bytes;
    plausible.then(|| record.snapshot_id.parse().ok()).flatten()
}

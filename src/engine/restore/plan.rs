//! Planning a restore: everything decided before the target changes. Take the
//! target's lock, find what an interrupted restore left and what the target holds,
//! and choose the base of an incremental restore. When the lock is free, the first
//! listing is asked for beside the snapshot's description ([`Ahead`]).

use super::RestoreOptions;
use crate::engine::pages::{BlockLister, ChangedLister};
use crate::engine::state::{
    clear_restore_progress, lock_target, read_restore_progress, read_restore_record, target_name,
    RestoreProgress, RestoreRecord,
};
use crate::engine::target::Existing;
use crate::engine::{checked_size, completed_snapshot, Error, Result};
use crate::store::StoreResult;
use crate::store::{BlockPage, ChangedBlockPage, SnapshotId, SnapshotInfo, SnapshotStore};
use crate::sys::LockWait;
use std::fs::File;
use std::path::Path;

/// What a restore decides before the target changes.
pub(super) struct Plan {
    /// Bytes the restore produces.
    pub size: u64,
    pub target_name: String,
    pub identity: String,
    /// Held for the whole restore: one restore onto a target at a time.
    _lock: Option<File>,
    /// What a full restore does with a file already there.
    pub existing: Existing,
    /// The interrupted restore of the same snapshot this one continues.
    pub resume: Option<RestoreProgress>,
    /// The snapshot the target holds: only what differs from it is changed.
    pub base: Option<SnapshotId>,
}

/// The plan, and what was asked for ahead of it when the plan lists that.
pub(super) async fn plan(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    path: &Path,
    options: &RestoreOptions,
) -> Result<(Plan, Option<Ahead>)> {
    let target = TargetKey {
        name: target_name(path),
        path,
        identity: store.identity(),
    };
    let locked = lock_and_describe(store, id, &target, options).await?;
    let size = checked_size(&locked.info)?;
    let state = locked.state.of_size(size);
    let base = state.base(options, path);
    let existing = if options.force || state.record.is_some() {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    let ahead = locked.ahead.filter(|a| a.lists_from() == base.as_ref());
    let plan = Plan {
        size,
        target_name: target.name,
        identity: target.identity,
        _lock: locked.lock,
        existing,
        resume: state.resume,
        base,
    };
    Ok((plan, ahead))
}

/// The target as the state directory knows it.
struct TargetKey<'a> {
    name: String,
    path: &'a Path,
    /// The store's identity: records and progress are a store's.
    identity: String,
}

/// The lock taken, the snapshot described, the state read under the lock, and what
/// was asked for ahead.
struct Locked {
    lock: Option<File>,
    info: SnapshotInfo,
    state: State,
    ahead: Option<Ahead>,
}

async fn lock_and_describe(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    target: &TargetKey<'_>,
    options: &RestoreOptions,
) -> Result<Locked> {
    let read = || State::read(options, &target.identity, &target.name, id);
    match lock_at_once(options, &target.name).await? {
        // The state read under the lock says what will be listed: its first page goes
        // beside the description, and a description that fails does not wait for it.
        TargetLock::Ours(lock) => {
            let state = read();
            let likely = state.base(options, target.path);
            let fetch = async { Ok(Ahead::fetch(store, id, likely).await) };
            let (info, ahead) = tokio::try_join!(completed_snapshot(store, id), fetch)?;
            let ahead = Some(ahead);
            Ok(Locked {
                lock,
                info,
                state,
                ahead,
            })
        }
        // Behind another restore: a wrong id is told before the wait, and after the
        // wait a round trip is nothing to save.
        TargetLock::Theirs => {
            let info = completed_snapshot(store, id).await?;
            let lock = Some(lock(options, &target.name, options.lock_wait).await?);
            let (state, ahead) = (read(), None);
            Ok(Locked {
                lock,
                info,
                state,
                ahead,
            })
        }
    }
}

/// The target's lock as it stands: taken (`None` without a state directory, where
/// there is none), or held by another restore.
enum TargetLock {
    Ours(Option<File>),
    Theirs,
}

/// Takes the target's lock if it is free now.
async fn lock_at_once(options: &RestoreOptions, target_name: &str) -> Result<TargetLock> {
    if options.state_dir.is_none() {
        return Ok(TargetLock::Ours(None));
    }
    match lock(options, target_name, LockWait::Fail).await {
        Ok(file) => Ok(TargetLock::Ours(Some(file))),
        Err(Error::Busy { .. }) => Ok(TargetLock::Theirs),
        Err(e) => Err(e),
    }
}

/// Takes the lock on the target in the state directory, which the options must name.
async fn lock(options: &RestoreOptions, target_name: &str, wait: LockWait) -> Result<File> {
    let dir = options.state_dir.as_deref().expect("a state directory");
    lock_target(dir, target_name, wait, &options.stop).await
}

/// What a restore asks for beside the snapshot's description: the first page of the
/// listing its plan will make (and, for an incremental restore, the base's
/// description). Over a WAN that is a round trip less before the first block, two for
/// an incremental restore. Dropped when the plan lists something else.
pub(super) enum Ahead {
    Full(StoreResult<BlockPage>),
    Changed {
        base: SnapshotId,
        page: StoreResult<ChangedBlockPage>,
        /// Boxed: a description is large beside the other variant.
        described: Box<Result<SnapshotInfo>>,
    },
}

impl Ahead {
    async fn fetch(store: &dyn SnapshotStore, id: &SnapshotId, base: Option<SnapshotId>) -> Ahead {
        let Some(base) = base else {
            return Ahead::Full(BlockLister::first_page(store, id).await);
        };
        let (page, described) = tokio::join!(
            ChangedLister::first_page(store, Some(&base), id),
            completed_snapshot(store, &base)
        );
        Ahead::Changed {
            base,
            page,
            described: Box::new(described),
        }
    }

    /// The base of the listing asked for (`None`: the snapshot's own, in full).
    fn lists_from(&self) -> Option<&SnapshotId> {
        match self {
            Ahead::Full(_) => None,
            Ahead::Changed { base, .. } => Some(base),
        }
    }

    /// The first page of a full listing, if that is what this is.
    pub(super) fn into_full(self) -> Option<StoreResult<BlockPage>> {
        match self {
            Ahead::Full(page) => Some(page),
            Ahead::Changed { .. } => None,
        }
    }

    /// The first page of changes and the base's description, if that is what this is.
    pub(super) fn into_changed(
        self,
    ) -> Option<(StoreResult<ChangedBlockPage>, Result<SnapshotInfo>)> {
        match self {
            Ahead::Full(_) => None,
            Ahead::Changed {
                page, described, ..
            } => Some((page, *described)),
        }
    }
}

/// What the state directory says of the target: the snapshot it holds (its record),
/// and the interrupted restore of `id` this one may continue.
struct State {
    record: Option<RestoreRecord>,
    resume: Option<RestoreProgress>,
}

impl State {
    fn read(options: &RestoreOptions, identity: &str, target_name: &str, id: &SnapshotId) -> State {
        let Some(dir) = options.state_dir.as_deref() else {
            return State {
                record: None,
                resume: None,
            };
        };
        let resume = read_restore_progress(dir, target_name)
            .filter(|p| p.store == identity && p.snapshot_id == id.as_str())
            .filter(|p| resumable_as_asked(p, options));
        State {
            record: read_restore_record(dir, identity, target_name),
            resume,
        }
    }

    /// The state once the snapshot's size is known: an interrupted restore of another
    /// size is not continued.
    fn of_size(mut self, size: u64) -> State {
        self.resume = self.resume.filter(|p| p.target_bytes == size);
        self
    }

    /// The base of an incremental restore, or `None` for a full one.
    fn base(&self, options: &RestoreOptions, path: &Path) -> Option<SnapshotId> {
        match &self.resume {
            Some(p) => p.from.as_ref().and_then(|f| f.parse().ok()),
            None if options.full => None,
            None => options
                .from
                .clone()
                .or_else(|| recorded_base(self.record.as_ref(), path)),
        }
    }
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

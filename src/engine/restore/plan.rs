//! Planning a restore: everything decided before the target changes. Take the
//! target's lock, find what an interrupted restore left and what the target holds,
//! and choose the base of an incremental restore. Its first listing is asked for
//! beside the snapshot's description, on the state's word before the lock ([`Ahead`]).

use super::RestoreOptions;
use crate::engine::pages::{BlockLister, ChangedLister};
use crate::engine::state::{
    clear_restore_progress, lock_target, read_restore_progress, read_restore_record, target_name,
    RestoreProgress, RestoreRecord,
};
use crate::engine::target::Existing;
use crate::engine::{checked_size, completed_snapshot, Result};
use crate::store::StoreResult;
use crate::store::{BlockPage, ChangedBlockPage, SnapshotId, SnapshotInfo, SnapshotStore};
use std::path::Path;
use std::time::{Duration, SystemTime};

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
    /// What was asked for ahead of the plan, when the plan lists it.
    pub ahead: Option<Ahead>,
}

pub(super) async fn plan(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    path: &Path,
    options: &RestoreOptions,
) -> Result<Plan> {
    let target_name = target_name(path);
    let identity = store.identity();
    // What the state says before the lock is only a guess at what will be listed: it
    // is read again under the lock.
    let likely = State::read(options, &identity, &target_name, id, None).base(options, path);
    let (described, ahead) = tokio::join!(
        completed_snapshot(store, id),
        Ahead::fetch(store, id, likely)
    );
    let size = checked_size(&described?)?;
    let _lock = match options.state_dir.as_deref() {
        Some(d) => Some(lock_target(d, &target_name, options.lock_wait, &options.stop).await?),
        None => None,
    };
    let state = State::read(options, &identity, &target_name, id, Some(size));
    let base = state.base(options, path);
    let existing = if options.force || state.record.is_some() {
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
        resume: state.resume,
        ahead: Some(ahead).filter(|a| a.serves(base.as_ref())),
        base,
    })
}

/// What a restore asks for beside the snapshot's description, before its plan is
/// made: the first page of the listing the target's state says it will make (and, for
/// an incremental restore, the base's description). Over a WAN that is a round trip
/// less before the first block. Dropped when the plan lists something else.
pub(super) enum Ahead {
    Full(StoreResult<BlockPage>),
    Changed {
        base: SnapshotId,
        page: StoreResult<ChangedBlockPage>,
        /// Boxed: a description is large beside the other variant.
        described: Box<Result<SnapshotInfo>>,
    },
}

/// Tokens from a page asked for ahead are used only while they have this long left (a
/// lock held by another restore may have kept this one waiting since).
const AHEAD_EXPIRY_MARGIN: Duration = Duration::from_secs(600);

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

    /// Whether this is what a restore from `base` (in full: `None`) lists first, with
    /// tokens fresh enough to use.
    fn serves(&self, base: Option<&SnapshotId>) -> bool {
        let (listed_from, expiry) = match self {
            Ahead::Full(page) => (None, page.as_ref().ok().map(|p| p.expiry_time)),
            Ahead::Changed { base, page, .. } => {
                (Some(base), page.as_ref().ok().map(|p| p.expiry_time))
            }
        };
        // A failure is passed on as the listing's own, where it would have come.
        let fresh = expiry.is_none_or(|at| at > SystemTime::now() + AHEAD_EXPIRY_MARGIN);
        listed_from == base && fresh
    }
}

/// What the state directory says of the target: the snapshot it holds (its record),
/// and the interrupted restore of `id` this one may continue.
struct State {
    record: Option<RestoreRecord>,
    resume: Option<RestoreProgress>,
}

impl State {
    /// Reads the state; `size`, once known, must be the interrupted restore's too.
    fn read(
        options: &RestoreOptions,
        identity: &str,
        target_name: &str,
        id: &SnapshotId,
        size: Option<u64>,
    ) -> State {
        let Some(dir) = options.state_dir.as_deref() else {
            return State {
                record: None,
                resume: None,
            };
        };
        let resume = read_restore_progress(dir, target_name)
            .filter(|p| p.store == identity && p.snapshot_id == id.as_str())
            .filter(|p| size.is_none_or(|size| p.target_bytes == size))
            .filter(|p| resumable_as_asked(p, options));
        State {
            record: read_restore_record(dir, identity, target_name),
            resume,
        }
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

//! Planning a copy: which snapshots to copy, in which order, onto which parents, and
//! what an interrupted copy left. Nothing is written to the target here but what
//! settling an interrupted run's journal writes (a completion it had sent is finished).

use super::{CopySelection, COPIED_FROM_TAG};
use crate::engine::backup::baseline::ParentChoice;
use crate::engine::backup::resume::{give_up, take_over, Left};
use crate::engine::state::upload_journal_path;
use crate::engine::{described_completed, Error, Result, SOURCE_PATH_TAG};
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStatus, SnapshotStore, StoreError};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One snapshot of the source, in the order the copy takes them (parents first).
pub(super) struct Step {
    pub source: SnapshotInfo,
    /// Its parent in the source, if that is still there (and so copied before it).
    pub parent: Option<SnapshotId>,
    /// Its completed copy on the target, found by `ebsnap:copied-from`.
    pub existing: Option<SnapshotInfo>,
    /// Its journal: what names the copy in local state, and where it lives.
    pub name: String,
    pub journal_path: Option<std::path::PathBuf>,
    /// What an interrupted copy of it left: a pending snapshot or a start in doubt.
    pub left: Option<Left>,
}

/// The snapshots to copy, oldest ancestors first, with what the target holds of them.
pub(super) async fn plan(
    from: &dyn SnapshotStore,
    to: &dyn SnapshotStore,
    selection: &CopySelection,
    state_dir: Option<&Path>,
) -> Result<Vec<Step>> {
    let wanted = wanted(from, selection).await?;
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    for snapshot in wanted {
        for (source, parent) in lineage(from, snapshot).await? {
            if seen.insert(source.id.clone()) {
                steps.push(step(from, to, source, parent, state_dir));
            }
        }
    }
    // Journals first: settling one may complete a copy, which the listing then finds.
    for step in &mut steps {
        step.left = match &step.journal_path {
            Some(path) => take_over(to, path, &ParentChoice::Auto, &step.name).await?,
            None => None,
        };
    }
    let mut copies = copies_on(to).await?;
    for step in &mut steps {
        step.existing = copies.remove(&step.source.id);
        if step.existing.is_some() {
            if let (Some(left), Some(path)) = (step.left.take(), &step.journal_path) {
                drop_left(to, left, &step.source.id, path).await;
            }
        }
    }
    Ok(steps)
}

fn step(
    from: &dyn SnapshotStore,
    to: &dyn SnapshotStore,
    source: SnapshotInfo,
    parent: Option<SnapshotId>,
    state_dir: Option<&Path>,
) -> Step {
    let name = copy_name(from, &source.id);
    let journal_path = state_dir.map(|dir| upload_journal_path(dir, &to.identity(), &name));
    Step {
        source,
        parent,
        existing: None,
        name,
        journal_path,
        left: None,
    }
}

/// What a copy of `id` is called in local state (its journal's source): the snapshot
/// and the store it is in.
pub(super) fn copy_name(from: &dyn SnapshotStore, id: &SnapshotId) -> String {
    format!("copy of {id} from {}", from.identity())
}

/// The completed snapshots the selection names.
async fn wanted(from: &dyn SnapshotStore, selection: &CopySelection) -> Result<Vec<SnapshotInfo>> {
    match selection {
        CopySelection::Snapshots(ids) => {
            let mut wanted = Vec::with_capacity(ids.len());
            for id in ids {
                wanted.push(described_completed(from, id).await?);
            }
            Ok(wanted)
        }
        CopySelection::Source(name) => {
            let all = from.list_snapshots().await?;
            let of_source: Vec<SnapshotInfo> = all
                .into_iter()
                .filter(|s| {
                    s.status == SnapshotStatus::Completed && s.tag(SOURCE_PATH_TAG) == Some(name)
                })
                .collect();
            if of_source.is_empty() {
                return Err(Error::NothingToCopy {
                    source_name: name.clone(),
                });
            }
            Ok(of_source)
        }
    }
}

/// `snapshot` and its ancestors still in the store, oldest first, each with its parent
/// there. A parent that was deleted ends the walk: the oldest one still there starts
/// the copy's lineage.
async fn lineage(
    from: &dyn SnapshotStore,
    snapshot: SnapshotInfo,
) -> Result<Vec<(SnapshotInfo, Option<SnapshotId>)>> {
    let mut chain = vec![snapshot];
    let mut ids = HashSet::new();
    while let Some(parent) = chain.last().and_then(|s| s.parent.clone()) {
        if !ids.insert(parent.clone()) {
            break; // a store that reports a cycle: it ends here
        }
        match from.describe_snapshot(&parent).await {
            Ok(info) if info.status == SnapshotStatus::Completed => chain.push(info),
            Ok(_) | Err(StoreError::NotFound { .. }) => break,
            Err(e) => return Err(Error::store(&parent)(e)),
        }
    }
    chain.reverse();
    let mut parent = None;
    Ok(chain
        .into_iter()
        .map(|s| {
            let this = (s.clone(), parent.take());
            parent = Some(s.id);
            this
        })
        .collect())
}

/// The target's completed copies, by the snapshot they copy.
async fn copies_on(to: &dyn SnapshotStore) -> Result<HashMap<SnapshotId, SnapshotInfo>> {
    let all = to.list_snapshots().await?;
    Ok(all
        .into_iter()
        .filter(|s| s.status == SnapshotStatus::Completed)
        .filter_map(|s| Some((s.tag(COPIED_FROM_TAG)?.parse().ok()?, s)))
        .collect())
}

/// Gives up what an interrupted copy left of a snapshot that has a completed copy
/// after all (another run made it).
async fn drop_left(to: &dyn SnapshotStore, left: Left, id: &SnapshotId, path: &Path) {
    tracing::warn!("{id} has a completed copy: not resuming the interrupted copy of it");
    match left {
        Left::Pending(journal) => give_up(to, journal).await,
        Left::StartInDoubt { .. } => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!("could not remove {}: {e}", path.display());
            }
        }
    }
}

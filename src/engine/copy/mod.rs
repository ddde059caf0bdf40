//! Copy: snapshot chains from one store into another (a local store into EBS, EBS
//! into a local store), with their lineage kept.
//!
//! Plan first ([`plan`]): the snapshots asked for and their ancestors still in the
//! source, oldest first; what the target holds of them already (a completed snapshot
//! whose `ebsnap:copied-from` tag names the original); what an interrupted copy left.
//! Then apply, one snapshot at a time ([`snapshot`]): the copy of a snapshot is started
//! on the copy of its parent and receives only ListChangedBlocks(parent, snapshot): the
//! changed blocks, and zeros where the snapshot no longer holds data. The first
//! snapshot of a lineage sends its data blocks (every block, zeros too, into an
//! encrypted target). Each block is checked against the source's checksum, which goes
//! with it; CompleteSnapshot checks the count and the LINEAR aggregate.
//!
//! The copy's start, puts, journal and completion are the backup's machinery: an
//! interrupted copy keeps its pending snapshot, and the same command resumes it,
//! putting only what the journal does not record.

mod plan;
mod send;
mod snapshot;

use super::state::lock_copy;
use super::{Progress, Result, Stop};
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStore};
use crate::sys::LockWait;
use snapshot::{copy_snapshot, Stores};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Tag on a copy naming the snapshot it copies: how a rerun finds what is there.
pub const COPIED_FROM_TAG: &str = "ebsnap:copied-from";

/// What to copy.
#[derive(Clone, Debug)]
pub enum CopySelection {
    /// These snapshots, each with its ancestors still in the source.
    Snapshots(Vec<SnapshotId>),
    /// Every completed snapshot of the source with this `ebsnap:source` (its lineage).
    Source(String),
}

#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Block requests in flight on each side, at most (the flows find how many).
    pub workers: usize,
    /// Encrypt the copies that start a lineage on the target (EBS); their children
    /// inherit it. A copy of an encrypted snapshot is encrypted anyway.
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    /// Where the journals of unfinished copies live (`$XDG_STATE_HOME/ebsnap`); `None`:
    /// an interrupted copy cannot be resumed.
    pub state_dir: Option<PathBuf>,
    /// What to do when another copy between the same stores runs.
    pub lock_wait: LockWait,
    /// Asked to stop (a signal): the copy stops early and can be resumed.
    pub stop: Stop,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            workers: crate::engine::DEFAULT_WORKERS,
            encrypted: false,
            kms_key_arn: None,
            state_dir: None,
            lock_wait: LockWait::Wait,
            stop: Stop::default(),
        }
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// The snapshots copied by this run, in the order they were.
    pub copied: Vec<CopiedSnapshot>,
    /// The snapshots whose copy was there already.
    pub skipped: Vec<SkippedSnapshot>,
    pub seconds: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CopiedSnapshot {
    /// The original, in the source.
    pub from: String,
    /// Its copy, in the target.
    pub to: String,
    /// The copy's parent in the target (the copy of the original's parent).
    pub parent: Option<String>,
    /// The original's parent in the source.
    pub from_parent: Option<String>,
    /// Blocks put by this run, blocks of zeros included.
    pub blocks_copied: u64,
    pub bytes_copied: u64,
    pub zero_blocks_copied: u64,
    /// This run continued the pending copy of an interrupted one.
    pub resumed: bool,
    /// Blocks the interrupted run had put, not sent again.
    pub blocks_resumed: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SkippedSnapshot {
    pub from: String,
    /// The copy already in the target.
    pub to: String,
}

/// Copies what `selection` names from `from` into `to`, each snapshot onto the copy of
/// its parent, skipping what is there already.
pub async fn copy(
    from: Arc<dyn SnapshotStore>,
    to: Arc<dyn SnapshotStore>,
    selection: &CopySelection,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Instant::now();
    let state_dir = options.state_dir.as_deref();
    let _lock = match state_dir {
        Some(dir) => Some(
            lock_copy(
                dir,
                &from.identity(),
                &to.identity(),
                options.lock_wait,
                &options.stop,
            )
            .await?,
        ),
        None => None,
    };
    let steps = plan::plan(&*from, &*to, selection, state_dir).await?;
    let stores = Stores { from, to };
    let mut report = CopyReport::default();
    // The copy of each original, those there before and those made now.
    let mut copies: HashMap<SnapshotId, SnapshotInfo> = HashMap::new();
    for mut step in steps {
        if let Some(existing) = step.existing.take() {
            report.skipped.push(SkippedSnapshot {
                from: step.source.id.to_string(),
                to: existing.id.to_string(),
            });
            copies.insert(step.source.id.clone(), existing);
            continue;
        }
        let original = step.source.id.clone();
        let parent = step.parent.as_ref().and_then(|p| copies.get(p)).cloned();
        let (done, copy) = copy_snapshot(&stores, step, parent.as_ref(), options, progress).await?;
        tracing::info!("copied {original} to {}", copy.id);
        report.copied.push(done);
        copies.insert(original, copy);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

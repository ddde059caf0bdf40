//! Restore: a completed snapshot becomes a file or a block device again.
//!
//! A full restore lists every block; an incremental one (`--from BASE`, or the
//! snapshot ebsnap last restored onto the target) lists only the blocks that differ
//! between BASE and the snapshot, fetches those that hold data and zeros those that no
//! longer do. Blocks are fetched concurrently; each is checked against its checksum
//! before it is written, so a damaged block stops the restore with an error naming the
//! snapshot and block, and a new file is never put in place.

mod checkpoints;
mod plan;
mod write;

use super::pages::ChangedLister;
use super::state::{
    clear_restore_progress, clear_restore_records, target_name, write_restore_record,
    RestoreProgress,
};
use super::target::{Existing, Target};
use super::{checked_size, completed_snapshot, Progress, Stop};
use crate::block::BlockIndex;
use crate::engine::{Error, Result};
use crate::store::ValidationReason;
use crate::store::{BlockPage, SnapshotId, SnapshotStore, StoreError, StoreResult};
use crate::sys::LockWait;
use checkpoints::Checkpoints;
use plan::{plan, Ahead, Plan};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use write::{write_all, write_changed};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Overwrite an existing file (full restore).
    pub force: bool,
    /// Blocks fetched at once, at most (the flow finds how many below that).
    pub workers: usize,
    /// The target holds this snapshot already: change only what differs.
    pub from: Option<SnapshotId>,
    /// Restore in full even if the target is known to hold an earlier snapshot.
    pub full: bool,
    /// Where restore records and progress live (`$XDG_STATE_HOME/ebsnap`); `None`:
    /// none kept (and an interrupted restore cannot be resumed).
    pub state_dir: Option<PathBuf>,
    /// What to do when another restore onto the same target runs.
    pub lock_wait: LockWait,
    /// Asked to stop (a signal): the restore stops early and can be resumed.
    pub stop: Stop,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            force: false,
            workers: crate::engine::DEFAULT_WORKERS,
            from: None,
            full: false,
            state_dir: None,
            lock_wait: LockWait::Wait,
            stop: Stop::default(),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot_id: String,
    pub target: String,
    pub target_bytes: u64,
    /// The snapshot the target held before, for an incremental restore.
    pub from_snapshot_id: Option<String>,
    /// Blocks fetched from the store.
    pub blocks_fetched: u64,
    /// Blocks written to the target (fetched ones; zero blocks of a new file are left
    /// as holes).
    pub blocks_written: u64,
    pub bytes_written: u64,
    /// Blocks made to read as zeros (a hole punched, or zeros written on a device).
    pub blocks_zeroed: u64,
    /// This run resumed an interrupted restore of the same snapshot, from this block
    /// on (the counts above are this run's).
    pub resumed_at_block: Option<u64>,
    pub seconds: f64,
    /// Of those, the block transfers': from the first get's start to the last block
    /// written.
    pub transfer_seconds: f64,
    /// Of those, the final fsync's: what durability costs once writeback has been
    /// started as the blocks landed.
    pub sync_seconds: f64,
}

#[derive(Default)]
struct Counts {
    fetched: u64,
    written: u64,
    bytes: u64,
    zeroed: u64,
    transfer_seconds: f64,
    sync_seconds: f64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.fetched += other.fetched;
        self.written += other.written;
        self.bytes += other.bytes;
        self.zeroed += other.zeroed;
        self.transfer_seconds += other.transfer_seconds;
        self.sync_seconds += other.sync_seconds;
    }
}

pub async fn restore(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    path: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let (plan, ahead) = plan(&*store, id, path, options).await?;
    let state = options.state_dir.as_deref();
    plan.announce(id, state)?;
    let job = Job {
        store: &store,
        id,
        path,
        size: plan.size,
        options,
        progress,
        state: state.map(|dir| (dir, plan.progress(id))),
        resume_at: plan.resume.as_ref().map(|p| p.done_below),
    };
    let (counts, from) = apply(&job, &plan, ahead).await?;
    if let Some(dir) = state {
        write_restore_record(dir, &plan.record(id))?;
    }
    Ok(RestoreReport {
        snapshot_id: id.to_string(),
        target: path.display().to_string(),
        target_bytes: plan.size,
        from_snapshot_id: from,
        blocks_fetched: counts.fetched,
        blocks_written: counts.written,
        bytes_written: counts.bytes,
        blocks_zeroed: counts.zeroed,
        resumed_at_block: job.resume_at,
        seconds: started.elapsed().as_secs_f64(),
        transfer_seconds: counts.transfer_seconds,
        sync_seconds: counts.sync_seconds,
    })
}

/// Restores from the plan's base, or in full; returns the counts and the base used.
async fn apply(
    job: &Job<'_>,
    plan: &Plan,
    ahead: Option<Ahead>,
) -> Result<(Counts, Option<String>)> {
    let Some(base) = &plan.base else {
        let first = ahead.and_then(Ahead::into_full);
        return Ok((job.full(plan.existing, first).await?, None));
    };
    match job.incremental(base, ahead).await {
        Ok(counts) => Ok((counts, Some(base.to_string()))),
        // Only a remembered base may silently give way to a full restore; one the user
        // named must work or fail.
        Err(e) if job.options.from.is_none() && base_unusable(&e) => {
            let target = &plan.target_name;
            tracing::warn!(
                "{target} cannot be brought forward from {base} ({e}): restoring in full"
            );
            Ok((job.full_instead(target).await?, None))
        }
        Err(e) => Err(e),
    }
}

/// Whether an incremental restore failed because its base cannot serve (deleted, or of
/// another lineage), before anything was written.
fn base_unusable(e: &Error) -> bool {
    let Some(store_error) = e.store_error() else {
        return false;
    };
    matches!(store_error, StoreError::NotFound { .. })
        || store_error.reason() == Some(ValidationReason::UnrelatedSnapshots)
}

/// One restore's inputs.
#[derive(Clone)]
struct Job<'a> {
    store: &'a Arc<dyn SnapshotStore>,
    id: &'a SnapshotId,
    path: &'a Path,
    size: u64,
    options: &'a RestoreOptions,
    progress: &'a dyn Progress,
    /// Where progress is saved, and what it says, when state is kept.
    state: Option<(&'a Path, RestoreProgress)>,
    /// Where an interrupted restore of the same snapshot stopped.
    resume_at: Option<u64>,
}

impl Job<'_> {
    /// `first`: the listing's first page, when it was asked for ahead.
    async fn full(
        &self,
        existing: Existing,
        first: Option<StoreResult<BlockPage>>,
    ) -> Result<Counts> {
        let (id, path) = (self.id, self.path);
        let target = match self.resume_at {
            Some(_) => Target::reopen(path, self.size, existing, id)?,
            None => Target::open(path, self.size, existing, id)?,
        };
        // A new file whose partial file is gone starts over; a device resumes in place.
        let start = match self.resume_at {
            Some(at) if target.reopened() || target.in_place() => at,
            _ => 0,
        };
        let target = Arc::new(target);
        self.forget()?;
        self.progress
            .start(&format!("restore {id} -> {}", path.display()), self.size);
        let mut checkpoints = self.checkpoints(&target, start);
        let result = write_all(
            self,
            target.clone(),
            first,
            BlockIndex(start),
            &mut checkpoints,
        )
        .await;
        self.progress.finish();
        self.end(target, result, checkpoints).await
    }

    /// A full restore in place of an incremental one whose base cannot serve.
    async fn full_instead(&self, target_name: &str) -> Result<Counts> {
        let state = self
            .state
            .clone()
            .map(|(d, p)| (d, RestoreProgress { from: None, ..p }));
        let fresh = Job {
            resume_at: None,
            state,
            ..self.clone()
        };
        // The incremental restore's progress says nothing of a full one.
        if let Some(dir) = self.options.state_dir.as_deref() {
            clear_restore_progress(dir, target_name)?;
        }
        fresh.full(Existing::Overwrite, None).await
    }

    /// `ahead`: the listing's first page and the base's description, when they were
    /// asked for ahead (those of another listing are not used).
    async fn incremental(&self, base: &SnapshotId, ahead: Option<Ahead>) -> Result<Counts> {
        let (store, id, path, size) = (self.store, self.id, self.path, self.size);
        let (page, described) = ahead.and_then(Ahead::into_changed).unzip();
        let mut pages = ChangedLister::new(&**store, Some(base), id).with_first(page);
        let described = async {
            match described {
                Some(described) => described,
                None => completed_snapshot(&**store, base).await,
            }
        };
        // The first page proves the base usable before the target is touched. Both
        // calls are reads: they go together, and the page's failure comes first.
        let (first, described) = tokio::join!(pages.next_page(), described);
        let first = first.map_err(Error::store(id))?;
        let base_size = checked_size(&described?)?;
        let target = Arc::new(Target::open_in_place(path, size, id)?);
        self.forget()?;
        // A device that held a smaller snapshot keeps old bytes past its end, where
        // neither snapshot has data and no list names a block: zero them. (A file was
        // extended with zeros already.) Cheap enough to do again on a resume.
        if target.is_device() && size > base_size {
            let grown = target.clone();
            tokio::task::spawn_blocking(move || grown.zero_range(base_size, size))
                .await
                .expect("zeroing panicked")?;
        }
        self.progress.start(
            &format!("restore {id} -> {} (from {base})", path.display()),
            size,
        );
        let start = self.resume_at.unwrap_or(0);
        let mut checkpoints = self.checkpoints(&target, start);
        let result = write_changed(
            self,
            target.clone(),
            first,
            pages,
            BlockIndex(start),
            &mut checkpoints,
        )
        .await;
        self.progress.finish();
        self.end(target, result, checkpoints).await
    }

    fn checkpoints(&self, target: &Arc<Target>, start: u64) -> Checkpoints<'_> {
        Checkpoints::new(target.clone(), self.state.clone(), start)
    }

    /// Finishes the target, or, when the restore stopped for a reason a rerun can get
    /// past, keeps what was written (saved up to the last checkpoint) for a resume.
    async fn end(
        &self,
        target: Arc<Target>,
        result: Result<Counts>,
        mut checkpoints: Checkpoints<'_>,
    ) -> Result<Counts> {
        let error = match result {
            Ok(counts) => {
                // The checkpoints hold the target too.
                drop(checkpoints);
                // Forgotten before the file is put in place: a crash in between then
                // costs a restore from the start, where the other order would leave a
                // record pointing at a partial file that is gone (the rerun would stop
                // at the finished target).
                if let Some((dir, p)) = &self.state {
                    clear_restore_progress(dir, &p.target)?;
                }
                let syncing = Instant::now();
                Arc::into_inner(target)
                    .expect("all writers finished")
                    .finish()?;
                let sync_seconds = syncing.elapsed().as_secs_f64();
                return Ok(Counts {
                    sync_seconds,
                    ..counts
                });
            }
            Err(e) => e,
        };
        let resumable = self.state.is_some()
            && (error.worth_resuming() || matches!(error, Error::Target { .. }));
        if resumable && checkpoints.save().await.is_ok() {
            target.keep_partial();
            return Err(Error::RestoreResumable {
                partial: target.written_path().to_owned(),
                source: Box::new(error),
            });
        }
        if let Some((dir, p)) = &self.state {
            let _ = clear_restore_progress(dir, &p.target);
        }
        Err(error)
    }

    /// Before a target changes, its record goes: an interrupted restore must never be
    /// taken for a finished one.
    fn forget(&self) -> Result<()> {
        match &self.options.state_dir {
            Some(dir) => clear_restore_records(dir, &target_name(self.path)),
            None => Ok(()),
        }
    }
}

//! Writing a restore's blocks: fetched concurrently (a place in the [`Flow`] each),
//! checked against their checksums, written in place or into the partial file, with
//! the checkpoints told what is done.

use super::checkpoints::Checkpoints;
use super::{Counts, Job};
use crate::block::BlockIndex;
use crate::engine::checked::checked;
use crate::engine::flow::{Flow, Pass};
use crate::engine::pages::{BlockLister, ChangedLister};
use crate::engine::stop::Draining;
use crate::engine::target::Target;
use crate::engine::{Error, Inconsistency, Result};
use crate::store::{BlockPage, BlockRef, BlockToken, ChangedBlock, SnapshotId, SnapshotStore};
use crate::store::{StoreResult, Transfer};
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinSet;

/// The tasks of one write loop: each starts once the flow has a place for it (at most
/// `workers` at once) and says which block it started at and what it did. What they did is
/// counted, and the checkpoints and progress are kept up to date as they go.
struct Tasks<'j, 'c, 'a> {
    job: &'j Job<'j>,
    checkpoints: &'c mut Checkpoints<'a>,
    flow: Arc<Flow>,
    running: JoinSet<(u64, Result<Counts>)>,
    counts: Counts,
}

impl<'j, 'c, 'a> Tasks<'j, 'c, 'a> {
    /// Tasks for a loop that starts writing at `start`.
    fn new(job: &'j Job<'j>, checkpoints: &'c mut Checkpoints<'a>, start: BlockIndex) -> Self {
        job.progress.set(start.offset().min(job.size));
        Tasks {
            job,
            checkpoints,
            flow: Flow::new(job.options.workers, job.store.pace(Transfer::Get)),
            running: JoinSet::new(),
            counts: Counts::default(),
        }
    }

    /// Starts `task`, which writes the blocks from `first` up to `next`, once the flow
    /// has a place (the task holds it, and measures its request if it makes one);
    /// stops early, with [`Error::Interrupted`], when a stop is asked. Then collects
    /// the tasks that finished, and saves a checkpoint when one is due.
    async fn spawn<T>(
        &mut self,
        first: BlockIndex,
        next: BlockIndex,
        task: impl FnOnce(Pass) -> T,
    ) -> Result<()>
    where
        T: Future<Output = Result<Counts>> + Send + 'static,
    {
        let stop = &self.job.options.stop;
        stop.check()?;
        // Places free up as requests end, which under `--limit-download` can be slow.
        let pass = tokio::select! {
            pass = self.flow.enter() => pass,
            e = stop.stopped() => return Err(e),
        };
        self.checkpoints.handed_out(first, next);
        let task = task(pass);
        self.running.spawn(async move { (first.0, task.await) });
        self.reap(false).await?;
        self.checkpoints.maybe_save().await?;
        self.job.progress.set(next.offset().min(self.job.size));
        Ok(())
    }

    /// Collects finished tasks (all of them with `wait`; once a stop is asked, for a
    /// grace period, and those left then are dropped), keeping the first failure.
    async fn reap(&mut self, wait: bool) -> Result<()> {
        let mut first_error = None;
        // Only a wait drains: the calls after each spawn collect what is done.
        let mut draining = wait.then(|| Draining::new(&self.job.options.stop));
        loop {
            let joined = match &mut draining {
                Some(draining) => draining.next(&mut self.running).await,
                None => self.running.try_join_next(),
            };
            let Some(joined) = joined else { break };
            let (first, done) = match joined {
                Ok(joined) => joined,
                // Dropped at a stop: not finished, so the checkpoints keep it to do.
                Err(e) if e.is_cancelled() => continue,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            match done {
                Ok(done) => {
                    self.counts.add(done);
                    self.checkpoints.finished(first);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if draining.as_ref().is_some_and(Draining::dropped) {
            // Never Ok with blocks unwritten: the target must not be finished.
            self.job.options.stop.check()?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Ends a write loop: every task finishes (on error or interruption too, so that
    /// the last checkpoint knows exactly what was written), then the first failure wins.
    async fn finish(mut self, looped: Result<()>) -> Result<Counts> {
        let drained = self.reap(true).await;
        looped.and(drained)?;
        self.job.progress.set(self.job.size);
        self.counts.transfer_seconds = self.flow.busy_seconds();
        Ok(self.counts)
    }
}

/// Lists the snapshot's blocks (from `first`, the first page, when it was asked for
/// ahead) and writes those from `start` on.
pub(super) async fn write_all(
    job: &Job<'_>,
    target: Arc<Target>,
    first: Option<StoreResult<BlockPage>>,
    start: BlockIndex,
    checkpoints: &mut Checkpoints<'_>,
) -> Result<Counts> {
    let (store, id) = (job.store, job.id);
    let end = BlockIndex(target.blocks());
    let mut next = start;
    let mut tasks = Tasks::new(job, checkpoints, start);
    let looped = async {
        let mut lister = BlockLister::new(&**store, id).with_first(first);
        while let Some(page) = lister.next_page().await.map_err(Error::store(id))? {
            // Blocks past the end are fetched too: they may only hold zeros.
            for block in page.into_iter().filter(|b| b.index >= start) {
                if block.index < next {
                    return Err(Error::Inconsistent {
                        snapshot: id.clone(),
                        what: Inconsistency::ListedOutOfOrder { index: block.index },
                    });
                }
                let gap = next.min(end)..block.index.min(end);
                let (store, id, task_target) = (store.clone(), id.clone(), target.clone());
                let first = next;
                next = block.index.next();
                tasks
                    .spawn(first, next, |pass| async move {
                        let mut done = zero_gap(&task_target, gap).await?;
                        let fetch = fetch_and_write(&*store, &id, block, task_target, pass);
                        done.add(fetch.await?);
                        Ok(done)
                    })
                    .await?;
            }
        }
        tasks.counts.add(zero_gap(&target, next..end).await?);
        tasks.checkpoints.handed_out(next, end);
        Ok(())
    }
    .await;
    tasks.finish(looped).await
}

/// Applies ListChangedBlocks(base, id): blocks with data in `id` are fetched and
/// written, blocks without are zeroed.
pub(super) async fn write_changed(
    job: &Job<'_>,
    target: Arc<Target>,
    first: Option<Vec<ChangedBlock>>,
    mut pages: ChangedLister<'_>,
    start: BlockIndex,
    checkpoints: &mut Checkpoints<'_>,
) -> Result<Counts> {
    let (store, id) = (job.store, job.id);
    let end = BlockIndex(target.blocks());
    let mut tasks = Tasks::new(job, checkpoints, start);
    let looped = async {
        let mut page = first;
        while let Some(blocks) = page {
            // Blocks past the end with data are fetched too: they may only hold zeros.
            let wanted =
                |b: &ChangedBlock| b.index >= start && (b.index < end || b.second_token.is_some());
            for changed in blocks.into_iter().filter(wanted) {
                let (store, id, task_target, index) =
                    (store.clone(), id.clone(), target.clone(), changed.index);
                let token: Option<BlockToken> = changed.second_token;
                tasks
                    .spawn(index, index.next(), |pass| async move {
                        match token {
                            Some(token) => {
                                let block = BlockRef { index, token };
                                fetch_and_write(&*store, &id, block, task_target, pass).await
                            }
                            None => zero_block(task_target, index).await,
                        }
                    })
                    .await?;
            }
            page = pages.next_page().await.map_err(Error::store(id))?;
        }
        tasks.checkpoints.handed_out(end, end);
        Ok(())
    }
    .await;
    tasks.finish(looped).await
}

/// Makes one block read as zeros, where the snapshot no longer has data.
async fn zero_block(target: Arc<Target>, index: BlockIndex) -> Result<Counts> {
    tokio::task::spawn_blocking(move || target.clear_blocks(index, index.next()))
        .await
        .expect("zeroing panicked")?;
    Ok(Counts {
        zeroed: 1,
        ..Counts::default()
    })
}

/// Zeros blocks the snapshot has no data for (only a device needs it).
async fn zero_gap(target: &Arc<Target>, gap: std::ops::Range<BlockIndex>) -> Result<Counts> {
    if !target.is_device() || gap.is_empty() {
        return Ok(Counts::default());
    }
    let target = target.clone();
    let blocks = gap.end.0 - gap.start.0;
    tokio::task::spawn_blocking(move || target.zero_blocks(gap.start, gap.end))
        .await
        .expect("zeroing panicked")?;
    Ok(Counts {
        zeroed: blocks,
        ..Counts::default()
    })
}

async fn fetch_and_write(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    block: BlockRef,
    target: Arc<Target>,
    mut pass: Pass,
) -> Result<Counts> {
    let index = block.index;
    let fetched = store
        .get_block(id, index, &block.token)
        .await
        .map_err(Error::block(id, index))?;
    // The request's latency, not the write's: the place is kept until written.
    pass.measure();
    let id = id.clone();
    tokio::task::spawn_blocking(move || {
        let block = checked(&id, index, fetched, target.size())?;
        let mut done = Counts {
            fetched: 1,
            ..Counts::default()
        };
        if target.bytes_of(index) == 0 {
            return Ok(done);
        }
        // The digest says whether it is zeros: no second pass over the data.
        if block.is_zero() && !target.is_device() {
            // A new file reads zeros where nothing is written; an existing one gets a hole.
            if target.in_place() {
                target.clear_blocks(index, index.next())?;
                done.zeroed = 1;
            }
            return Ok(done);
        }
        done.written = 1;
        done.bytes = target.write_block(index, block.data())?;
        Ok(done)
    })
    .await
    .expect("write task panicked")
}

//! Sending a backup's blocks: puts run concurrently (a place in the [`Flow`] each), and what
//! got through is recorded in the upload journal at checkpoints, once the store has made
//! it durable, so that an interrupted backup can be resumed without sending it again.

use super::journal::{Completion, UploadJournal};
use crate::block::{BlockIndex, Digest, HashedBlock};
use crate::engine::flow::Flow;
use crate::engine::stop::Draining;
use crate::engine::{Error, Result, Stop};
use crate::store::{SnapshotId, SnapshotStatus, SnapshotStore};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A checkpoint every half second, or after this many puts (512 MiB) if that comes
/// first: a crash costs at most that much sending again. Each checkpoint costs the
/// store a flush (the local store's fsyncs) and the journal two fsyncs: about a
/// millisecond here.
const CHECKPOINT_BLOCKS: usize = 1024;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// How far past the last put the journal's intent mark is raised (at checkpoints, in
/// the same write): a resumed backup writes up to this many blocks again that it might
/// otherwise skip.
const INTENT_STRIDE: u64 = 1024;

pub(crate) struct Uploader<'a> {
    store: Arc<dyn SnapshotStore>,
    id: SnapshotId,
    journal: Option<&'a mut UploadJournal>,
    put_end: u64,
    flow: Arc<Flow>,
    puts: JoinSet<(BlockIndex, Result<Digest>)>,
    /// Indexes of the puts sent and not yet reaped.
    in_flight: BTreeSet<u64>,
    /// Puts that succeeded and are not yet in the journal.
    unrecorded: Vec<(BlockIndex, Digest)>,
    /// One past the highest index sent.
    frontier: u64,
    /// The journal's settled mark when this run began: below it, the interrupted
    /// run's puts are all recorded (this run's own puts there are tracked as usual).
    settled_from: u64,
    last_checkpoint: Instant,
    /// Asked to stop: no put waits for a place then, and those in flight get a grace.
    stop: Stop,
    /// Puts that succeeded in this run.
    pub written: u64,
}

impl<'a> Uploader<'a> {
    pub fn new(
        store: Arc<dyn SnapshotStore>,
        id: SnapshotId,
        journal: Option<&'a mut UploadJournal>,
        put_end: u64,
        flow: Arc<Flow>,
        stop: Stop,
    ) -> Self {
        let settled_from = journal.as_deref().map_or(0, |j| j.header().settled_below);
        Uploader {
            store,
            id,
            journal,
            put_end,
            flow,
            puts: JoinSet::new(),
            in_flight: BTreeSet::new(),
            unrecorded: Vec::new(),
            frontier: 0,
            settled_from,
            last_checkpoint: Instant::now(),
            stop,
            written: 0,
        }
    }

    /// Puts in flight at most.
    pub fn workers(&self) -> usize {
        self.flow.max()
    }

    /// Seconds the puts took, from the first one's start to the last one's end.
    pub fn transfer_seconds(&self) -> f64 {
        self.flow.busy_seconds()
    }

    pub fn store_identity(&self) -> String {
        self.store.identity()
    }

    pub fn snapshot_id(&self) -> String {
        self.id.to_string()
    }

    /// Whether an interrupted run already put exactly this block at `index`.
    pub fn already_put(&self, index: BlockIndex, digest: &Digest) -> Result<bool> {
        Ok(self.recorded(index)?.as_ref() == Some(digest))
    }

    /// The digest the journal records for `index`, if a block was put there.
    pub fn recorded(&self, index: BlockIndex) -> Result<Option<Digest>> {
        let Some(journal) = self.journal.as_deref() else {
            return Ok(None);
        };
        journal
            .digest_at(index)
            .map_err(journal_error(journal.path()))
    }

    /// Sends one block, waiting for a place in the flow first (that wait is what bounds
    /// the blocks in flight). Fails with the first failed put seen so far.
    pub async fn put(&mut self, index: BlockIndex, block: HashedBlock) -> Result<()> {
        if let Some(journal) = self.journal.as_deref_mut() {
            let header = journal.header();
            let marked = if index.0 >= header.intent_below {
                journal.raise_intent(intent_mark(index.0, self.put_end))
            } else if index.0 < header.settled_below {
                // A block the interrupted run put is put again (with other content): its
                // record says the old content until the next checkpoint, so the record
                // stops being trusted first.
                journal.unsettle(index.0)
            } else {
                Ok(())
            };
            marked.map_err(journal_error(journal.path()))?;
        }
        // Places free up as puts end, which under `--limit-upload` can be slow.
        let pass = tokio::select! {
            pass = self.flow.enter() => pass,
            e = self.stop.stopped() => return Err(e),
        };
        self.in_flight.insert(index.0);
        self.frontier = index.0 + 1;
        let (store, id) = (self.store.clone(), self.id.clone());
        self.puts.spawn(async move {
            let digest = block.digest();
            let put = store.put_block(&id, index, block, digest).await;
            if put.is_ok() {
                pass.finished();
            }
            (
                index,
                put.map(|()| digest).map_err(Error::block(&id, index)),
            )
        });
        while let Some(finished) = self.puts.try_join_next() {
            self.reap(finished)?;
        }
        let due = self.unrecorded.len() >= CHECKPOINT_BLOCKS
            || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        if due {
            self.checkpoint().await?;
        }
        Ok(())
    }

    fn reap(
        &mut self,
        finished: std::result::Result<(BlockIndex, Result<Digest>), tokio::task::JoinError>,
    ) -> Result<()> {
        let (index, put) = match finished {
            Ok(finished) => finished,
            // Dropped at a stop: it stays in flight, so the settled mark stays below
            // it and a resumed run puts it again.
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        // A failed put stays in flight for good: an attempt may have landed with its
        // answer lost, so the settled mark stays below it and a resumed run puts it
        // again.
        let digest = put?;
        self.in_flight.remove(&index.0);
        self.written += 1;
        self.unrecorded.push((index, digest));
        Ok(())
    }

    /// Makes the puts so far durable in the store, then records them in the journal.
    async fn checkpoint(&mut self) -> Result<()> {
        self.last_checkpoint = Instant::now();
        let Some(journal) = self.journal.as_deref_mut() else {
            self.unrecorded.clear();
            return Ok(());
        };
        // Every put of this run below the lowest one still in flight has been reaped
        // (puts are sent in ascending order), so it is recorded by the end of this
        // checkpoint; below where the interrupted run had settled, so are its puts. (Not
        // this run's frontier alone: a resumed run stopped early would then discard the
        // interrupted run's settled records.)
        let passed = self.frontier.max(self.settled_from);
        let settled = self
            .in_flight
            .first()
            .map_or(passed, |&lowest| lowest.min(passed));
        if self.unrecorded.is_empty() && settled == journal.header().settled_below {
            return Ok(());
        }
        self.store
            .flush(&self.id)
            .await
            .map_err(Error::store(&self.id))?;
        journal
            .record(
                &self.unrecorded,
                settled,
                intent_mark(self.frontier, self.put_end),
            )
            .map_err(journal_error(journal.path()))?;
        self.unrecorded.clear();
        Ok(())
    }

    /// Lets every put in flight finish (once a stop is asked, for a grace period:
    /// those left then are dropped), records what got through, and returns the first
    /// failure, if any. Called on every way out, errors and interruptions too: what
    /// was sent is not sent again by a resumed run.
    ///
    /// With `completion`, every block was sent, and these are the completion's figures
    /// (`count` blocks of the snapshot's own, and their aggregate): the store is told
    /// them meanwhile, so that one that records them apart (EBS: CreateTags, a round
    /// trip) does so beside the last puts. Failed puts do not wait for that call.
    pub async fn finish(&mut self, completion: Option<(u64, Digest)>) -> Result<()> {
        let Some((count, aggregate)) = completion else {
            return self.drain().await;
        };
        let prepared = prepare_completion(self.store.clone(), self.id.clone(), count, aggregate);
        tokio::pin!(prepared);
        let drained = self.drain();
        tokio::pin!(drained);
        tokio::select! {
            result = &mut drained => {
                if result.is_ok() {
                    prepared.await;
                }
                result
            }
            () = &mut prepared => drained.await,
        }
    }

    /// [`finish`](Self::finish)'s puts: every one in flight finished and recorded.
    async fn drain(&mut self) -> Result<()> {
        let mut first_error = None;
        let mut draining = Draining::new(&self.stop);
        while let Some(finished) = draining.next(&mut self.puts).await {
            if let Err(e) = self.reap(finished) {
                first_error.get_or_insert(e);
            }
        }
        if draining.dropped() {
            // Never Ok with puts missing: the snapshot must not be completed.
            first_error.get_or_insert(self.stop.check().expect_err("dropped at a stop"));
        }
        let recorded = self.checkpoint().await;
        match first_error {
            Some(e) => Err(e),
            None => recorded,
        }
    }
}

/// Tells the store what completion will check. A failure only costs completion the
/// round trip this would have saved.
async fn prepare_completion(
    store: Arc<dyn SnapshotStore>,
    id: SnapshotId,
    count: u64,
    aggregate: Digest,
) {
    if let Err(e) = store.prepare_completion(&id, count, Some(aggregate)).await {
        tracing::debug!("{id}: completion figures not noted ahead ({e}); completion will");
    }
}

/// Completes snapshot `id`, with `count` blocks of its own and their `aggregate`, once
/// the journal (if any) says so: a run resumed after this only asks for completion.
pub(crate) async fn complete(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    journal: Option<&mut UploadJournal>,
    count: u64,
    aggregate: Digest,
) -> Result<SnapshotStatus> {
    if let Some(j) = journal {
        let completion = Completion {
            changed_blocks_count: count,
            aggregate: aggregate.to_base64(),
        };
        j.mark_completing(completion).map_err(|e| Error::State {
            path: j.path().to_owned(),
            source: e,
        })?;
    }
    store
        .complete_snapshot(id, count, Some(aggregate))
        .await
        .map_err(Error::store(id))
}

/// The intent mark to raise to when puts reach `index`: a stride ahead, short of
/// where the backup stops writing.
fn intent_mark(index: u64, put_end: u64) -> u64 {
    (index + INTENT_STRIDE).min(put_end.max(index + 1))
}

fn journal_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::State {
        path: path.to_owned(),
        source,
    }
}

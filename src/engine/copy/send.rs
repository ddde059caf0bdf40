//! Sending one snapshot's blocks into its copy: listed from the source in index order
//! (what changed since the parent, or every block of a lineage's first snapshot),
//! fetched concurrently (a place in the source's [`Flow`] each), checked against the
//! checksum the source holds, and put in index order through the backup's
//! [`Uploader`], whose journal lets an interrupted copy resume. The LINEAR aggregate is
//! fed as the blocks go, in index order.

use super::super::backup::baseline::Bitmap;
use super::super::backup::upload::Uploader;
use crate::block::{BlockIndex, Digest, HashedBlock, LinearAggregate};
use crate::engine::checked::checked_block;
use crate::engine::flow::Flow;
use crate::engine::pages::{BlockLister, ChangedLister};
use crate::engine::{Error, Inconsistency, Progress, Result, Stop};
use crate::store::{BlockToken, FetchedBlock, SnapshotId, SnapshotStore, StoreResult, Transfer};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What one snapshot's copy sends, and from where.
pub(super) struct Job<'a> {
    pub from: Arc<dyn SnapshotStore>,
    pub source: &'a SnapshotId,
    /// The source's parent, whose copy is the copy's parent: only the blocks that
    /// differ from it are sent. `None`: every block of the source.
    pub base: Option<&'a SnapshotId>,
    /// One past the last block of the volume.
    pub end: u64,
    /// On an encrypted target (where a block never written does not read as zeros),
    /// every block from here to `end` that the listing skips is written as zeros.
    pub zeros_from: Option<u64>,
    /// Blocks of zeros the listing yields need not be put (a new, unencrypted lineage
    /// reads zeros wherever nothing was put).
    pub skip_zero_data: bool,
    /// Bytes the progress counts to.
    pub size: u64,
    pub workers: usize,
    pub stop: &'a Stop,
}

/// What an interrupted copy had put: blocks it recorded, and the range where its last
/// puts may have landed unrecorded (put again).
#[derive(Default)]
pub(super) struct Recorded {
    pub put: Bitmap,
    pub doubt: Range<u64>,
}

/// What was sent: CompleteSnapshot's figures, and counts for the report.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub count: u64,
    pub aggregate: Digest,
    /// Blocks put by this run, zero blocks included.
    pub written: u64,
    /// Of those, blocks of zeros.
    pub zeros: u64,
    /// Blocks an interrupted run had put, not sent again.
    pub resumed: u64,
}

/// A block waiting its turn to be put, in index order.
enum Queued {
    /// Put by an interrupted run, with this digest: only counted.
    Recorded(BlockIndex, Digest),
    Zero(BlockIndex),
    Fetching(BlockIndex, JoinHandle<Result<HashedBlock>>),
}

impl Queued {
    fn ready(&self) -> bool {
        match self {
            Queued::Fetching(_, task) => task.is_finished(),
            Queued::Recorded(..) | Queued::Zero(_) => true,
        }
    }
}

struct Pipe<'p, 'u> {
    job: &'p Job<'p>,
    uploader: &'p mut Uploader<'u>,
    recorded: Recorded,
    fetches: Arc<Flow>,
    queue: VecDeque<Queued>,
    aggregate: LinearAggregate,
    /// The next index the listing may yield, and the next one zero-filling looks at.
    next: u64,
    sent: Sent,
}

/// Sends the job's blocks through `uploader` (which the caller finishes, whatever
/// happens); returns what CompleteSnapshot needs.
pub(super) async fn send(
    job: &Job<'_>,
    uploader: &mut Uploader<'_>,
    recorded: Recorded,
    progress: &dyn Progress,
) -> Result<Sent> {
    let mut pipe = Pipe {
        job,
        uploader,
        recorded,
        fetches: Flow::new(job.workers, job.from.pace(Transfer::Get)),
        queue: VecDeque::new(),
        aggregate: LinearAggregate::new(),
        next: 0,
        sent: Sent::default(),
    };
    let mut listing = Listing::new(&*job.from, job.base, job.source);
    while let Some(page) = listing
        .next_page()
        .await
        .map_err(Error::store(job.source))?
    {
        for (index, token) in page.into_iter().filter(|(i, _)| i.0 < job.end) {
            pipe.fill_zeros(index.0).await?;
            pipe.enqueue(index, token).await?;
            progress.set(index.offset().min(job.size));
        }
    }
    pipe.fill_zeros(job.end).await?;
    pipe.drain(0).await?;
    progress.set(job.size);
    let mut sent = pipe.sent;
    sent.count = pipe.aggregate.count();
    sent.aggregate = pipe.aggregate.finish();
    Ok(sent)
}

impl Pipe<'_, '_> {
    /// Queues zero blocks at the indexes up to `to` the listing skipped, where every
    /// zero block must be written.
    async fn fill_zeros(&mut self, to: u64) -> Result<()> {
        let Some(from) = self.job.zeros_from else {
            return Ok(());
        };
        for index in self.next.max(from)..to {
            self.enqueue(BlockIndex(index), None).await?;
        }
        Ok(())
    }

    /// Queues the block at `index` (`token`: fetched from the source; `None`: zeros),
    /// then puts what is ready, keeping at most a flow's worth waiting.
    async fn enqueue(&mut self, index: BlockIndex, token: Option<BlockToken>) -> Result<()> {
        self.job.stop.check()?;
        if index.0 < self.next {
            return Err(Error::Inconsistent {
                snapshot: self.job.source.clone(),
                what: Inconsistency::ListedOutOfOrder { index },
            });
        }
        self.next = index.0 + 1;
        let queued = match (self.recorded_at(index)?, token) {
            (Some(digest), _) => Queued::Recorded(index, digest),
            (None, None) => Queued::Zero(index),
            (None, Some(token)) => Queued::Fetching(index, self.fetch(index, token).await),
        };
        self.queue.push_back(queued);
        self.drain(self.fetches.max()).await
    }

    /// What the interrupted run put at `index`, where its record can be trusted.
    fn recorded_at(&self, index: BlockIndex) -> Result<Option<Digest>> {
        if !self.recorded.put.get(index) || self.recorded.doubt.contains(&index.0) {
            return Ok(None);
        }
        self.uploader.recorded(index)
    }

    /// Puts queued blocks in order, while more than `keep` wait or the first is ready.
    async fn drain(&mut self, keep: usize) -> Result<()> {
        while let Some(front) = self.queue.front() {
            if self.queue.len() <= keep && !front.ready() {
                break;
            }
            let queued = self.queue.pop_front().expect("a front");
            self.put(queued).await?;
        }
        Ok(())
    }

    async fn put(&mut self, queued: Queued) -> Result<()> {
        let (index, block) = match queued {
            Queued::Recorded(index, digest) => {
                self.sent.resumed += 1;
                return self.count(index, &digest);
            }
            Queued::Zero(index) => (index, HashedBlock::zero()),
            Queued::Fetching(index, task) => (index, task.await.expect("fetch panicked")?),
        };
        if block.is_zero() {
            if self.job.skip_zero_data {
                return Ok(());
            }
            self.sent.zeros += 1;
        }
        self.count(index, &block.digest())?;
        self.sent.written += 1;
        self.uploader.put(index, block).await
    }

    fn count(&mut self, index: BlockIndex, digest: &Digest) -> Result<()> {
        self.aggregate
            .push(index, digest)
            .map_err(|e| Error::Inconsistent {
                snapshot: self.job.source.clone(),
                what: Inconsistency::Aggregate(e),
            })
    }

    /// Starts fetching one block once the source's flow has a place for it.
    async fn fetch(&self, index: BlockIndex, token: BlockToken) -> JoinHandle<Result<HashedBlock>> {
        let pass = self.fetches.enter().await;
        let (store, id) = (self.job.from.clone(), self.job.source.clone());
        tokio::spawn(async move {
            let fetched = store
                .get_block(&id, index, &token)
                .await
                .map_err(Error::block(&id, index))?;
            // The block is held until put, but the source's request is done.
            pass.finished();
            checked(id, index, fetched).await
        })
    }
}

/// The fetched block, hashed (off the async threads) and checked against the checksum
/// the source holds for it: the checksum that travels with it to the target.
async fn checked(id: SnapshotId, index: BlockIndex, fetched: FetchedBlock) -> Result<HashedBlock> {
    tokio::task::spawn_blocking(move || checked_block(&id, index, fetched))
        .await
        .expect("hashing panicked")
}

/// The source's blocks to copy, page by page: ListChangedBlocks from the base (a block
/// the snapshot no longer holds comes without a token: zeros), or ListSnapshotBlocks.
enum Listing<'a> {
    All(BlockLister<'a>),
    Changed(ChangedLister<'a>),
}

type Page = Vec<(BlockIndex, Option<BlockToken>)>;

impl<'a> Listing<'a> {
    fn new(store: &'a dyn SnapshotStore, base: Option<&'a SnapshotId>, id: &'a SnapshotId) -> Self {
        match base {
            Some(base) => Listing::Changed(ChangedLister::new(store, Some(base), id)),
            None => Listing::All(BlockLister::new(store, id)),
        }
    }

    async fn next_page(&mut self) -> StoreResult<Option<Page>> {
        Ok(match self {
            Listing::All(pages) => pages
                .next_page()
                .await?
                .map(|p| p.into_iter().map(|b| (b.index, Some(b.token))).collect()),
            Listing::Changed(pages) => pages
                .next_page()
                .await?
                .map(|p| p.into_iter().map(|b| (b.index, b.second_token)).collect()),
        })
    }
}

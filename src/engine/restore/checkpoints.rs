//! Restore checkpoints: how far a restore got, saved now and then so that an
//! interrupted restore resumes from there.

use super::super::state::{write_restore_progress, RestoreProgress};
use super::super::target::Target;
use crate::block::BlockIndex;
use crate::engine::Result;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Saves how far a restore got, now and then: the target's data is made durable, then
/// the progress record says every block below the lowest one still being written is
/// done. Blocks are handed out in ascending order, so that is a true low-water mark.
pub(super) struct Checkpoints<'a> {
    target: Arc<Target>,
    state: Option<(&'a Path, RestoreProgress)>,
    /// The first block index each unfinished task writes (a task may zero a gap first).
    in_flight: BTreeSet<u64>,
    /// One past the highest block handed out.
    frontier: u64,
    since: usize,
    last: Instant,
}

/// A checkpoint after this many blocks (128 MiB) or this long, whichever comes first.
const CHECKPOINT_BLOCKS: usize = 256;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

impl<'a> Checkpoints<'a> {
    pub(super) fn new(
        target: Arc<Target>,
        state: Option<(&'a Path, RestoreProgress)>,
        start: u64,
    ) -> Self {
        let state = state.map(|(dir, p)| {
            (
                dir,
                RestoreProgress {
                    done_below: start,
                    ..p
                },
            )
        });
        Checkpoints {
            target,
            state,
            in_flight: BTreeSet::new(),
            frontier: start,
            since: 0,
            last: Instant::now(),
        }
    }

    pub(super) fn handed_out(&mut self, first: BlockIndex, next: BlockIndex) {
        self.in_flight.insert(first.0);
        self.frontier = self.frontier.max(next.0);
    }

    pub(super) fn finished(&mut self, first: u64) {
        self.in_flight.remove(&first);
        self.since += 1;
    }

    pub(super) async fn maybe_save(&mut self) -> Result<()> {
        if self.since >= CHECKPOINT_BLOCKS || self.last.elapsed() >= CHECKPOINT_EVERY {
            self.save().await?;
        }
        Ok(())
    }

    pub(super) async fn save(&mut self) -> Result<()> {
        self.since = 0;
        self.last = Instant::now();
        let done_below = self.in_flight.first().copied().unwrap_or(self.frontier);
        let Some((dir, progress)) = &mut self.state else {
            return Ok(());
        };
        if done_below <= progress.done_below {
            return Ok(());
        }
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || target.sync())
            .await
            .expect("sync panicked")?;
        progress.done_below = done_below;
        write_restore_progress(dir, progress)
    }
}

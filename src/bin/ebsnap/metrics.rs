//! Recording a run in the metrics file (`--metrics-file`, docs/metrics.md): its labels,
//! its outcome, and the source's snapshots in the store afterwards.

use crate::commands::Context;
use crate::exit::{Exit, Failure, Result};
use ebsnap::engine::SOURCE_PATH_TAG;
use ebsnap::metrics::{self, Labels, RunRecord};
use ebsnap::store::{SnapshotStatus, SnapshotStore};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// A run being timed, to be recorded when it ends; `None` without a metrics file.
pub struct Watch {
    file: PathBuf,
    job: String,
    store: String,
    started: Instant,
}

/// How a run ended, as the metrics file tells it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub bytes_written: u64,
    pub blocks_written: u64,
}

impl Outcome {
    /// A run that failed with `failure`: nothing written that counts.
    pub fn failed(failure: &Failure) -> Outcome {
        Outcome {
            exit: failure.exit(),
            bytes_written: 0,
            blocks_written: 0,
        }
    }
}

/// The name the engine records a source under (its `ebsnap:source` tag): a file's
/// absolute path, a block device's stable id (so the series follow the disk).
pub fn source_name(path: &Path) -> String {
    ebsnap::engine::SourceIdentity::resolve(path).key
}

impl Watch {
    /// Starts timing a run labelled `job`, if the command records runs.
    pub fn start(ctx: &Context, job: String) -> Option<Watch> {
        Watch::since(ctx, job, Instant::now())
    }

    /// A run labelled `job` that started at `started`, if the command records runs.
    pub fn since(ctx: &Context, job: String, started: Instant) -> Option<Watch> {
        Some(Watch {
            file: ctx.global.metrics_file.clone()?,
            job,
            store: ctx.location.to_string(),
            started,
        })
    }

    /// Records the run's `outcome` for `source`, counting the source's completed
    /// snapshots in `store` (when it was opened).
    pub async fn finish(
        self,
        source: &str,
        store: Option<&dyn SnapshotStore>,
        outcome: Outcome,
    ) -> Result<()> {
        let snapshots = match store {
            Some(store) => count_snapshots(store, source).await,
            None => None,
        };
        self.finish_counted(source, snapshots, outcome).await
    }

    /// Records the run's `outcome` for `source`, whose completed snapshots the caller
    /// counted already (`None`: the file keeps its last count).
    pub async fn finish_counted(
        self,
        source: &str,
        snapshots: Option<u64>,
        outcome: Outcome,
    ) -> Result<()> {
        let record = RunRecord {
            labels: Labels {
                job: self.job,
                source: source.to_owned(),
                store: self.store,
            },
            ended: SystemTime::now(),
            duration: self.started.elapsed(),
            exit_code: outcome.exit.code(),
            bytes_written: outcome.bytes_written,
            blocks_written: outcome.blocks_written,
            snapshots,
        };
        let file = self.file;
        // The lock may be waited for: not on the runtime's threads.
        tokio::task::spawn_blocking(move || metrics::record(&file, &record))
            .await
            .expect("the metrics writer does not panic")
            .map_err(|e| Failure::Refused {
                // On stderr alone: the command's own JSON report, if any, is the one
                // object on stdout.
                message: format!("the run is not recorded: metrics file {e}"),
                exit: Exit::FAILURE,
            })
    }
}

/// Records a run, if the command records runs (`watch`).
pub async fn record(
    watch: Option<Watch>,
    source: &str,
    store: Option<&dyn SnapshotStore>,
    outcome: Outcome,
) -> Result<()> {
    match watch {
        Some(watch) => watch.finish(source, store, outcome).await,
        None => Ok(()),
    }
}

/// Completed snapshots of `source` in `store`; `None` (the file keeps its last count)
/// if the store cannot list them now.
async fn count_snapshots(store: &dyn SnapshotStore, source: &str) -> Option<u64> {
    match store.list_snapshots().await {
        Ok(all) => Some(
            all.iter()
                .filter(|s| s.status == SnapshotStatus::Completed)
                .filter(|s| s.tag(SOURCE_PATH_TAG) == Some(source))
                .count() as u64,
        ),
        Err(e) => {
            tracing::warn!("metrics: cannot count the snapshots of {source}: {e}");
            None
        }
    }
}

/// A failed command's error, with its metrics error (if any) said first.
pub fn also(recorded: Result<()>, failure: Failure) -> Failure {
    if let Err(e) = recorded {
        eprintln!("ebsnap: error: {e}");
    }
    failure
}

/// Sets `ebsnap_snapshots` of the backups of `source` into the command's store to
/// `count` (what a retention run leaves), if the command records runs.
pub async fn update_snapshots(ctx: &Context, source: &str, count: u64) -> Result<()> {
    let Some(file) = ctx.global.metrics_file.clone() else {
        return Ok(());
    };
    let (store, source) = (ctx.location.to_string(), source.to_owned());
    tokio::task::spawn_blocking(move || metrics::update_snapshots(&file, &store, &source, count))
        .await
        .expect("the metrics writer does not panic")
        .map_err(|e| Failure::Refused {
            message: format!("the retention is not recorded: metrics file {e}"),
            exit: Exit::FAILURE,
        })
}

//! `ebsnap restore SNAPSHOT TARGET`: a snapshot back onto a file or block device.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Failure, Result};
use crate::metrics::{self, Outcome, Watch};
use crate::signals::stop_on_signals;
use ebsnap::engine::{self, RestoreOptions, RestoreReport, SOURCE_PATH_TAG};
use ebsnap::store::local::Access;
use ebsnap::store::{SnapshotId, SnapshotStore};
use indicatif::HumanBytes;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    snapshot: SnapshotArg,
    /// File or block device to write.
    target: PathBuf,
    /// Overwrite an existing file (full restore).
    #[arg(long)]
    force: bool,
    /// The target already holds this snapshot: fetch and write only what differs.
    #[arg(long, value_name = "BASE", conflicts_with = "full")]
    from: Option<SnapshotArg>,
    /// Restore in full, even onto a target ebsnap knows to hold an earlier snapshot.
    #[arg(long)]
    full: bool,
}

impl Args {
    /// The engine's options: these arguments, and the global flags.
    fn options(&self, ctx: &Context) -> RestoreOptions {
        RestoreOptions {
            force: self.force,
            workers: ctx.workers(),
            from: self.from.as_ref().map(|f| f.0.clone()),
            full: self.full,
            state_dir: ctx.state_dir(),
            lock_wait: ctx.lock_wait(),
            stop: stop_on_signals(),
        }
    }
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    // Labelled by its target, apart from the backups of the same path.
    let watch = Watch::start(
        ctx,
        format!("restore:{}", metrics::source_name(&args.target)),
    );
    let (store, result) = restore(&args, ctx).await;
    let source = match (&watch, &store) {
        (Some(_), Some(store)) => snapshot_source(&**store, &args.snapshot.0).await,
        _ => String::new(),
    };
    let outcome = match &result {
        Ok(r) => Outcome {
            exit: Exit::SUCCESS,
            bytes_written: r.bytes_written,
            blocks_written: r.blocks_written,
        },
        Err(failure) => Outcome::failed(failure),
    };
    let recorded = metrics::record(watch, &source, store.as_deref(), outcome).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => return Err(metrics::also(recorded, e)),
    };
    ctx.output.result(&text(&report), &report)?;
    recorded?;
    Ok(Exit::SUCCESS)
}

/// Opens the store and restores: the store (if it opened), and what the restore did.
async fn restore(
    args: &Args,
    ctx: &Context,
) -> (Option<Arc<dyn SnapshotStore>>, Result<RestoreReport>) {
    let store = match ctx.open_store(Access::Read).await {
        Ok(store) => store,
        Err(e) => return (None, Err(e)),
    };
    let options = args.options(ctx);
    let progress = ctx.progress();
    let result = engine::restore(
        store.clone(),
        &args.snapshot.0,
        &args.target,
        &options,
        &*progress,
    )
    .await;
    (Some(store), result.map_err(Failure::from))
}

/// The source a snapshot was taken of (its `ebsnap:source` tag): the restore's
/// `source` label. Empty (no label) if the snapshot cannot be described.
async fn snapshot_source(store: &dyn SnapshotStore, id: &SnapshotId) -> String {
    match store.describe_snapshot(id).await {
        Ok(info) => info.tag(SOURCE_PATH_TAG).unwrap_or_default().to_owned(),
        Err(_) => String::new(),
    }
}

fn text(r: &RestoreReport) -> String {
    let from = r
        .from_snapshot_id
        .as_ref()
        .map_or(String::new(), |f| format!(" (from {f})"));
    let from = match r.resumed_at_block {
        Some(at) => format!("{from} (resumed at block {at})"),
        None => from,
    };
    format!(
        "restored {} to {}{from}: {} blocks fetched, {} written ({}), {} zeroed, in {:.2}s\n",
        r.snapshot_id,
        r.target,
        r.blocks_fetched,
        r.blocks_written,
        HumanBytes(r.bytes_written),
        r.blocks_zeroed,
        r.seconds
    )
}

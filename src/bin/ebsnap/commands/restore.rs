//! `ebsnap restore SNAPSHOT TARGET`: a snapshot back onto a file or block device.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Result};
use crate::signals::stop_on_signals;
use ebsnap::engine::{self, RestoreOptions, RestoreReport};
use ebsnap::store::local::Access;
use indicatif::HumanBytes;
use std::path::PathBuf;

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
    let store = ctx.open_store(Access::Read).await?;
    let options = args.options(ctx);
    let progress = ctx.progress();
    let report =
        engine::restore(store, &args.snapshot.0, &args.target, &options, &*progress).await?;
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::SUCCESS)
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

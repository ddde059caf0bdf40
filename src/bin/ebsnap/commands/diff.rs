//! `ebsnap diff FIRST SECOND`: the blocks that differ between two snapshots.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Result};
use ebsnap::engine::{self, DiffReport};
use ebsnap::store::local::Access;

#[derive(Debug, clap::Args)]
pub struct Args {
    first: SnapshotArg,
    second: SnapshotArg,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let store = ctx.open_store(Access::Read).await?;
    let report = engine::diff(&*store, &args.first.0, &args.second.0).await?;
    // The indexes on stdout (for scripts), the count on stderr (for the reader).
    ctx.output.note(&format!(
        "{} blocks differ between {} and {}",
        report.changed_blocks, report.first_snapshot_id, report.second_snapshot_id
    ));
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::SUCCESS)
}

fn text(r: &DiffReport) -> String {
    r.changed_block_indexes
        .iter()
        .map(|i| format!("{i}\n"))
        .collect()
}

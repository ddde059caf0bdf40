//! `ebsnap verify SNAPSHOT [--against SOURCE]`: every block re-read and checked.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Result};
use ebsnap::engine::{self, VerifyReport};
use ebsnap::store::local::Access;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    snapshot: SnapshotArg,
    /// Also compare the snapshot with this disk or image.
    #[arg(long, value_name = "SOURCE")]
    against: Option<PathBuf>,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let store = ctx.open_store(Access::Read).await?;
    let (id, against) = (&args.snapshot.0, args.against.as_deref());
    let progress = ctx.progress();
    let report = engine::verify(store, id, against, ctx.workers(), &*progress).await?;
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::checked(report.ok))
}

fn text(r: &VerifyReport) -> String {
    let mut text = format!("{}: {} blocks checked", r.snapshot_id, r.blocks_checked);
    if !r.bad_blocks.is_empty() {
        text += &format!(", {} bad: blocks {:?}", r.bad_blocks.len(), r.bad_blocks);
    }
    match r.aggregate_ok {
        Some(true) => text += ", aggregate checksum matches",
        Some(false) => text += ", aggregate checksum DOES NOT match",
        None => {}
    }
    if let Some(against) = &r.against {
        text += &against_text(r, against);
    }
    text + if r.ok { ": OK\n" } else { ": FAILED\n" }
}

/// How the snapshot compares with the source it was verified against.
fn against_text(r: &VerifyReport, against: &str) -> String {
    let mut text = String::new();
    if r.size_matches == Some(false) {
        text += &format!(", size differs from {against}");
    }
    if r.different_blocks.is_empty() {
        text += &format!(", identical to {against}");
    } else {
        text += &format!(
            ", {} blocks differ from {against}: {:?}",
            r.different_blocks.len(),
            r.different_blocks
        );
    }
    text
}

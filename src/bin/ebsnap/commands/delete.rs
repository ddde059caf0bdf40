//! `ebsnap delete SNAPSHOT...`: snapshots deleted, their children kept whole.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Result};
use ebsnap::store::local::Access;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    snapshots: Vec<SnapshotArg>,
}

/// Deletes each snapshot named; one failure does not stop the others.
pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let store = ctx.open_store(Access::Write).await?;
    let (mut deleted, mut failed) = (Vec::new(), Vec::new());
    for s in args.snapshots {
        match store.delete_snapshot(&s.0).await {
            Ok(()) => deleted.push(s.0.to_string()),
            Err(e) => {
                eprintln!("ebsnap: error: cannot delete {}: {e}", s.0);
                failed.push(json!({ "snapshot_id": s.0.to_string(), "error": e.to_string() }));
            }
        }
    }
    let text: String = deleted.iter().map(|d| format!("deleted {d}\n")).collect();
    let value = json!({ "deleted": deleted, "failed": failed });
    ctx.output.result(&text, &value)?;
    Ok(if failed.is_empty() {
        Exit::SUCCESS
    } else {
        Exit::FAILURE
    })
}

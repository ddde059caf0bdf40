//! `ebsnap snapshots`: the store's snapshots, oldest first.

use super::show::snapshot_json;
use super::Context;
use crate::exit::{Exit, Result};
use crate::output::timestamp;
use ebsnap::engine::restored_size;
use ebsnap::store::local::Access;
use ebsnap::store::SnapshotInfo;
use indicatif::HumanBytes;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_: Args, ctx: &Context) -> Result<Exit> {
    let store = ctx.open_store(Access::Read).await?;
    let all = store.list_snapshots().await?;
    let value = json!({ "snapshots": all.iter().map(snapshot_json).collect::<Vec<_>>() });
    ctx.output.result(&table(&all), &value)?;
    Ok(Exit::SUCCESS)
}

fn table(snapshots: &[SnapshotInfo]) -> String {
    let mut out = format!(
        "{:<22}  {:<22}  {:<9}  {:>10}  {:<20}  {}\n",
        "ID", "PARENT", "STATUS", "SIZE", "STARTED", "DESCRIPTION"
    );
    for s in snapshots {
        let parent = s.parent.as_ref().map_or("-".to_owned(), |p| p.to_string());
        let size = HumanBytes(restored_size(s)).to_string();
        let description = s.description.as_deref().unwrap_or("");
        out += &format!(
            "{:<22}  {parent:<22}  {:<9}  {size:>10}  {:<20}  {description}\n",
            s.id.to_string(),
            s.status.as_str(),
            timestamp(s.start_time)
        );
    }
    out
}

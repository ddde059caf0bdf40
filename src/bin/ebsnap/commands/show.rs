//! `ebsnap show SNAPSHOT`: one snapshot's details.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Result};
use crate::output::timestamp;
use ebsnap::engine::{restored_size, SOURCE_PATH_TAG};
use ebsnap::store::local::Access;
use ebsnap::store::SnapshotInfo;
use indicatif::HumanBytes;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct Args {
    snapshot: SnapshotArg,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let store = ctx.open_store(Access::Read).await?;
    let id = args.snapshot.0;
    let info = store
        .describe_snapshot(&id)
        .await
        .map_err(ebsnap::Error::store(&id))?;
    ctx.output.result(&details(&info), &snapshot_json(&info))?;
    Ok(Exit::SUCCESS)
}

/// A snapshot as `show --json` prints it (and `snapshots --json`, each).
pub fn snapshot_json(s: &SnapshotInfo) -> Value {
    let tags: serde_json::Map<String, Value> = s
        .tags
        .iter()
        .map(|t| (t.key.clone(), Value::from(t.value.clone())))
        .collect();
    json!({
        "snapshot_id": s.id.to_string(),
        "parent_snapshot_id": s.parent.as_ref().map(|p| p.to_string()),
        "status": s.status.as_str(),
        "volume_size_gib": s.volume_size_gib,
        "source_bytes": restored_size(s),
        "start_time": timestamp(s.start_time),
        "description": s.description,
        "encrypted": s.encrypted,
        "changed_blocks_count": s.changed_blocks_count,
        "checksum": s.aggregate.map(|a| a.to_base64()),
        "tags": tags,
    })
}

fn details(s: &SnapshotInfo) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out += &format!("{k:<16} {v}\n");
    line("snapshot", s.id.to_string());
    line(
        "parent",
        s.parent.as_ref().map_or("-".into(), |p| p.to_string()),
    );
    line("status", s.status.to_string());
    line("volume size", format!("{} GiB", s.volume_size_gib));
    line(
        "source bytes",
        format!("{} ({})", restored_size(s), HumanBytes(restored_size(s))),
    );
    line("started", timestamp(s.start_time));
    line("description", s.description.clone().unwrap_or_default());
    line("source", s.tag(SOURCE_PATH_TAG).unwrap_or("-").to_owned());
    line(
        "blocks written",
        s.changed_blocks_count.map_or("-".into(), |c| c.to_string()),
    );
    line(
        "checksum",
        s.aggregate.map_or("-".into(), |a| a.to_base64()),
    );
    for t in s.tags.iter().filter(|t| !t.key.starts_with("ebsnap:")) {
        line("tag", format!("{}={}", t.key, t.value));
    }
    out
}

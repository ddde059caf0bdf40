//! What commands print: one JSON object with --json, readable text otherwise.

use ebsnap::engine::{restored_size, SOURCE_PATH_TAG};
use ebsnap::store::SnapshotInfo;
use indicatif::HumanBytes;
use serde_json::{json, Value};
use std::io::Write;
use std::time::SystemTime;

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

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

pub fn snapshot_table(snapshots: &[SnapshotInfo]) -> String {
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

pub fn snapshot_details(s: &SnapshotInfo) -> String {
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

/// Writes to stdout; a closed pipe (`ebsnap snapshots | head`) is not an error.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn print_json(value: &Value) -> std::io::Result<()> {
    print(&format!("{value}\n"))
}

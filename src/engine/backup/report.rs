//! What a backup reports (`--json`).

/// What a backup did (or, with `dry_run`, would do).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    /// `None` for a dry run.
    pub snapshot_id: Option<String>,
    pub parent_snapshot_id: Option<String>,
    pub volume_size_gib: u64,
    pub source_bytes: u64,
    pub blocks_total: u64,
    pub blocks_written: u64,
    /// Blocks of the source that hold only zeros.
    pub blocks_zero: u64,
    /// Blocks not written because the parent holds the same content.
    pub blocks_unchanged: u64,
    pub bytes_written: u64,
    pub checksum: String,
    pub dry_run: bool,
    /// This run continued the pending snapshot of an interrupted one.
    pub resumed: bool,
    /// Blocks an interrupted run had already put, found intact and not sent again
    /// (`blocks_written` counts only this run's puts).
    pub blocks_resumed: u64,
    pub seconds: f64,
    /// Of those, the block transfers': from the first put's start to the last one's end.
    pub transfer_seconds: f64,
    /// With `--freeze`: how long the filesystems were frozen (the read of the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_seconds: Option<f64>,
    /// The post-hook's exit code, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_hook_exit_code: Option<i32>,
}

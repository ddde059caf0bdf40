//! `ebsnap backup SOURCE`: a new snapshot of a disk or image.

use super::Context;
use crate::args::SnapshotArg;
use crate::consistency::ConsistencyArgs;
use crate::exit::{Exit, Failure, Result};
use crate::metrics::{self, Outcome, Watch};
use crate::signals::stop_on_signals;
use ebsnap::engine::{self, BackupOptions, BackupReport, ParentChoice};
use ebsnap::store::local::Access;
use ebsnap::store::{SnapshotStore, Tag};
use indicatif::HumanBytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// File or block device to back up.
    source: PathBuf,
    /// Description stored with the snapshot (at most 255 characters).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// A tag stored with the snapshot; repeat for more.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<Tag>,
    /// Encrypt the snapshot (EBS).
    #[arg(long)]
    encrypted: bool,
    /// KMS key (id or ARN) for an encrypted snapshot (EBS); implies --encrypted.
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,
    /// Parent snapshot (default: the source's last completed snapshot in this store).
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "full")]
    parent: Option<SnapshotArg>,
    /// Start a new lineage: no parent.
    #[arg(long)]
    full: bool,
    /// Report what would be written, without starting a snapshot.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    consistency: ConsistencyArgs,
}

pub fn parse_tag(s: &str) -> Result<Tag, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Tag::new(k, v)),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl Args {
    /// The engine's options: these arguments, and the global flags.
    fn options(&self, ctx: &Context) -> BackupOptions {
        BackupOptions {
            description: self.description.clone(),
            tags: self.tags.clone(),
            workers: ctx.workers(),
            encrypted: self.encrypted,
            kms_key_arn: self.kms_key_id.clone(),
            parent: match (&self.parent, self.full) {
                (Some(p), _) => ParentChoice::Snapshot(p.0.clone()),
                (None, true) => ParentChoice::Full,
                (None, false) => ParentChoice::Auto,
            },
            dry_run: self.dry_run,
            state_dir: ctx.state_dir(),
            lock_wait: ctx.lock_wait(),
            stop: stop_on_signals(),
            consistency: self.consistency.options(ctx.location.to_string()),
        }
    }
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let options = args.options(ctx);
    let source = metrics::source_name(&args.source);
    // A dry run is not a backup: it records nothing that monitoring would take for one.
    let watch = (!args.dry_run)
        .then(|| Watch::start(ctx, source.clone()))
        .flatten();
    let (store, result) = back_up(ctx, &args.source, &options).await;
    let recorded = metrics::record(watch, &source, store.as_deref(), outcome(&result)).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => return Err(metrics::also(recorded, e)),
    };
    ctx.output.result(&text(&report, &args.source), &report)?;
    recorded?;
    Ok(exit_of(&report))
}

/// The backup is done, but what the post-hook was to do (remove an LVM snapshot, say)
/// was not: a script must notice.
pub fn exit_of(report: &BackupReport) -> Exit {
    match report.post_hook_exit_code {
        Some(code) if code != 0 => Exit::FAILURE,
        _ => Exit::SUCCESS,
    }
}

/// Opens the store and backs `source` up: the store (if it opened), and what the backup
/// did. The one way `backup` and `run` take.
pub async fn back_up(
    ctx: &Context,
    source: &Path,
    options: &BackupOptions,
) -> (Option<Arc<dyn SnapshotStore>>, Result<BackupReport>) {
    let store = match ctx.open_store(Access::Write).await {
        Ok(store) => store,
        Err(e) => return (None, Err(e)),
    };
    let progress = ctx.progress();
    let result = engine::backup(store.clone(), source, options, &*progress).await;
    (Some(store), result.map_err(Failure::from))
}

/// What the metrics file records of a backup.
pub fn outcome(result: &Result<BackupReport>) -> Outcome {
    match result {
        Ok(report) => Outcome {
            exit: exit_of(report),
            bytes_written: report.bytes_written,
            blocks_written: report.blocks_written,
        },
        Err(failure) => Outcome::failed(failure),
    }
}

pub fn text(r: &BackupReport, source: &Path) -> String {
    let what = match &r.snapshot_id {
        Some(id) => id.clone(),
        None => "dry run".to_owned(),
    };
    let parent = r
        .parent_snapshot_id
        .as_ref()
        .map_or("a new lineage".to_owned(), |p| format!("child of {p}"));
    let verb = if r.dry_run { "would write" } else { "wrote" };
    let resumed = if r.resumed {
        format!(
            ", resuming an interrupted backup that had put {}",
            r.blocks_resumed
        )
    } else {
        String::new()
    };
    let rate = r.source_bytes as f64 / r.seconds.max(1e-6);
    let frozen = r
        .frozen_seconds
        .map_or(String::new(), |s| format!(" (frozen {s:.2}s)"));
    format!(
        "{what} ({parent}{resumed}): {verb} {} blocks ({}); {} unchanged, {} zero, of {} ({} GiB volume) in {:.2}s{frozen}, read at {}/s\n",
        r.blocks_written,
        HumanBytes(r.bytes_written),
        r.blocks_unchanged,
        r.blocks_zero,
        source.display(),
        r.volume_size_gib,
        r.seconds,
        HumanBytes(rate as u64)
    )
}

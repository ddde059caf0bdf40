//! `ebsnap forget --keep-…`: retention. Per source, what no policy keeps is deleted
//! (children stay whole); the newest snapshot of each source always stays.

use super::backup::parse_tag;
use super::Context;
use crate::exit::{Exit, Failure, Result};
use crate::metrics::{self, Outcome, Watch};
use crate::signals::stop_on_signals;
use ebsnap::engine::{self, parse_keep_within, ForgetOptions, ForgetReport, KeepPolicy};
use ebsnap::store::local::Access;
use ebsnap::store::Tag;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep what started within DURATION (like 1y2m3d4h) of the source's newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_keep_within)]
    keep_within: Option<Duration>,
    /// Keep what carries this tag; repeat for more (any of them keeps).
    #[arg(long = "keep-tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    keep_tags: Vec<Tag>,
    /// Only this source (the path it was backed up from); default: every source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<PathBuf>,
    /// Say what would be removed, removing nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    fn policy(&self) -> KeepPolicy {
        KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: self.keep_tags.clone(),
        }
    }

    /// The engine's options. A source is named as backup records it: a file by its
    /// absolute path, a block device by its stable id.
    fn options(&self, ctx: &Context) -> ForgetOptions {
        ForgetOptions {
            policy: self.policy(),
            source: self
                .source
                .as_deref()
                .map(|p| engine::SourceIdentity::resolve(p).key),
            dry_run: self.dry_run,
            state_dir: ctx.state_dir(),
            lock_wait: ctx.lock_wait(),
            stop: stop_on_signals(),
        }
    }
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let options = args.options(ctx);
    if options.policy.is_empty() {
        // Before the store is opened: nothing to do, and a mistake to say so loudly.
        return Err(Failure::usage(ebsnap::Error::EmptyPolicy.to_string()));
    }
    let access = if args.dry_run {
        Access::Read
    } else {
        Access::Write
    };
    let started = Instant::now();
    let store = ctx.open_store(access).await?;
    match engine::forget(store.clone(), &options, &*ctx.progress()).await {
        Ok(report) => {
            let recorded = record(ctx, &report, Exit::SUCCESS, started).await;
            ctx.output.result(&text(&report), &report)?;
            recorded?;
            Ok(Exit::SUCCESS)
        }
        Err(ebsnap::Error::ForgetIncomplete { report, source }) => {
            let failure = Failure::Engine(*source);
            let recorded = record(ctx, &report, failure.exit(), started).await;
            let exit = incomplete(ctx, &report, failure);
            recorded.and(exit)
        }
        Err(e) => Err(e.into()),
    }
}

/// Records the forget in the metrics file (docs/metrics.md): a run `forget:SOURCE` for
/// each source judged, and the count each source's backups now have. A dry run
/// changed nothing, and records nothing.
async fn record(ctx: &Context, report: &ForgetReport, exit: Exit, started: Instant) -> Result<()> {
    if report.dry_run {
        return Ok(());
    }
    let mut kept: BTreeMap<&str, u64> = BTreeMap::new();
    report.removed.iter().for_each(|e| {
        kept.entry(&e.source).or_default();
    });
    report
        .kept
        .iter()
        .for_each(|e| *kept.entry(&e.source).or_default() += 1);
    for (source, count) in kept {
        let watch = Watch::since(ctx, format!("forget:{source}"), started);
        let outcome = Outcome {
            exit,
            bytes_written: 0,
            blocks_written: 0,
        };
        // The count is the report's: no second listing of the store.
        if let Some(watch) = watch {
            watch.finish_counted(source, Some(count), outcome).await?;
        }
        metrics::update_snapshots(ctx, source, count).await?;
    }
    Ok(())
}

/// A forget that failed midway: what it did is printed (as the result, with the
/// error in it under --json) before the error.
fn incomplete(ctx: &Context, report: &ForgetReport, failure: Failure) -> Result<Exit> {
    let exit = failure.exit();
    let mut value = serde_json::to_value(report).expect("serializable");
    value["error"] = failure.to_string().into();
    value["exit_code"] = exit.code().into();
    ctx.output.result(&text(report), &value)?;
    eprintln!("ebsnap: error: {failure}");
    Ok(exit)
}

/// Per source, the snapshots kept (with their reasons), then those removed, each
/// oldest first; then the counts.
fn text(report: &ForgetReport) -> String {
    let removed = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let sources: BTreeSet<&str> = report
        .kept
        .iter()
        .chain(&report.removed)
        .map(|e| e.source.as_str())
        .collect();
    let mut out = String::new();
    for source in sources {
        out += &format!("{source}:\n");
        for e in report.kept.iter().filter(|e| e.source == source) {
            out += &format!(
                "  {:<12}  {}  {}  {}\n",
                "keep",
                e.snapshot_id,
                e.start_time,
                e.reasons.join(", ")
            );
        }
        for e in report.removed.iter().filter(|e| e.source == source) {
            out += &format!("  {removed:<12}  {}  {}\n", e.snapshot_id, e.start_time);
        }
    }
    let kept = report.kept.len();
    out + &format!("kept {kept}, {removed} {}\n", report.removed.len())
}

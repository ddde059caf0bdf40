//! `ebsnap run [JOB...]`: the config file's jobs (all, or those named), in the file's
//! order; each is a backup, then its retention. A failed job does not stop the others.

use super::backup;
use super::Context;
use crate::config::Job;
use crate::exit::{Exit, Failure, Result};
use crate::metrics::{self, Outcome, Watch};
use crate::signals::stop_on_signals;
use ebsnap::engine::{self, BackupOptions, BackupReport, ForgetOptions, ParentChoice, Stop};
use ebsnap::store::{SnapshotStore, Tag};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The jobs to run, by name (default: all of them, in the file's order).
    #[arg(value_name = "JOB")]
    jobs: Vec<String>,
    /// Plan every job: what each backup would write; no snapshot is started, none is
    /// deleted, and nothing is recorded in the metrics file.
    #[arg(long)]
    dry_run: bool,
}

/// One job's outcome (`--json`: an element of `jobs`).
#[derive(Debug, Serialize)]
struct JobReport {
    name: String,
    ok: bool,
    exit_code: u8,
    #[serde(skip)]
    exit: Exit,
    #[serde(skip)]
    source: PathBuf,
    backup: Option<BackupReport>,
    forget: Option<Value>,
    error: Option<String>,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let config = ctx.config.as_deref().ok_or_else(|| {
        Failure::usage(
            "ebsnap run runs the jobs of a config file, and there is none: give --config \
             PATH or $EBSNAP_CONFIG, or write $XDG_CONFIG_HOME/ebsnap/config.toml or \
             /etc/ebsnap/config.toml",
        )
    })?;
    let jobs = config.select(&args.jobs)?;
    // Every job's settings are resolved before the first one runs: a job whose store
    // cannot be named is a config error, and nothing runs.
    let contexts: Vec<Context> = jobs
        .iter()
        .map(|job| ctx.for_job(job))
        .collect::<Result<_>>()?;
    // One watcher for every job: a signal stops the job running and the rest.
    let stop = stop_on_signals();
    let mut reports = Vec::new();
    for (job, job_ctx) in jobs.iter().zip(&contexts) {
        let report = match stop.requested() {
            Some(signal) => not_run(job, signal),
            None => run_job(job, job_ctx, args.dry_run, &stop).await,
        };
        reports.push(report);
    }
    let exit = worst(&reports);
    ctx.output
        .result(&text(&reports), &json!({ "jobs": reports }))?;
    Ok(exit)
}

/// The exit code of a run of jobs: the highest of the jobs' codes, so 0 only when
/// every job succeeded, and a signal's (130, 143) over bad data (3) over a usage error
/// (2) over a failure (1).
fn worst(reports: &[JobReport]) -> Exit {
    reports
        .iter()
        .map(|r| r.exit)
        .max_by_key(|exit| exit.code())
        .unwrap_or(Exit::SUCCESS)
}

/// One job: its backup, then (if the backup succeeded) its retention, then its record
/// in the metrics file. A line on stderr when it starts and one when it ends.
async fn run_job(job: &Job, ctx: &Context, dry_run: bool, stop: &Stop) -> JobReport {
    let started = Instant::now();
    let what = if dry_run {
        "dry run of a backup"
    } else {
        "backup"
    };
    log(
        ctx,
        job,
        &format!(
            "started: {what} of {} into {}",
            job.source.display(),
            ctx.location
        ),
    );
    let watch = (!dry_run)
        .then(|| Watch::start(ctx, job.name.clone()))
        .flatten();
    let options = options(job, ctx, dry_run, stop);
    let (store, backup) = backup::back_up(ctx, &job.source, &options).await;
    let forget = match (&backup, &store) {
        (Ok(_), Some(store)) => retention(job, ctx, store, dry_run, stop).await,
        _ => None,
    };
    let source = metrics::source_name(&job.source);
    let outcome = job_outcome(&backup, forget.as_ref());
    let recorded = metrics::record(watch, &source, store.as_deref(), outcome).await;
    let report = JobReport::new(job, backup, forget, recorded);
    log(ctx, job, &report.summary(started));
    report
}

/// The backup's options: the job's description and tags, the job's settings.
fn options(job: &Job, ctx: &Context, dry_run: bool, stop: &Stop) -> BackupOptions {
    BackupOptions {
        description: job.keys.description.clone(),
        tags: job
            .keys
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| Tag::new(k, v))
            .collect(),
        workers: ctx.workers(),
        encrypted: false,
        kms_key_arn: None,
        parent: ParentChoice::Auto,
        dry_run,
        state_dir: ctx.state_dir(),
        lock_wait: ctx.lock_wait(),
        stop: stop.clone(),
        consistency: job.live.consistency(&job.name, ctx.location.to_string()),
    }
}

/// What a job's retention did: its report (as `ebsnap forget --json` prints it), or
/// why it failed.
pub type ForgetOutcome = Result<Value, Failure>;

/// The job's retention step, after a successful backup: `forget` with the job's `keep`
/// policy, for the job's source, in the job's store (`dry_run`: deleting nothing).
/// `None`: the job has no policy, and keeps every snapshot.
async fn retention(
    job: &Job,
    ctx: &Context,
    store: &Arc<dyn SnapshotStore>,
    dry_run: bool,
    stop: &Stop,
) -> Option<ForgetOutcome> {
    let options = ForgetOptions {
        policy: job.keep()?.policy(),
        source: Some(metrics::source_name(&job.source)),
        dry_run,
        state_dir: ctx.state_dir(),
        lock_wait: ctx.lock_wait(),
        stop: stop.clone(),
    };
    let result = engine::forget(store.clone(), &options, &*ctx.progress()).await;
    Some(match result {
        Ok(report) => Ok(serde_json::to_value(report).expect("serializable")),
        Err(e) => Err(e.into()),
    })
}

/// What the metrics file records of a job: its backup's writes, and the exit of its
/// backup, else of its retention.
fn job_outcome(backup: &Result<BackupReport>, forget: Option<&ForgetOutcome>) -> Outcome {
    let mut outcome = backup::outcome(backup);
    if let Some(Err(failure)) = forget {
        outcome.exit = failure.exit();
    }
    outcome
}

impl JobReport {
    fn new(
        job: &Job,
        backup: Result<BackupReport>,
        forget: Option<ForgetOutcome>,
        recorded: Result<()>,
    ) -> JobReport {
        let (backup, backup_failure) = split(backup);
        let (forget, forget_failure) = match forget {
            Some(outcome) => split(outcome),
            None => (None, None),
        };
        let failure = backup_failure.or(forget_failure).or(recorded.err());
        let exit = failure.as_ref().map_or(Exit::SUCCESS, Failure::exit);
        JobReport {
            name: job.name.clone(),
            ok: failure.is_none(),
            exit_code: exit.code(),
            exit,
            source: job.source.clone(),
            backup,
            forget,
            error: failure.map(|f| f.to_string()),
        }
    }

    /// The line that says how the job ended.
    fn summary(&self, started: Instant) -> String {
        let secs = started.elapsed().as_secs_f64();
        match (&self.error, &self.backup) {
            (Some(error), _) => {
                format!("failed (exit {}) after {secs:.1}s: {error}", self.exit_code)
            }
            (None, Some(b)) => format!(
                "done in {secs:.1}s: {}, {} blocks written",
                b.snapshot_id.as_deref().unwrap_or("dry run"),
                b.blocks_written
            ),
            (None, None) => format!("done in {secs:.1}s"),
        }
    }
}

fn split<T>(result: Result<T>) -> (Option<T>, Option<Failure>) {
    match result {
        Ok(value) => (Some(value), None),
        Err(failure) => (None, Some(failure)),
    }
}

/// A job not started, because a signal stopped the run before it.
fn not_run(job: &Job, signal: i32) -> JobReport {
    let error = format!(
        "not run: stopped by {}",
        ebsnap::engine::signal_name(signal)
    );
    JobReport {
        name: job.name.clone(),
        ok: false,
        exit_code: Exit::signal(signal).code(),
        exit: Exit::signal(signal),
        source: job.source.clone(),
        backup: None,
        forget: None,
        error: Some(error),
    }
}

/// One line on stderr for an event of a job (cron mails it, journald keeps it); none
/// with -q.
fn log(ctx: &Context, job: &Job, event: &str) {
    if !ctx.global.quiet {
        eprintln!("ebsnap: job {}: {event}", job.name);
    }
}

/// The text result: a line a job.
fn text(reports: &[JobReport]) -> String {
    reports
        .iter()
        .map(|r| match (&r.backup, &r.error) {
            (_, Some(error)) => format!("{}: failed (exit {}): {error}\n", r.name, r.exit_code),
            (Some(b), None) => format!("{}: {}", r.name, backup::text(b, &r.source)),
            (None, None) => format!("{}: ok\n", r.name),
        })
        .collect()
}

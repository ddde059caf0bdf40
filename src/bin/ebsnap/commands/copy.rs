//! `ebsnap copy SNAPSHOT... --to LOCATION` and `ebsnap copy --source SOURCE --to
//! LOCATION`: snapshot chains into another store, lineage kept, incrementally.

use super::Context;
use crate::args::SnapshotArg;
use crate::exit::{Exit, Failure, Result};
use crate::signals::stop_on_signals;
use crate::store::{open_store, StoreSettings};
use clap::builder::{OsStringValueParser, TypedValueParser};
use ebsnap::engine::{
    self, CopiedSnapshot, CopyOptions, CopyReport, CopySelection, SourceIdentity,
};
use ebsnap::store::local::Access;
use ebsnap::store::StoreLocation;
use indicatif::HumanBytes;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshots to copy; each comes with its ancestors still in the store.
    #[arg(
        value_name = "SNAPSHOT",
        required_unless_present = "source",
        conflicts_with = "source"
    )]
    snapshots: Vec<SnapshotArg>,
    /// Copy every snapshot of this source (the path it was backed up from; a device
    /// attached here, by its stable id): its lineage.
    #[arg(long, value_name = "SOURCE")]
    source: Option<PathBuf>,
    /// Where to copy to, in the syntax of --store: a directory, `ebs`, `ebs:REGION`,
    /// `ebs+http(s)://HOST:PORT`.
    #[arg(long, value_name = "LOCATION", value_parser = OsStringValueParser::new().try_map(|s| StoreLocation::parse_os(&s)))]
    to: StoreLocation,
    /// AWS region of the target (default: --region, unless --to names one).
    #[arg(long, value_name = "REGION")]
    to_region: Option<String>,
    /// AWS profile for the target, for another account (default: --profile).
    #[arg(long, value_name = "NAME")]
    to_profile: Option<String>,
    /// Endpoint of the target's EBS and EC2 APIs (default: --endpoint-url, unless --to
    /// names one).
    #[arg(long, value_name = "URL")]
    to_endpoint_url: Option<String>,
    /// Encrypt the copies that start a lineage on the target (EBS); children inherit.
    #[arg(long)]
    encrypted: bool,
    /// KMS key (id or ARN) on the target for encrypted copies; implies --encrypted.
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,
}

impl Args {
    fn selection(&self) -> CopySelection {
        match &self.source {
            // A device present is known by its stable id, as its backups tagged it.
            Some(path) => CopySelection::Source(SourceIdentity::resolve(path).key),
            None => CopySelection::Snapshots(self.snapshots.iter().map(|s| s.0.clone()).collect()),
        }
    }

    /// How to reach the target: the global flags, but for what the --to-* flags say;
    /// a region or endpoint that --to names wins over the global one.
    fn target_settings(&self, ctx: &Context) -> StoreSettings {
        let mut settings = ctx.settings.clone();
        match &self.to {
            StoreLocation::Ebs { region: Some(_) } => settings.region = None,
            StoreLocation::Endpoint { .. } => settings.endpoint_url = None,
            StoreLocation::Ebs { region: None } | StoreLocation::Local(_) => {}
        }
        let or = |given: &Option<String>, inherited: Option<String>| given.clone().or(inherited);
        settings.region = or(&self.to_region, settings.region);
        settings.profile = or(&self.to_profile, settings.profile);
        settings.endpoint_url = or(&self.to_endpoint_url, settings.endpoint_url);
        // Both sides are paced as the global flags say (--max-rate, --workers), and
        // share the process's byte limits: --limit-download for what is read from the
        // source, --limit-upload for what is sent to the target (one bucket each).
        settings
    }

    fn options(&self, ctx: &Context) -> CopyOptions {
        CopyOptions {
            workers: ctx.workers(),
            encrypted: self.encrypted,
            kms_key_arn: self.kms_key_id.clone(),
            state_dir: ctx.state_dir(),
            lock_wait: ctx.lock_wait(),
            stop: stop_on_signals(),
        }
    }
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    // Before either is opened: a local store opened twice by this process would wait
    // for its own lock.
    if same_directory(&ctx.location, &args.to) {
        return Err(same_store(&args.to));
    }
    let from = ctx.open_store(Access::Read).await?;
    let to = open_store(&args.to, &args.target_settings(ctx), Access::Write).await?;
    if from.identity() == to.identity() {
        return Err(same_store(&args.to));
    }
    let options = args.options(ctx);
    let report = engine::copy(from, to, &args.selection(), &options, &*ctx.progress()).await?;
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::SUCCESS)
}

fn same_store(to: &StoreLocation) -> Failure {
    Failure::usage(format!("--to {to} is the store copied from"))
}

/// Whether two locations are one local store (the same directory, however named).
fn same_directory(a: &StoreLocation, b: &StoreLocation) -> bool {
    let (StoreLocation::Local(a), StoreLocation::Local(b)) = (a, b) else {
        return false;
    };
    let resolved = |p: &Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p));
    matches!((resolved(a), resolved(b)), (Ok(a), Ok(b)) if a == b)
}

fn text(r: &CopyReport) -> String {
    let mut out: String = r
        .skipped
        .iter()
        .map(|s| format!("{}: copied before, as {}\n", s.from, s.to))
        .collect();
    for c in &r.copied {
        out += &copied_line(c);
    }
    out += &format!(
        "copied {} snapshots, {} were there already, in {:.2}s\n",
        r.copied.len(),
        r.skipped.len(),
        r.seconds
    );
    out
}

fn copied_line(c: &CopiedSnapshot) -> String {
    let parent = c
        .parent
        .as_ref()
        .map_or("a new lineage".to_owned(), |p| format!("child of {p}"));
    let resumed = if c.resumed {
        format!(
            ", resuming an interrupted copy that had put {}",
            c.blocks_resumed
        )
    } else {
        String::new()
    };
    format!(
        "{} -> {} ({parent}{resumed}): {} blocks ({}), {} of them zeros, in {:.2}s\n",
        c.from,
        c.to,
        c.blocks_copied,
        HumanBytes(c.bytes_copied),
        c.zero_blocks_copied,
        c.seconds
    )
}

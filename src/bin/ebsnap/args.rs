//! The command line, as clap sees it.

use clap::{ArgAction, Args, Parser, Subcommand};
use ebsnap::store::{SnapshotId, Tag};
use std::path::PathBuf;

/// Incremental backup of disks and disk images into EBS-style snapshots.
#[derive(Debug, Parser)]
#[command(name = "ebsnap", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Store location: a directory (the local store, created on first use), or `ebs`
    /// (Amazon EBS, or any EBS-compatible endpoint such as `ebsnap serve`).
    /// Default: $EBSNAP_STORE, else $XDG_DATA_HOME/ebsnap/store.
    #[arg(long, global = true, value_name = "LOCATION")]
    pub store: Option<PathBuf>,

    /// AWS region for `--store ebs` (default: the AWS configuration's).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile for `--store ebs`.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// One endpoint for both the EBS and EC2 APIs, e.g. http://127.0.0.1:9000
    /// (`ebsnap serve`). Default: AWS_ENDPOINT_URL_EBS / _EC2 / AWS_ENDPOINT_URL, else AWS.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Print exactly one JSON object on stdout when the command ends.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// No progress and no messages but errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// When another ebsnap process holds the store (or backs up the same source): wait
    /// at most this many seconds, then fail (0: fail at once). Default: wait.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,

    /// Blocks transferred at once, at most: below that, ebsnap finds how many the link
    /// needs (more while the request rate rises, fewer when latency rises without it).
    #[arg(long, global = true, value_name = "N", default_value_t = ebsnap::engine::DEFAULT_WORKERS as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Block requests (puts and gets) per second, at most. Default: 1000 with `--store
    /// ebs` (what EBS allows per snapshot); no limit on a local store.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rate: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up a disk image or block device into a new snapshot.
    Backup {
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
    },
    /// Restore a snapshot to a file or block device.
    Restore {
        snapshot: SnapshotArg,
        /// File or block device to write.
        target: PathBuf,
        /// Overwrite an existing file (full restore).
        #[arg(long)]
        force: bool,
        /// The target already holds this snapshot: fetch and write only what differs.
        #[arg(long, value_name = "BASE", conflicts_with = "full")]
        from: Option<SnapshotArg>,
        /// Restore in full, even onto a target ebsnap knows to hold an earlier snapshot.
        #[arg(long)]
        full: bool,
    },
    /// List the store's snapshots.
    Snapshots,
    /// Show one snapshot.
    Show { snapshot: SnapshotArg },
    /// List the blocks that differ between two snapshots of one lineage.
    Diff {
        first: SnapshotArg,
        second: SnapshotArg,
    },
    /// Re-read every block of a snapshot and check it.
    Verify {
        snapshot: SnapshotArg,
        /// Also compare the snapshot with this disk or image.
        #[arg(long, value_name = "SOURCE")]
        against: Option<PathBuf>,
    },
    /// Check the local store's structure, and with --read-data every block's data.
    Check {
        /// Read every block and check it against its checksum.
        #[arg(long)]
        read_data: bool,
    },
    /// Serve the EBS direct API (and its EC2 calls) over HTTP on a local store.
    Serve {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Accept unsigned requests (no EBSNAP_ACCESS_KEY_ID / EBSNAP_SECRET_ACCESS_KEY).
        #[arg(long)]
        no_auth: bool,
        /// Inject faults for testing clients, e.g.
        /// throttle=0.2,error=0.05,reset=0.02,latency-ms=20
        #[arg(long, value_name = "SPEC")]
        faults: Option<ebsnap::server::faults::FaultSpec>,
        /// Seed of the fault sequence (the same seed, the same faults).
        #[arg(long, value_name = "N", default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        limits: ServeLimits,
    },
    /// Delete snapshots; their children stay whole.
    Delete {
        #[arg(required = true)]
        snapshots: Vec<SnapshotArg>,
    },
}

/// How long `serve` waits for slow clients.
#[derive(Debug, Args)]
pub struct ServeLimits {
    /// Seconds a client has to send a request's head (an idle connection is closed
    /// after as long).
    #[arg(long, value_name = "SECONDS", default_value_t = ebsnap::server::Limits::HEADER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, value_name = "SECONDS", default_value_t = ebsnap::server::Limits::BODY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
}

/// A snapshot id, checked when the command line is parsed (a typo is a usage error).
#[derive(Clone, Debug)]
pub struct SnapshotArg(pub SnapshotId);

impl std::str::FromStr for SnapshotArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(SnapshotArg)
            .map_err(|e: ebsnap::store::StoreError| e.to_string())
    }
}

fn parse_tag(s: &str) -> Result<Tag, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Tag::new(k, v)),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

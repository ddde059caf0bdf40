//! The command line, as clap sees it.

use crate::commands::Command;
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{ArgAction, Args, Parser};
use ebsnap::store::local::LockWait;
use ebsnap::store::{SnapshotId, StoreLocation};
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

#[derive(Clone, Debug, Args)]
pub struct Global {
    /// The config file (docs/config.md): its [defaults] apply to every command, its
    /// jobs are what `ebsnap run` runs. Default: $EBSNAP_CONFIG, else
    /// $XDG_CONFIG_HOME/ebsnap/config.toml, else /etc/ebsnap/config.toml, where they
    /// exist.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// After backup, restore, run and forget: record the run in this Prometheus
    /// text-format file, for node_exporter's textfile collector (docs/metrics.md).
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// The key file of encrypted snapshots in a local store (docs/security.md): one or
    /// more named keys, the first the default. The first encrypted backup creates it
    /// (0600) if it does not exist; reading an encrypted snapshot needs it. Default:
    /// $EBSNAP_KEY_FILE, else $XDG_STATE_HOME/ebsnap/keys.toml, beside the local state
    /// and apart from the store. Keep a copy: without it the data cannot be read.
    #[arg(long, global = true, value_name = "PATH", env = "EBSNAP_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Store location: a directory (the local store, created on first use; `./ebs` is
    /// a directory named ebs), `ebs` or `ebs:REGION` (Amazon EBS), or
    /// `ebs+http://HOST:PORT` or `ebs+https://HOST:PORT` (any EBS-compatible endpoint,
    /// such as `ebsnap serve`). Default: $EBSNAP_STORE (the same syntax), else
    /// $XDG_DATA_HOME/ebsnap/store.
    #[arg(long, global = true, value_name = "LOCATION", value_parser = OsStringValueParser::new().try_map(|s| StoreLocation::parse_os(&s)))]
    pub store: Option<StoreLocation>,

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
    /// Default: 256.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Block requests (puts and gets) per second, at most. Default: 1000 on Amazon EBS
    /// (what it allows per snapshot: no endpoint given, or one under amazonaws.com,
    /// amazonaws.com.cn or api.aws); no limit on any other endpoint (`ebsnap serve`) or
    /// on a local store. Throttling slows requests down whatever the limit.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rate: Option<u32>,

    /// Block data sent (backup, the target of a copy), in bytes per second at most,
    /// for the whole process: `50MiB`, `200M`, `1.5G`, with `/s` or without; units are
    /// powers of 1024. Applies alongside --max-rate. Default: no limit.
    #[arg(long, global = true, value_name = "RATE", value_parser = ByteSize::parse_rate)]
    pub limit_upload: Option<ByteSize>,

    /// Block data received (restore, verify, mount, nbd, the source of a copy), in
    /// bytes per second at most, as --limit-upload. Default: no limit.
    #[arg(long, global = true, value_name = "RATE", value_parser = ByteSize::parse_rate)]
    pub limit_download: Option<ByteSize>,

    /// Read and write disks and packs through the page cache only. By default a block
    /// device is read with O_DIRECT (under a mounted filesystem its page cache can be
    /// stale), an image's blocks that are not cached too, and restored blocks are
    /// written so, where the filesystem allows it: no copy through the cache, and a
    /// backup or restore of a whole disk does not push the host's cached data out.
    /// Not for a device whose filesystem is mounted.
    #[arg(long, global = true, env = "EBSNAP_NO_DIRECT_IO", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_direct_io: bool,
}

impl Global {
    /// What `--workers` asks for (an option, so that a config file knows whether the
    /// flag was given).
    pub fn workers(&self) -> usize {
        self.workers
            .map_or(ebsnap::engine::DEFAULT_WORKERS, usize::from)
    }

    /// What `--lock-wait` asks for.
    pub fn lock_wait(&self) -> LockWait {
        match self.lock_wait {
            None => LockWait::Wait,
            Some(0) => LockWait::Fail,
            Some(secs) => LockWait::Up(std::time::Duration::from_secs(secs)),
        }
    }
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

/// A size in bytes: a number, with an optional binary suffix (`K`, `M`, `G`, `T`,
/// alone or as `KiB`...): `256M` is 256 MiB, `1.5G` is 1536 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// A rate in bytes per second: a size, optionally followed by `/s` (`20MiB/s`).
    /// 0 is refused: a limit that lets nothing through would hang the transfer.
    pub fn parse_rate(s: &str) -> Result<ByteSize, String> {
        let size = s.trim();
        let size = size.strip_suffix("/s").unwrap_or(size);
        match size.parse::<ByteSize>()? {
            ByteSize(0) => Err(format!("{s:?}: a rate of 0 lets nothing through")),
            rate => Ok(rate),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = s
            .trim()
            .trim_end_matches(|c: char| !c.is_ascii_digit() && c != '.');
        let suffix = &s.trim()[number.len()..];
        let shift = match suffix
            .to_ascii_uppercase()
            .trim_end_matches("IB")
            .trim_end_matches('B')
        {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => {
                return Err(format!(
                    "{s:?}: the unit is one of K, M, G, T (powers of 1024)"
                ))
            }
        };
        let not_a_size = || format!("{s:?} is not a size");
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u64 = whole.parse().map_err(|_| not_a_size())?;
        let too_large = || format!("{s:?} is too large");
        let whole = whole.checked_mul(1 << shift).ok_or_else(too_large)?;
        Ok(ByteSize(
            whole + fraction_of(fraction, shift).ok_or_else(not_a_size)?,
        ))
    }
}

/// The bytes of a decimal fraction (the digits after the point) of `1 << shift`,
/// rounded down; `None` if they are not digits.
fn fraction_of(digits: &str, shift: u32) -> Option<u64> {
    if digits.is_empty() {
        return Some(0);
    }
    let digits = &digits[..digits.len().min(12)];
    let numerator: u128 = digits.parse().ok()?;
    let denominator = 10u128.pow(digits.len() as u32);
    u64::try_from((numerator << shift) / denominator).ok()
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse_with_binary_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("256M"), Ok(256 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("2k"), Ok(2048));
        assert!(parse("12X").is_err());
        assert!(parse("M").is_err());
        assert!(parse("99999999999T").is_err());
        assert_eq!(parse("1.5M"), Ok(3 << 19));
        assert_eq!(parse("0.5k"), Ok(512));
        assert_eq!(parse("2."), Ok(2));
        assert!(parse(".").is_err());
        assert!(parse("1.2.3M").is_err());
    }

    #[test]
    fn rates_are_sizes_with_or_without_a_second() {
        let parse = |s: &str| ByteSize::parse_rate(s).map(|b| b.0);
        assert_eq!(parse("50MiB"), Ok(50 << 20));
        assert_eq!(parse("200M"), Ok(200 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("20MiB/s"), Ok(20 << 20));
        assert_eq!(parse("1.5M/s"), Ok(3 << 19));
        assert!(parse("0").is_err());
        assert!(parse("20MiB/h").is_err());
    }
}

/// How `mount` and `nbd` read a snapshot.
#[derive(Debug, Args)]
pub struct ReaderArgs {
    /// Blocks kept in memory, in bytes (K, M, G suffixes): what is read again, or was
    /// fetched ahead of a sequential reader, comes from here.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub cache_size: ByteSize,
}

impl ReaderArgs {
    pub fn options(&self, workers: usize) -> ebsnap::engine::recover::ReaderOptions {
        ebsnap::engine::recover::ReaderOptions {
            cache_bytes: self.cache_size.0,
            // Reads want answers soon, not a transfer's throughput: fewer in flight
            // than a restore's default, and memory stays small.
            workers: workers.min(64),
        }
    }
}

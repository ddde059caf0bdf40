//! The backup flags that make a live disk's backup consistent (hooks, `--read-from`,
//! `--freeze`), and their conversion into the engine's [`Consistency`].

use crate::args::ByteSize;
use crate::dirs;
use ebsnap::engine::Consistency;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ConsistencyArgs {
    /// Run CMD (with `sh -c`) before the backup; if it fails, no snapshot is started.
    /// It sees EBSNAP_SOURCE and EBSNAP_STORE (see docs/consistency.md).
    #[arg(long, value_name = "CMD")]
    pre_hook: Option<String>,
    /// Run CMD (with `sh -c`) after the backup, whatever happened, once the pre-hook
    /// has started; it also sees EBSNAP_STATUS (ok, failed, interrupted),
    /// EBSNAP_SNAPSHOT_ID and EBSNAP_EXIT_CODE. Its failure makes the exit code 1.
    #[arg(long, value_name = "CMD")]
    post_hook: Option<String>,
    /// Each hook is killed, with what it started, after this long (seconds, or 5m...).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "300")]
    hook_timeout: Duration,
    /// Read the blocks from PATH (an LVM snapshot a pre-hook made, say) instead of
    /// SOURCE; the snapshot, its lineage and its tags stay SOURCE's. Same size as SOURCE.
    #[arg(long, value_name = "PATH")]
    read_from: Option<PathBuf>,
    /// Freeze the filesystem mounted at MOUNTPOINT while the source is read (it is
    /// thawed before the upload, which continues from the spool); repeat for more.
    #[arg(long = "freeze", value_name = "MOUNTPOINT")]
    freeze: Vec<PathBuf>,
    /// Thaw and fail if a freeze would last longer than this (seconds, or 2m...).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60")]
    freeze_timeout: Duration,
    /// Where blocks read under --freeze wait for the upload.
    /// Default: $XDG_CACHE_HOME/ebsnap/spool.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// The spool holds at most this much (K, M, G, T); a freeze that needs more is
    /// thawed and the backup fails.
    #[arg(long, value_name = "SIZE", default_value = "8G")]
    spool_max: ByteSize,
    /// For tests: pause this many milliseconds after each batch read under a freeze.
    #[arg(long, value_name = "MS", hide = true, default_value_t = 0)]
    test_slow_read_ms: u64,
}

/// Seconds as a plain number, or a duration as `humantime` writes them (`5m`, `90s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

impl ConsistencyArgs {
    /// The engine's options; `store_name` is the store as the command line names it.
    pub fn options(&self, store_name: String) -> Consistency {
        Consistency {
            pre_hook: self.pre_hook.clone(),
            post_hook: self.post_hook.clone(),
            hook_timeout: self.hook_timeout,
            job: None,
            store_name: Some(store_name),
            read_from: self.read_from.clone(),
            freeze: self.freeze.clone(),
            freeze_timeout: self.freeze_timeout,
            spool_dir: self.spool.clone().unwrap_or_else(dirs::spool_dir),
            spool_max: self.spool_max.0,
            slow_read: Duration::from_millis(self.test_slow_read_ms),
            ..Consistency::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebsnap::engine::{DEFAULT_FREEZE_TIMEOUT, DEFAULT_HOOK_TIMEOUT, DEFAULT_SPOOL_MAX};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsistencyArgs,
    }

    #[test]
    fn the_defaults_are_the_engine_s() {
        let cli = <Cli as clap::Parser>::parse_from(["x"]);
        let c = cli.args.options("store".into());
        assert_eq!(c.hook_timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(c.freeze_timeout, DEFAULT_FREEZE_TIMEOUT);
        assert_eq!(c.spool_max, DEFAULT_SPOOL_MAX);
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    }
}

//! What makes a backup of a live disk consistent: hooks around it (which may make a
//! point-in-time copy, such as an LVM snapshot), a path to read the blocks from
//! instead of the source (that copy), and filesystems frozen while the source is read.
//!
//! One struct, so that whatever names a backup (the command line, a job of the config
//! file) fills it the same way.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// A pre-hook or post-hook runs at most this long by default (`--hook-timeout`).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// A freeze lasts at most this long by default (`--freeze-timeout`).
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(60);
/// The spool holds at most this much by default (`--spool-max`).
pub const DEFAULT_SPOOL_MAX: u64 = 8 << 30;

#[derive(Clone, Debug)]
pub struct Consistency {
    /// Run with `sh -c` before anything else; a failure stops the backup.
    pub pre_hook: Option<String>,
    /// Run with `sh -c` at the end, whatever happened, once the pre-hook has started.
    pub post_hook: Option<String>,
    /// Each hook is killed (with all it started) past this.
    pub hook_timeout: Duration,
    /// The job this backup runs for (`EBSNAP_JOB` in the hooks).
    pub job: Option<String>,
    /// The store as the user names it (`EBSNAP_STORE`); `None`: the store's identity.
    pub store_name: Option<String>,
    /// Read the blocks from here; everything else stays keyed to the source.
    pub read_from: Option<PathBuf>,
    /// Mountpoints frozen (FIFREEZE) while the source is read, and no longer.
    pub freeze: Vec<PathBuf>,
    /// A freeze longer than this is thawed and the backup fails.
    pub freeze_timeout: Duration,
    /// Where blocks read under a freeze wait for the upload (a private directory).
    pub spool_dir: PathBuf,
    /// Bytes the spool may hold; a freeze that would need more is thawed and fails.
    pub spool_max: u64,
    /// How to start the freeze watchdog: this program with its hidden command.
    pub watchdog: Vec<OsString>,
    /// For tests only: a pause after each batch read under a freeze (a slow disk).
    pub slow_read: Duration,
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency {
            pre_hook: None,
            post_hook: None,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            job: None,
            store_name: None,
            read_from: None,
            freeze: Vec::new(),
            freeze_timeout: DEFAULT_FREEZE_TIMEOUT,
            spool_dir: std::env::temp_dir().join(format!("ebsnap-spool-{}", crate::sys::euid())),
            spool_max: DEFAULT_SPOOL_MAX,
            watchdog: crate::sys::watchdog_command(),
            slow_read: Duration::ZERO,
        }
    }
}

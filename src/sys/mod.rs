//! Operating-system primitives that more than one layer uses: durable file
//! replacement, sparse files (SEEK_DATA/SEEK_HOLE, hole punching), flock locks, and
//! what the page cache holds;
//! freezing filesystems, and the watchdog that thaws them if ebsnap dies.
//! Below every other module: it knows nothing of blocks, stores or snapshots.

mod cache;
mod file;
mod freeze;
mod lock;
mod watchdog;

pub(crate) use cache::fully_cached;
pub use file::set_direct_io;
pub(crate) use file::{
    allocate, atomic_write, create_private, data_extents, euid, next_data_extent, open_checked,
    private_dir_all, private_options, punch_hole, read_checked, reopen_direct, seek_data, sync_dir,
    tmp_path, Access,
};
pub use freeze::FreezeError;
pub(crate) use freeze::{is_mountpoint, Frozen};
pub use lock::LockWait;
pub(crate) use lock::{take_lock, LockKind};
pub use watchdog::{run_watchdog, self_command as watchdog_command, WATCHDOG_COMMAND};

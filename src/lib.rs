//! # ebsnap
//!
//! Incremental backup of block devices and disk images into EBS-style snapshots, and
//! restore back to disks.
//!
//! The crate is a library with a thin binary (`ebsnap`) on top:
//!
//! - [`block`]: pure block logic and source I/O: [`block::BlockIndex`], 512 KiB blocks,
//!   SHA-256 digests, the LINEAR aggregate checksum, sparse-aware [`block::Source`]s.
//! - [`store`]: the [`store::SnapshotStore`] trait with EBS direct-API semantics, and
//!   its backends: the [`store::LocalStore`] (a directory; the default) and the
//!   [`store::MemoryStore`] (for tests). `store::conformance` (feature `test-util`) is the
//!   one test suite every backend passes.
//! - [`engine`]: backup, restore, verify and diff over any store, with bounded memory
//!   and progress reported through the [`engine::Progress`] trait.
//! - [`metrics`]: the Prometheus textfile that runs are recorded in, for monitoring.
//!
//! ```
//! use ebsnap::engine::{self, BackupOptions, NoProgress, RestoreOptions};
//! use ebsnap::store::{MemoryStore, SnapshotStore};
//! use std::sync::Arc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let image = dir.path().join("disk.img");
//! std::fs::write(&image, b"hello, block storage").unwrap();
//!
//! let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::new());
//! let report = engine::backup(store.clone(), &image, &BackupOptions::default(), &NoProgress).await?;
//! assert_eq!(report.blocks_written, 1);
//!
//! let id = report.snapshot_id.expect("not a dry run").parse()?;
//! let restored = dir.path().join("restored.img");
//! engine::restore(store, &id, &restored, &RestoreOptions::default(), &NoProgress).await?;
//! assert_eq!(std::fs::read(&restored).unwrap(), b"hello, block storage");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod block;
pub mod engine;
pub mod fuse;
pub mod metrics;
pub mod nbd;
pub mod server;
pub mod store;
mod sys;
pub mod tomlfile;

pub use engine::{Error, Result};
pub use sys::set_direct_io;
/// The freeze watchdog's hidden command, for the binary (see `engine::Consistency`).
#[doc(hidden)]
pub use sys::{run_watchdog as run_freeze_watchdog, WATCHDOG_COMMAND};

/// Entry points for the fuzz targets (`fuzz/`): the parsers of requests and of the
/// store's files. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::server::fuzzing as server;
    pub use crate::server::sigv4;
    pub use crate::store::local::fuzzing as local;
}

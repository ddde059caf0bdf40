//! The local directory store: the embedded default, with EBS semantics on a filesystem.
//!
//! Layout (see `docs/store-format.md`):
//! ```text
//! STORE/ebsnap-store.json      format name and version
//! STORE/key                    secret for page and block tokens
//! STORE/lock                   flock: one writer or many readers
//! STORE/packs/NNNNNNNN.pack    block data, 2048 slots of 512 KiB
//! STORE/packs/NNNNNNNN.idx     identity of each slot, written after the data is durable
//! STORE/packs/NNNNNNNN.aead    nonce and tag of each encrypted slot
//! STORE/snapshots/ID.json      metadata
//! STORE/snapshots/ID.map       completed: the blocks written to this snapshot, sorted
//! STORE/snapshots/ID.journal   pending: sparse, record of block i at 48 * i
//! ```

mod api;
mod chain;
mod check;
mod crypt;
mod encrypted;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod inner;
mod journal;
pub mod keys;
mod layout;
mod lock;
mod map;
mod meta;
mod pack;
mod read;
mod slot;
mod start;
mod store;

pub use crate::sys::LockWait;
pub use check::{CheckReport, Damage};
pub use keys::{Keyring, NamedKey};
pub use lock::Access;
pub use store::LocalStore;

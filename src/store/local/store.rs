//! The local store: opening it, and the `SnapshotStore` operations.

use super::encrypted::{self, KeySource};
use super::fsutil::{atomic_write, remove_if_present};
use super::journal::Journal;
use super::keys::NamedKey;
use super::layout::{check_format, create_layout, read_key, remove_temporaries, FORMAT_FILE};
use super::lock::{self, Access, StoreLock};
use super::map::{Location, MapFile, MapWriter, Record, ZERO_PACK};
use super::meta::Meta;
use super::pack::{Packs, SlotWriter};
use crate::block::{BlockIndex, BufferPool, Digest, HashedBlock};
use crate::store::rules;
use crate::store::token::TokenKey;
use crate::store::*;
use crate::sys::{sync_dir, LockWait};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Spare read buffers kept (32 MiB): enough for the blocks a restore has in flight.
const READ_BUFFERS_KEPT: usize = 64;

/// A snapshot store in a local directory. Cheap to clone; clones share one state.
#[derive(Clone, Debug)]
pub struct LocalStore {
    pub(super) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub root: PathBuf,
    access: Access,
    pub(super) key: TokenKey,
    /// Buffers for blocks read back: reused, because a fresh 512 KiB allocation per
    /// block cost a restore more system time (page faults, unmaps) than its hashing.
    pub(super) read_buffers: Arc<BufferPool>,
    pub inner: Mutex<Inner>,
    /// Puts recorded so far, and (under the async lock) how many of them the last flush
    /// made durable: concurrent flushes share one seal (group commit), so a server that
    /// flushes after every put pays one fsync per group, not per block.
    pub puts_recorded: AtomicU64,
    pub flushed_through: tokio::sync::Mutex<u64>,
    /// Snapshots that may be pending at once ([`LocalStore::set_max_pending`]).
    max_pending: AtomicUsize,
    /// The keys of encrypted snapshots ([`LocalStore::set_key_file`]).
    pub keys: Mutex<KeySource>,
    _lock: StoreLock,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub root: PathBuf,
    pub snapshots: HashMap<SnapshotId, Entry>,
    pub packs: Packs,
    pub maps: HashMap<SnapshotId, Arc<MapFile>>,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub meta: Meta,
    pub info: SnapshotInfo,
    pub last_activity: SystemTime,
    pub journal: Option<Arc<Journal>>,
}

/// Where a put's block goes ([`Shared::place`]).
struct Placed {
    location: Location,
    /// A new slot to write, if the block is not already stored.
    writer: Option<SlotWriter>,
    /// The key of an encrypted snapshot.
    key: Option<Arc<NamedKey>>,
    /// The identity the block is recorded under.
    digest: Digest,
    /// [`Packs::frees`] when the block was placed.
    frees: u64,
}

impl Entry {
    /// Moves the snapshot to `error` if it sat pending past its timeout. Its journal is
    /// synced then, so that it holds no descriptor from then on.
    pub fn expire(&mut self) {
        let timeout = self.meta.timeout_minutes;
        rules::expire(&mut self.info.status, self.last_activity, timeout);
        let timed_out = self.info.status == SnapshotStatus::Error;
        if let Some(j) = self.journal.as_ref().filter(|_| timed_out) {
            if let Err(e) = j.sync() {
                tracing::warn!("{} timed out, and its journal: {e}", self.info.id);
            }
        }
    }
}

impl LocalStore {
    /// Opens the store at `root`. A writer creates it on first use and repairs what a
    /// crash left behind; a reader needs it to exist.
    pub fn open(root: &Path, access: Access, wait: LockWait) -> StoreResult<LocalStore> {
        let format_path = root.join(FORMAT_FILE);
        if access == Access::Write {
            crate::sys::private_dir_all(root)
                .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        } else if !format_path.exists() {
            return Err(StoreError::NotFound {
                what: format!("ebsnap store at {}", root.display()),
            });
        }
        // The lock comes first: two first backups must not both create the layout.
        let lock = lock::acquire(root, access, wait)?;
        if access == Access::Write {
            create_layout(root)?;
        }
        check_format(&format_path)?;
        let key = read_key(&root.join("key"))?;
        let mut packs = Packs::new(&root.join("packs"))?;
        if access == Access::Write {
            packs.recover()?;
            remove_temporaries(root)?;
        }
        let mut inner = Inner {
            root: root.to_owned(),
            snapshots: HashMap::new(),
            packs,
            maps: HashMap::new(),
        };
        inner.load_snapshots(access)?;
        let shared = Shared {
            root: root.to_owned(),
            access,
            key,
            read_buffers: BufferPool::new(READ_BUFFERS_KEPT),
            inner: Mutex::new(inner),
            puts_recorded: AtomicU64::new(0),
            flushed_through: tokio::sync::Mutex::new(0),
            max_pending: AtomicUsize::new(DEFAULT_MAX_PENDING),
            keys: encrypted::new_key_source(),
            _lock: lock,
        };
        Ok(LocalStore {
            shared: Arc::new(shared),
        })
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Sets how many snapshots may be pending at once (by default
    /// [`DEFAULT_MAX_PENDING`], as EBS allows); a start beyond is refused with
    /// [`StoreError::LimitExceeded`].
    pub fn set_max_pending(&self, max: usize) {
        self.shared.max_pending.store(max, Ordering::Relaxed);
    }

    /// Runs blocking store work off the async runtime.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Unavailable {
                message: format!("store task failed: {e}"),
            })?
    }
}

impl Drop for Shared {
    /// A clean close makes the blocks put so far durable, so a pending upload can be
    /// continued by the next process (a crash loses only the puts since the last seal).
    fn drop(&mut self) {
        if self.access == Access::Write {
            let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = inner.packs.close() {
                tracing::warn!("closing store {}: {e}", self.root.display());
            }
        }
    }
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot_path(&self, id: &SnapshotId, ext: &str) -> PathBuf {
        self.root.join("snapshots").join(format!("{id}.{ext}"))
    }

    pub fn writable(&self) -> StoreResult<()> {
        match self.access {
            Access::Write => Ok(()),
            Access::Read => Err(StoreError::AccessDenied {
                message: format!("store {} was opened read-only", self.root.display()),
            }),
        }
    }

    pub fn save_meta(&self, meta: &Meta) -> StoreResult<()> {
        let id: SnapshotId = meta.id.parse()?;
        atomic_write(&self.snapshot_path(&id, "json"), &meta.to_json())
    }

    pub(super) fn put(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        self.writable()?;
        let placed = self.place(id, index, &block, checksum)?;
        // The data is written without holding the lock, so puts run in parallel.
        if let Some(writer) = &placed.writer {
            let written = match &placed.key {
                Some(k) => encrypted::write_encrypted(
                    writer,
                    k,
                    &block,
                    &placed.digest,
                    &self.read_buffers,
                ),
                None => writer.write(block.data()),
            };
            written.map_err(|e| match e {
                StoreError::Io { context, source } => {
                    StoreError::io(format!("block {index} of {id}: {context}"), source)
                }
                other => other,
            })?;
        }
        // Recording the block happens under the lock: a completion or a garbage
        // collection that ran meanwhile is seen here, never raced.
        let mut inner = self.lock();
        if placed.writer.is_some() {
            inner.packs.written(placed.location, placed.digest);
        } else if placed.location.pack != ZERO_PACK && inner.packs.frees() != placed.frees {
            // Slots were freed while the lock was let go (a deletion's garbage
            // collection), perhaps the copy found, which no journal named yet: the
            // block is placed again.
            drop(inner);
            return self.put(id, index, block, checksum);
        }
        let entry = inner.get_mut(id)?;
        rules::check_put(&entry.info, index, &block, checksum)?;
        let journal = entry.journal.as_ref().ok_or_else(|| {
            StoreError::corrupt(format!("snapshot {id}"), "pending, but has no journal")
        })?;
        journal.write(&Record {
            index,
            location: placed.location,
            digest: placed.digest,
        })?;
        self.puts_recorded.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Where a put's block goes: nowhere (a zero block), an existing copy (dedup, by
    /// its identity), or a new slot.
    fn place(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: &HashedBlock,
        checksum: Digest,
    ) -> StoreResult<Placed> {
        let mut inner = self.lock();
        let entry = inner.get_mut(id)?;
        rules::check_put(&entry.info, index, block, checksum)?;
        entry.last_activity = SystemTime::now();
        let key = self.snapshot_key(&entry.meta)?;
        let digest = encrypted::identity(key.as_deref(), block);
        let zero = Location {
            pack: ZERO_PACK,
            slot: 0,
        };
        let (location, writer) = if block.is_zero() {
            (zero, None)
        } else if let Some(found) = inner.packs.find(digest)? {
            (found, None)
        } else {
            let writer = inner.packs.reserve(key.is_some())?;
            (writer.location, Some(writer))
        };
        Ok(Placed {
            location,
            writer,
            key,
            digest,
            frees: inner.packs.frees(),
        })
    }

    /// Seals the packs (data, then idx) and syncs the journals written since the last
    /// flush: every put recorded so far survives a crash from here on, whichever
    /// snapshot it went to. (So even a flush for a snapshot that completed meanwhile
    /// does it all: the caller counts it as covering every put recorded before it
    /// began.) Journals with nothing unsynced cost nothing: no fsync, no descriptor.
    pub(super) fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        self.writable()?;
        let mut inner = self.lock();
        inner.get(id)?;
        inner.packs.seal()?;
        let unsynced = inner.snapshots.values().filter_map(|e| e.journal.as_ref());
        for journal in unsynced.filter(|j| j.has_unsynced()) {
            journal.sync()?;
        }
        Ok(())
    }

    pub(super) fn max_pending(&self) -> usize {
        self.max_pending.load(Ordering::Relaxed)
    }

    pub(super) fn complete(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        self.writable()?;
        let mut inner = self.lock();
        let entry = inner.get(id)?;
        if entry.info.status != SnapshotStatus::Pending {
            return Ok(entry.info.status);
        }
        let journal = entry.journal.clone().ok_or_else(|| {
            StoreError::corrupt(format!("snapshot {id}"), "pending, but has no journal")
        })?;
        let key = self.snapshot_key(&entry.meta)?;
        // Data before maps: every block the map will name must be durable first.
        inner.packs.seal()?;
        let mut writer = MapWriter::create(&self.snapshot_path(id, "map"))?;
        for record in journal.records() {
            let record = record?;
            writer.push(&record, &encrypted::checksum(key.as_deref(), &record))?;
        }
        let (map, written, own) = writer.finish()?;
        if let Err(e) = rules::check_complete(id, count, aggregate, written, own) {
            map.discard();
            return Err(e);
        }
        map.commit()?;
        let entry = inner.get_mut(id)?;
        entry.meta.status = SnapshotStatus::Completed.as_str().into();
        entry.meta.changed_blocks_count = Some(written);
        entry.meta.aggregate = Some(own.to_base64());
        self.save_meta(&entry.meta)?;
        entry.info = entry.meta.to_info()?;
        entry.journal = None;
        // The snapshot is complete whatever happens now: a journal left behind is
        // ignored (completed snapshots read their map) and removed by the next delete.
        if let Err(e) = remove_if_present(journal.path()) {
            tracing::warn!("{id} is completed, but its journal stays: {e}");
        }
        Ok(SnapshotStatus::Completed)
    }
}

pub(super) fn sync_snapshots_dir(root: &Path) -> StoreResult<()> {
    let dir = root.join("snapshots");
    sync_dir(&dir).map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}

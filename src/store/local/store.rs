//! The local store: opening it, and the `SnapshotStore` operations.

use super::chain::Chain;
use super::fsutil::{atomic_write, remove_if_present};
use super::layout::{check_format, create_layout, read_key, remove_temporaries, FORMAT_FILE};
use super::lock::{self, Access, StoreLock};
use super::map::{Journal, Location, MapFile, MapWriter, Record, ZERO_PACK};
use super::meta::{now_ms, Meta, META_VERSION};
use super::pack::Packs;
use crate::block::{BlockIndex, BufferPool, Digest, HashedBlock};
use crate::store::paging::{block_page, changed_page};
use crate::store::rules::{self, DEFAULT_TIMEOUT_MINUTES};
use crate::store::token::TokenKey;
use crate::store::types::merge_tags;
use crate::store::*;
use crate::sys::{sync_dir, LockWait};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Spare read buffers kept (32 MiB): enough for the blocks a restore has in flight.
const READ_BUFFERS_KEPT: usize = 64;

/// A snapshot store in a local directory. Cheap to clone; clones share one state.
#[derive(Clone, Debug)]
pub struct LocalStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub root: PathBuf,
    access: Access,
    key: TokenKey,
    /// Buffers for blocks read back: reused, because a fresh 512 KiB allocation per
    /// block cost a restore more system time (page faults, unmaps) than its hashing.
    read_buffers: Arc<BufferPool>,
    pub inner: Mutex<Inner>,
    /// Puts recorded so far, and (under the async lock) how many of them the last flush
    /// made durable: concurrent flushes share one seal (group commit), so a server that
    /// flushes after every put pays one fsync per group, not per block.
    puts_recorded: AtomicU64,
    flushed_through: tokio::sync::Mutex<u64>,
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

impl Entry {
    /// Moves the snapshot to `error` if it sat pending past its timeout.
    pub fn expire(&mut self) {
        let timeout = self.meta.timeout_minutes;
        rules::expire(&mut self.info.status, self.last_activity, timeout);
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

    /// Runs blocking store work off the async runtime.
    async fn blocking<T: Send + 'static>(
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
            if let Err(e) = inner.packs.seal() {
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

    /// Changes a snapshot's tags and saves its metadata.
    fn edit_tags(&self, id: &SnapshotId, edit: impl FnOnce(&mut Vec<Tag>)) -> StoreResult<()> {
        self.writable()?;
        let mut inner = self.lock();
        let entry = inner.get_mut(id)?;
        let mut tags = entry.info.tags.clone();
        edit(&mut tags);
        entry.meta.tags = tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        self.save_meta(&entry.meta)?;
        entry.info.tags = tags;
        Ok(())
    }

    fn start(&self, req: StartSnapshot) -> StoreResult<SnapshotInfo> {
        self.writable()?;
        let mut inner = self.lock();
        if let Some(token) = &req.client_token {
            let known = inner
                .snapshots
                .values_mut()
                .find(|e| e.meta.client_token.as_ref() == Some(token));
            if let Some(made) = known {
                made.expire();
                let made_by = made.meta.request_fingerprint.as_deref();
                return rules::replay_start(token, &req, made_by, &made.info);
            }
        }
        let parent = match &req.parent {
            Some(p) => Some(inner.get(p)?),
            None => None,
        };
        rules::check_start(&req, parent.map(|p| &p.info))?;
        let id = SnapshotId::generate();
        let meta = Meta {
            version: META_VERSION,
            id: id.to_string(),
            parent: req.parent.as_ref().map(|p| p.to_string()),
            lineage: parent.map_or_else(|| id.to_string(), |p| p.meta.lineage.clone()),
            status: SnapshotStatus::Pending.as_str().into(),
            volume_size_gib: req.volume_size_gib,
            start_time_ms: now_ms(),
            description: req.description.clone(),
            tags: req
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
            encrypted: req.encrypted || parent.is_some_and(|p| p.meta.encrypted),
            client_token: req.client_token.clone(),
            request_fingerprint: Some(rules::start_fingerprint(&req)),
            timeout_minutes: req.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES),
            changed_blocks_count: None,
            aggregate: None,
        };
        let journal = Arc::new(Journal::open(&self.snapshot_path(&id, "journal"))?);
        self.save_meta(&meta)?;
        let info = meta.to_info()?;
        inner.snapshots.insert(
            id,
            Entry {
                info: info.clone(),
                meta,
                last_activity: SystemTime::now(),
                journal: Some(journal),
            },
        );
        Ok(info)
    }

    fn put(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        self.writable()?;
        let digest = block.digest();
        let (location, writer) = {
            let mut inner = self.lock();
            let entry = inner.get_mut(id)?;
            rules::check_put(&entry.info, index, &block, checksum)?;
            entry.last_activity = SystemTime::now();
            if block.is_zero() {
                (
                    Location {
                        pack: ZERO_PACK,
                        slot: 0,
                    },
                    None,
                )
            } else if let Some(found) = inner.packs.find(digest)? {
                (found, None)
            } else {
                let writer = inner.packs.reserve()?;
                (writer.location, Some(writer))
            }
        };
        // The data is written without holding the lock, so puts run in parallel.
        if let Some(writer) = &writer {
            writer.write(block.data()).map_err(|e| match e {
                StoreError::Io { context, source } => {
                    StoreError::io(format!("block {index} of {id}: {context}"), source)
                }
                other => other,
            })?;
        }
        // Recording the block happens under the lock: a completion or a garbage
        // collection that ran meanwhile is seen here, never raced.
        let mut inner = self.lock();
        if writer.is_some() {
            inner.packs.written(location, digest);
        }
        let entry = inner.get_mut(id)?;
        rules::check_put(&entry.info, index, &block, checksum)?;
        let journal = entry.journal.as_ref().ok_or_else(|| {
            StoreError::corrupt(format!("snapshot {id}"), "pending, but has no journal")
        })?;
        journal.write(&Record {
            index,
            location,
            digest,
        })?;
        self.puts_recorded.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Seals the packs (data, then idx) and syncs the journals of pending snapshots:
    /// every put recorded so far survives a crash from here on, whichever snapshot it
    /// went to. (So even a flush for a snapshot that completed meanwhile does it all:
    /// the caller counts it as covering every put recorded before it began.)
    fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        self.writable()?;
        let mut inner = self.lock();
        inner.get(id)?;
        inner.packs.seal()?;
        for entry in inner.snapshots.values() {
            if let Some(journal) = &entry.journal {
                journal.sync()?;
            }
        }
        Ok(())
    }

    fn complete(
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
        // Data before maps: every block the map will name must be durable first.
        inner.packs.seal()?;
        let mut writer = MapWriter::create(&self.snapshot_path(id, "map"))?;
        for record in journal.records() {
            writer.push(&record?)?;
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

    fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        let (info, chain) = self.lock().readable_chain(id)?;
        block_page(&self.key, &info, &page, |start| {
            chain.iter_from(start).map(|r| r.index)
        })
    }

    fn list_changed(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let (first_chain, (info, second_chain)) = {
            let mut inner = self.lock();
            let first_chain = match first {
                Some(f) => {
                    let first_lineage = inner.get(f)?.meta.lineage.clone();
                    if first_lineage != inner.get(second)?.meta.lineage {
                        return Err(rules::unrelated(f, second));
                    }
                    inner.readable_chain(f)?.1
                }
                None => Chain::default(),
            };
            (first_chain, inner.readable_chain(second)?)
        };
        changed_page(&self.key, first, &info, &page, |start| {
            (
                first_chain.iter_from(start).map(|r| (r.index, r.digest)),
                second_chain.iter_from(start).map(|r| (r.index, r.digest)),
            )
        })
    }

    fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let (record, file) = {
            let mut inner = self.lock();
            let (_, chain) = inner.readable_chain(id)?;
            self.key.check_block_token(id, index, token)?;
            let record = chain.get(index).ok_or_else(|| {
                StoreError::invalid(
                    ValidationReason::InvalidBlockToken,
                    format!("snapshot {id} holds no block {index}"),
                )
            })?;
            let file = match record.location.pack {
                ZERO_PACK => None,
                pack => Some(inner.packs.file(pack)?),
            };
            (record, file)
        };
        let Some(file) = file else {
            return Ok(FetchedBlock {
                data: HashedBlock::zero().data().clone(),
                checksum: record.digest,
            });
        };
        let mut buf = self.read_buffers.take();
        Packs::read(&file, record.location, &mut buf).map_err(|e| {
            StoreError::io(
                format!(
                    "reading block {index} of {id} from pack {:08x} slot {}",
                    record.location.pack, record.location.slot
                ),
                e,
            )
        })?;
        Ok(FetchedBlock {
            data: self.read_buffers.freeze(buf),
            checksum: record.digest,
        })
    }
}

#[async_trait]
impl SnapshotStore for LocalStore {
    fn identity(&self) -> String {
        let root =
            std::fs::canonicalize(&self.shared.root).unwrap_or_else(|_| self.shared.root.clone());
        format!("local:{}", root.display())
    }

    async fn start_snapshot(&self, request: StartSnapshot) -> StoreResult<SnapshotInfo> {
        self.blocking(move |s| s.start(request)).await
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        let id = id.clone();
        self.blocking(move |s| s.put(&id, index, block, checksum))
            .await
    }

    async fn flush(&self, id: &SnapshotId) -> StoreResult<()> {
        let wanted = self.shared.puts_recorded.load(Ordering::SeqCst);
        let mut flushed = self.shared.flushed_through.lock().await;
        if *flushed >= wanted {
            return Ok(()); // a flush that started after our puts covered them
        }
        let now = self.shared.puts_recorded.load(Ordering::SeqCst);
        let id = id.clone();
        self.blocking(move |s| s.flush(&id)).await?;
        *flushed = now;
        Ok(())
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        let id = id.clone();
        self.blocking(move |s| s.complete(&id, count, aggregate))
            .await
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        let id = id.clone();
        self.blocking(move |s| s.list_blocks(&id, page)).await
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let (first, second) = (first.cloned(), second.clone());
        self.blocking(move |s| s.list_changed(first.as_ref(), &second, page))
            .await
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let (id, token) = (id.clone(), token.clone());
        self.blocking(move |s| s.get_block(&id, index, &token))
            .await
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        let id = id.clone();
        self.blocking(move |s| Ok(s.lock().get(&id)?.info.clone()))
            .await
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        self.blocking(|s| {
            let mut inner = s.lock();
            let ids: Vec<SnapshotId> = inner.snapshots.keys().cloned().collect();
            let mut all = ids
                .iter()
                .map(|id| inner.get(id).map(|e| e.info.clone()))
                .collect::<StoreResult<Vec<_>>>()?;
            all.sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
            Ok(all)
        })
        .await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        let id = id.clone();
        self.blocking(move |s| s.delete(&id)).await
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        rules::check_tags(tags)?;
        let (id, tags) = (id.clone(), tags.to_vec());
        self.blocking(move |s| s.edit_tags(&id, |all| merge_tags(all, &tags)))
            .await
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        let (id, tags) = (id.clone(), tags.to_vec());
        self.blocking(move |s| {
            s.edit_tags(&id, |all| {
                all.retain(|t| !tags.iter().any(|f| f.matches(t)))
            })
        })
        .await
    }
}

pub(super) fn sync_snapshots_dir(root: &Path) -> StoreResult<()> {
    let dir = root.join("snapshots");
    sync_dir(&dir).map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}

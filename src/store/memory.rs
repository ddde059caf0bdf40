//! An in-memory store with full EBS semantics, for tests. Nothing persists.

use super::paging::{block_page, changed_page};
use super::rules::{self, DEFAULT_TIMEOUT_MINUTES};
use super::token::TokenKey;
use super::types::merge_tags;
use super::*;
use crate::block::{LinearAggregate, BLOCK_SIZE};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Clone)]
struct Stored {
    data: Bytes,
    digest: Digest,
}

struct Snapshot {
    info: SnapshotInfo,
    lineage: SnapshotId,
    client_token: Option<String>,
    fingerprint: String,
    timeout_minutes: u32,
    last_activity: SystemTime,
    /// Every block the snapshot holds, inherited ones included.
    blocks: BTreeMap<BlockIndex, Stored>,
    /// The blocks written to this snapshot itself.
    own: BTreeMap<BlockIndex, Digest>,
}

impl Snapshot {
    /// Moves the snapshot to `error` if it sat pending past its timeout.
    fn expire(&mut self) {
        rules::expire(
            &mut self.info.status,
            self.last_activity,
            self.timeout_minutes,
        );
    }
}

#[derive(Default)]
struct State {
    snapshots: HashMap<SnapshotId, Snapshot>,
    /// Creation order, for listing oldest first.
    order: Vec<SnapshotId>,
}

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    key: TokenKey,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} snapshots", self.order.len())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            key: TokenKey::random(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The snapshot, with an idle pending one moved to `error` first.
    fn get(&mut self, id: &SnapshotId) -> StoreResult<&mut Snapshot> {
        let snap = self
            .snapshots
            .get_mut(id)
            .ok_or_else(|| StoreError::snapshot_not_found(id))?;
        snap.expire();
        Ok(snap)
    }

    fn readable(&mut self, id: &SnapshotId) -> StoreResult<&Snapshot> {
        let snap = self.get(id)?;
        rules::check_readable(&snap.info)?;
        Ok(snap)
    }

    /// The snapshot started with `token` (one idle past its timeout says `error`).
    fn by_client_token(&mut self, token: &str) -> Option<&Snapshot> {
        let made = self
            .snapshots
            .values_mut()
            .find(|s| s.client_token.as_deref() == Some(token))?;
        made.expire();
        Some(made)
    }
}

fn digests(
    blocks: &BTreeMap<BlockIndex, Stored>,
    from: BlockIndex,
) -> impl Iterator<Item = (BlockIndex, Digest)> + '_ {
    blocks.range(from..).map(|(i, s)| (*i, s.digest))
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    fn identity(&self) -> String {
        format!("memory:{:p}", self)
    }

    async fn start_snapshot(&self, req: StartSnapshot) -> StoreResult<SnapshotInfo> {
        let mut state = self.lock();
        if let Some(token) = &req.client_token {
            if let Some(made) = state.by_client_token(token) {
                return rules::replay_start(token, &req, Some(&made.fingerprint), &made.info);
            }
        }
        let parent = match &req.parent {
            Some(p) => Some(state.get(p)?),
            None => None,
        };
        rules::check_start(&req, parent.as_ref().map(|p| &p.info))?;
        let id = SnapshotId::generate();
        let (lineage, blocks, encrypted) = match parent {
            Some(p) => (p.lineage.clone(), p.blocks.clone(), p.info.encrypted),
            None => (id.clone(), BTreeMap::new(), req.encrypted),
        };
        let info = SnapshotInfo {
            id: id.clone(),
            parent: req.parent.clone(),
            status: SnapshotStatus::Pending,
            volume_size_gib: req.volume_size_gib,
            block_size: BLOCK_SIZE as u32,
            start_time: SystemTime::now(),
            description: req.description.clone(),
            tags: req.tags.clone(),
            encrypted,
            kms_key_arn: None,
            changed_blocks_count: None,
            aggregate: None,
        };
        let snapshot = Snapshot {
            info: info.clone(),
            lineage,
            client_token: req.client_token.clone(),
            fingerprint: rules::start_fingerprint(&req),
            timeout_minutes: req.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES),
            last_activity: SystemTime::now(),
            blocks,
            own: BTreeMap::new(),
        };
        state.snapshots.insert(id.clone(), snapshot);
        state.order.push(id);
        Ok(info)
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let snap = state.get(id)?;
        rules::check_put(&snap.info, index, &block, checksum)?;
        snap.last_activity = SystemTime::now();
        snap.own.insert(index, block.digest());
        snap.blocks.insert(
            index,
            Stored {
                digest: block.digest(),
                data: block.data().clone(),
            },
        );
        Ok(())
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        let mut state = self.lock();
        let snap = state.get(id)?;
        if snap.info.status != SnapshotStatus::Pending {
            return Ok(snap.info.status);
        }
        let own = own_aggregate(&snap.own);
        rules::check_complete(id, count, aggregate, snap.own.len() as u64, own)?;
        snap.info.status = SnapshotStatus::Completed;
        snap.info.changed_blocks_count = Some(count);
        snap.info.aggregate = Some(own);
        Ok(SnapshotStatus::Completed)
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        let mut state = self.lock();
        let snap = state.readable(id)?;
        block_page(&self.key, &snap.info, &page, |start| {
            snap.blocks.range(start..).map(|(i, _)| *i)
        })
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let mut state = self.lock();
        let (first_blocks, first_lineage) = match first {
            Some(f) => {
                let s = state.readable(f)?;
                (s.blocks.clone(), Some(s.lineage.clone()))
            }
            None => (BTreeMap::new(), None),
        };
        let snap = state.readable(second)?;
        if let (Some(f), Some(lineage)) = (first, &first_lineage) {
            if *lineage != snap.lineage {
                return Err(rules::unrelated(f, second));
            }
        }
        changed_page(&self.key, first, &snap.info, &page, |start| {
            (digests(&first_blocks, start), digests(&snap.blocks, start))
        })
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let mut state = self.lock();
        let snap = state.readable(id)?;
        self.key.check_block_token(id, index, token)?;
        let stored = snap.blocks.get(&index).ok_or_else(|| {
            StoreError::invalid(
                ValidationReason::InvalidBlockToken,
                format!("snapshot {id} holds no block {index}"),
            )
        })?;
        Ok(FetchedBlock {
            data: stored.data.clone(),
            checksum: stored.digest,
        })
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        Ok(self.lock().get(id)?.info.clone())
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        let mut state = self.lock();
        let order = state.order.clone();
        order
            .iter()
            .map(|id| state.get(id).map(|s| s.info.clone()))
            .collect()
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        let mut state = self.lock();
        state.get(id)?;
        let children: Vec<(SnapshotId, SnapshotStatus)> = state
            .snapshots
            .values()
            .filter(|s| s.info.parent.as_ref() == Some(id))
            .map(|s| (s.info.id.clone(), s.info.status))
            .collect();
        rules::check_delete(id, &children)?;
        let gone = state
            .snapshots
            .remove(id)
            .ok_or_else(|| StoreError::snapshot_not_found(id))?;
        state.order.retain(|s| s != id);
        // Children keep their blocks (they hold them all); what the deleted snapshot wrote
        // becomes theirs, as if they had written it.
        for child in state
            .snapshots
            .values_mut()
            .filter(|s| s.info.parent.as_ref() == Some(id))
        {
            child.info.parent = gone.info.parent.clone();
            for (index, digest) in &gone.own {
                child.own.entry(*index).or_insert(*digest);
            }
            if child.info.status == SnapshotStatus::Completed {
                child.info.changed_blocks_count = Some(child.own.len() as u64);
                child.info.aggregate = Some(own_aggregate(&child.own));
            }
        }
        Ok(())
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        rules::check_tags(tags)?;
        let mut state = self.lock();
        merge_tags(&mut state.get(id)?.info.tags, tags)
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        let mut state = self.lock();
        state
            .get(id)?
            .info
            .tags
            .retain(|t| !tags.iter().any(|f| f.matches(t)));
        Ok(())
    }
}

fn own_aggregate(own: &BTreeMap<BlockIndex, Digest>) -> Digest {
    let mut agg = LinearAggregate::new();
    for (index, digest) in own {
        agg.push(*index, digest).expect("a BTreeMap ascends");
    }
    agg.finish()
}

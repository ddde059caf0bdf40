//! Starting snapshots (within the cap on pending ones, leaving nothing behind when a
//! start fails) and changing their tags.

use super::fsutil::remove_if_present;
use super::journal::Journal;
use super::meta::{now_ms, Meta, META_VERSION};
use super::store::{sync_snapshots_dir, Entry, Inner, Shared};
use crate::store::rules::{self, DEFAULT_TIMEOUT_MINUTES};
use crate::store::types::merge_tags;
use crate::store::*;
use std::sync::Arc;
use std::time::SystemTime;

impl Shared {
    pub(super) fn start(&self, req: StartSnapshot) -> StoreResult<SnapshotInfo> {
        self.writable()?;
        let mut inner = self.lock();
        if let Some(replayed) = replay(&mut inner, &req) {
            return replayed;
        }
        rules::check_pending(pending_count(&mut inner), self.max_pending())?;
        let parent = match &req.parent {
            Some(p) => Some(inner.get(p)?),
            None => None,
        };
        rules::check_start(&req, parent.map(|p| &p.info))?;
        let key = self.start_key(&req, parent.map(|p| &p.meta))?;
        let id = SnapshotId::generate();
        let mut meta = new_meta(&id, &req, parent.map(|p| &p.meta));
        if let Some(key) = key {
            // `encrypted` is set already: a key is found only for an encrypted start.
            meta.key_id = Some(key.id.clone());
            meta.key_name = Some(key.name.clone());
            meta.kms_key_arn =
                parent.map_or(req.kms_key_arn.clone(), |p| p.meta.kms_key_arn.clone());
        }
        let journal = self.create_files(&id, &meta)?;
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

    /// The snapshot's journal and metadata. If either cannot be made durable, both are
    /// removed: a start that was refused leaves no snapshot to be found after a restart
    /// (metadata renamed into place before a failed directory sync would show as
    /// pending), and no journal to be mistaken for one.
    fn create_files(&self, id: &SnapshotId, meta: &Meta) -> StoreResult<Arc<Journal>> {
        let made = Journal::open(&self.snapshot_path(id, "journal"))
            .and_then(|journal| self.save_meta(meta).map(|()| journal));
        match made {
            Ok(journal) => Ok(Arc::new(journal)),
            Err(e) => {
                self.undo_start(id);
                Err(e)
            }
        }
    }

    /// Removes what a failed start made, as far as the filesystem lets it.
    fn undo_start(&self, id: &SnapshotId) {
        let removed = remove_if_present(&self.snapshot_path(id, "json"))
            .and_then(|()| remove_if_present(&self.snapshot_path(id, "journal")))
            .and_then(|()| sync_snapshots_dir(&self.root));
        if let Err(e) = removed {
            tracing::warn!("cleaning up after the failed start of {id}: {e}");
        }
    }

    /// Changes a snapshot's tags and saves its metadata.
    pub(super) fn edit_tags(
        &self,
        id: &SnapshotId,
        edit: impl FnOnce(&mut Vec<Tag>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        self.writable()?;
        let mut inner = self.lock();
        let entry = inner.get_mut(id)?;
        let mut tags = entry.info.tags.clone();
        edit(&mut tags)?;
        let before = std::mem::replace(&mut entry.meta.tags, pairs(&tags));
        if let Err(e) = self.save_meta(&entry.meta) {
            entry.meta.tags = before;
            return Err(e);
        }
        entry.info.tags = tags;
        Ok(())
    }

    pub(super) fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        self.edit_tags(id, |all| merge_tags(all, tags))
    }
}

/// The answer to a StartSnapshot that repeats a client token already used, if it does.
fn replay(inner: &mut Inner, req: &StartSnapshot) -> Option<StoreResult<SnapshotInfo>> {
    let token = req.client_token.as_ref()?;
    let made = inner
        .snapshots
        .values_mut()
        .find(|e| e.meta.client_token.as_ref() == Some(token))?;
    made.expire();
    let made_by = made.meta.request_fingerprint.as_deref();
    Some(rules::replay_start(token, req, made_by, &made.info))
}

/// Snapshots pending now (those idle past their timeout have gone to `error`, and no
/// longer count).
fn pending_count(inner: &mut Inner) -> usize {
    let mut pending = 0;
    for entry in inner.snapshots.values_mut() {
        entry.expire();
        pending += usize::from(entry.info.status == SnapshotStatus::Pending);
    }
    pending
}

fn pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

fn new_meta(id: &SnapshotId, req: &StartSnapshot, parent: Option<&Meta>) -> Meta {
    Meta {
        version: META_VERSION,
        id: id.to_string(),
        parent: req.parent.as_ref().map(|p| p.to_string()),
        lineage: parent.map_or_else(|| id.to_string(), |p| p.lineage.clone()),
        status: SnapshotStatus::Pending.as_str().into(),
        volume_size_gib: req.volume_size_gib,
        start_time_ms: now_ms(),
        description: req.description.clone(),
        tags: pairs(&req.tags),
        encrypted: req.encrypted || parent.is_some_and(|p| p.encrypted),
        key_id: None,
        key_name: None,
        kms_key_arn: None,
        client_token: req.client_token.clone(),
        request_fingerprint: Some(rules::start_fingerprint(req)),
        timeout_minutes: req.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES),
        changed_blocks_count: None,
        aggregate: None,
    }
}

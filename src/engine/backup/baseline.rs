//! What the parent snapshot holds, block by block, as far as a backup needs to know it
//! to send only what changed.
//!
//! The source's manifest (the BLAKE3 digest of every block at its last backup) answers
//! for each block, provided it describes the parent. Where it cannot be trusted (it
//! describes another snapshot, or there is none), the store answers which blocks hold
//! data in the parent (ListChangedBlocks from the manifest's snapshot, or
//! ListSnapshotBlocks), but not what: those blocks are sent if they hold data here.

use crate::block::identity::SourceIdentity;
use crate::block::manifest::{ContentDigest, Entry, Manifest};
use crate::block::BlockIndex;
pub(crate) use crate::engine::bitmap::Bitmap;
use crate::engine::pages::{BlockLister, ChangedLister};
use crate::engine::{described_completed, DEVICE_ID_TAG, SOURCE_PATH_TAG};
use crate::engine::{Error, Result};
use crate::store::{
    SnapshotId, SnapshotInfo, SnapshotStatus, SnapshotStore, StoreError, ValidationReason,
};

/// One block of the parent, as far as is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParentBlock {
    /// The parent reads zeros here.
    Zero,
    /// The parent holds this content here.
    Data(ContentDigest),
    /// Content unknown; whether the parent holds data here is known.
    Unknown { has_data: bool },
}

#[derive(Debug, Default)]
pub(crate) struct Baseline {
    /// The parent, if any.
    pub parent: Option<SnapshotInfo>,
    /// A manifest that describes the parent, except at the indexes in `untrusted`.
    manifest: Option<Manifest>,
    untrusted: Bitmap,
    /// Where the manifest cannot answer: the indexes at which the parent holds data.
    parent_data: Bitmap,
    /// Whether the parent is encrypted (its absent blocks do not read as zeros).
    encrypted: bool,
    /// Indexes an interrupted run already put into the snapshot being resumed (and the
    /// range where its last puts may have landed unrecorded): the snapshot may no
    /// longer hold the parent's block there, so each is visited and written again
    /// unless it is known to hold the source's content already.
    rewrite: Bitmap,
    uncertain: std::ops::Range<u64>,
}

impl Baseline {
    /// No parent: a new lineage.
    pub fn none(encrypted: bool) -> Baseline {
        Baseline {
            encrypted,
            ..Baseline::default()
        }
    }

    /// Marks the indexes an interrupted run already put (see `rewrite`).
    pub fn resuming(mut self, put: Bitmap, uncertain: std::ops::Range<u64>) -> Baseline {
        self.rewrite = put;
        self.uncertain = uncertain;
        self
    }

    /// Whether an interrupted run put (or may have put) a block at `i`.
    pub fn was_put(&self, i: BlockIndex) -> bool {
        self.rewrite.get(i) || self.put_in_doubt(i)
    }

    /// Whether the interrupted run's record of `i` may be missing or stale: a put
    /// there may have landed after its last checkpoint. Such a block is put again.
    pub fn put_in_doubt(&self, i: BlockIndex) -> bool {
        self.uncertain.contains(&i.0)
    }

    /// Whether the interrupted run's record of `i` can be trusted: it put a block
    /// there, before its last checkpoint.
    pub fn put_recorded(&self, i: BlockIndex) -> bool {
        self.rewrite.get(i) && !self.put_in_doubt(i)
    }

    pub fn block(&self, i: BlockIndex) -> ParentBlock {
        if self.parent.is_none() {
            return ParentBlock::Unknown { has_data: false };
        }
        match &self.manifest {
            Some(m) if !self.untrusted.get(i) => match m.entry(i.0) {
                Entry::Zero => ParentBlock::Zero,
                Entry::Data(d) => ParentBlock::Data(d),
                // Beyond the manifest: the parent's source ended before; it reads zeros.
                Entry::Unknown => ParentBlock::Unknown { has_data: false },
            },
            _ => ParentBlock::Unknown {
                has_data: self.parent_data.get(i),
            },
        }
    }

    /// Whether a block of zeros at `i` must be written: where the parent holds (or may
    /// hold) data, and, in an encrypted snapshot, wherever the parent is not known to
    /// hold zeros (absent blocks there read as random data).
    pub fn zero_needs_write(&self, i: BlockIndex) -> bool {
        if self.was_put(i) {
            return true;
        }
        match self.block(i) {
            ParentBlock::Zero => false,
            ParentBlock::Data(_) => true,
            ParentBlock::Unknown { has_data } => has_data || self.encrypted,
        }
    }

    /// The first index at or after `from` at which a block of zeros may need writing
    /// (see [`Baseline::zero_needs_write`]): the holes of the source between are
    /// skipped, as the holes of the manifest and of the bitmaps are. `None`: none.
    pub fn next_zero_candidate(&self, from: u64) -> std::io::Result<Option<u64>> {
        if self.encrypted {
            return Ok(Some(from));
        }
        let uncertain = (from < self.uncertain.end).then(|| from.max(self.uncertain.start));
        let manifest = match (&self.parent, &self.manifest) {
            (Some(_), Some(m)) => m.next_data(from)?,
            _ => None,
        };
        let bitmaps = [&self.rewrite, &self.parent_data].map(|b| b.next_set(from));
        Ok([uncertain, manifest, bitmaps[0], bitmaps[1]]
            .into_iter()
            .flatten()
            .min())
    }

    /// Whether the backup must visit holes of the source (to zero what the parent
    /// holds there); a new, unencrypted lineage need not.
    pub fn visits_holes(&self) -> bool {
        self.parent.is_some() || self.encrypted || self.rewrite_end() > 0
    }

    fn rewrite_end(&self) -> u64 {
        let uncertain = if self.uncertain.is_empty() {
            0
        } else {
            self.uncertain.end
        };
        self.rewrite.end().max(uncertain)
    }

    /// One past the last block the parent may hold data in.
    pub fn end(&self) -> u64 {
        let manifest = self.manifest.as_ref().map_or(0, |m| m.header().blocks);
        manifest.max(self.parent_data.end()).max(self.rewrite_end())
    }

    pub fn encrypted(&self) -> bool {
        self.encrypted
    }
}

/// How the parent is chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The source's last completed snapshot in this store.
    #[default]
    Auto,
    /// This snapshot.
    Snapshot(SnapshotId),
    /// None: a new lineage.
    Full,
}

/// Finds the parent: the manifest's snapshot if it is still there and completed, else
/// the newest completed snapshot of the same source in the store.
pub(crate) async fn choose_parent(
    store: &dyn SnapshotStore,
    choice: &ParentChoice,
    manifest: Option<&Manifest>,
    source: &SourceIdentity,
) -> Result<Option<SnapshotInfo>> {
    match choice {
        ParentChoice::Full => Ok(None),
        ParentChoice::Snapshot(id) => Ok(Some(described_completed(store, id).await?)),
        ParentChoice::Auto => {
            if let Some(id) =
                manifest.and_then(|m| m.header().snapshot_id.parse::<SnapshotId>().ok())
            {
                match store.describe_snapshot(&id).await {
                    Ok(info) if info.status == SnapshotStatus::Completed => return Ok(Some(info)),
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(Error::store(&id)(e)),
                }
            }
            Ok(last_of(store.list_snapshots().await?, source))
        }
    }
}

/// The newest completed snapshot of `source` among `all` (oldest first).
///
/// A device's snapshots are found by its stable id. Those made before ids were
/// recorded name the device by path; the newest of them continues the lineage while
/// the device has none of its own yet, and only if no snapshot with an id already
/// continues it: a disk that appeared under the old name later starts its own.
/// (Were the guess wrong, the backup would still be whole: blocks are compared by
/// content, so the cost of a wrong parent is blocks sent, not blocks lost.)
fn last_of(all: Vec<SnapshotInfo>, source: &SourceIdentity) -> Option<SnapshotInfo> {
    let completed = || {
        all.iter()
            .rev()
            .filter(|s| s.status == SnapshotStatus::Completed)
    };
    if let Some(own) = completed().find(|s| s.tag(SOURCE_PATH_TAG) == Some(&source.key)) {
        return Some(own.clone());
    }
    let continued: std::collections::HashSet<&SnapshotId> = all
        .iter()
        .filter(|s| s.tag(DEVICE_ID_TAG).is_some())
        .filter_map(|s| s.parent.as_ref())
        .collect();
    completed()
        .find(|s| {
            s.tag(DEVICE_ID_TAG).is_none()
                && s.tag(SOURCE_PATH_TAG) == Some(&source.path)
                && !continued.contains(&s.id)
        })
        .cloned()
}

/// Builds what is known of `parent`, trusting `manifest` where it applies.
pub(crate) async fn baseline(
    store: &dyn SnapshotStore,
    parent: Option<SnapshotInfo>,
    manifest: Option<Manifest>,
    encrypted: bool,
) -> Result<Baseline> {
    let Some(parent) = parent else {
        return Ok(Baseline::none(encrypted));
    };
    let encrypted = encrypted || parent.encrypted;
    let described = manifest
        .as_ref()
        .and_then(|m| m.header().snapshot_id.parse::<SnapshotId>().ok());
    if let (Some(m), Some(id)) = (manifest, described) {
        if id == parent.id {
            return Ok(Baseline {
                parent: Some(parent),
                manifest: Some(m),
                encrypted,
                ..Baseline::default()
            });
        }
        // The manifest describes another snapshot M: the blocks that differ between M
        // and the parent are the ones it cannot answer for.
        match changed_since(store, &id, &parent).await {
            Ok((untrusted, parent_data)) => {
                return Ok(Baseline { parent: Some(parent), manifest: Some(m), untrusted, parent_data, encrypted, ..Baseline::default() });
            }
            Err(e) if unusable(&e) => tracing::info!("the manifest's snapshot {id} cannot be compared with {}: {e}; reading the parent's block list", parent.id),
            Err(e) => return Err(Error::store(&parent.id)(e)),
        }
    }
    let parent_data = listed_blocks(store, &parent.id)
        .await
        .map_err(Error::store(&parent.id))?;
    Ok(Baseline {
        parent: Some(parent),
        manifest: None,
        untrusted: Bitmap::default(),
        parent_data,
        encrypted,
        ..Baseline::default()
    })
}

/// A manifest's snapshot that is gone, or of another lineage, is no use.
fn unusable(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound { .. })
        || matches!(
            e.reason(),
            Some(ValidationReason::UnrelatedSnapshots | ValidationReason::InvalidSnapshotId)
        )
}

/// The indexes that differ between the snapshot a manifest describes and the parent,
/// and among them those at which the parent holds data.
///
/// ListChangedBlocks is asked older snapshot first (as the service expects); the
/// parent's side of each answer says whether it holds data there.
async fn changed_since(
    store: &dyn SnapshotStore,
    described: &SnapshotId,
    parent: &SnapshotInfo,
) -> Result<(Bitmap, Bitmap), StoreError> {
    let other = store.describe_snapshot(described).await?;
    let parent_first = parent.start_time <= other.start_time;
    let (first, second) = if parent_first {
        (&parent.id, described)
    } else {
        (described, &parent.id)
    };
    let (mut changed, mut data) = (Bitmap::default(), Bitmap::default());
    let mut pages = ChangedLister::new(store, Some(first), second);
    while let Some(page) = pages.next_page().await? {
        for b in &page {
            changed.set(b.index);
            let parent_side = if parent_first {
                &b.first_token
            } else {
                &b.second_token
            };
            if parent_side.is_some() {
                data.set(b.index);
            }
        }
    }
    Ok((changed, data))
}

/// The indexes at which a snapshot holds data.
async fn listed_blocks(store: &dyn SnapshotStore, id: &SnapshotId) -> Result<Bitmap, StoreError> {
    let mut data = Bitmap::default();
    let mut pages = BlockLister::new(store, id);
    while let Some(page) = pages.next_page().await? {
        for b in &page {
            data.set(b.index);
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_parent_only_encrypted_snapshots_write_zeros() {
        assert!(!Baseline::none(false).zero_needs_write(BlockIndex(0)));
        assert!(Baseline::none(true).zero_needs_write(BlockIndex(0)));
        assert!(!Baseline::none(false).visits_holes());
    }

    /// A completed snapshot with these tags, child of `parent`.
    fn snapshot(parent: Option<&SnapshotInfo>, tags: &[(&str, &str)]) -> SnapshotInfo {
        SnapshotInfo {
            id: SnapshotId::generate(),
            parent: parent.map(|p| p.id.clone()),
            status: SnapshotStatus::Completed,
            volume_size_gib: 1,
            block_size: 524_288,
            start_time: std::time::SystemTime::UNIX_EPOCH,
            description: None,
            tags: tags
                .iter()
                .map(|(k, v)| crate::store::Tag::new(*k, *v))
                .collect(),
            encrypted: false,
            kms_key_arn: None,
            changed_blocks_count: Some(0),
            aggregate: None,
        }
    }

    fn device(key: &str, path: &str) -> SourceIdentity {
        SourceIdentity {
            path: path.into(),
            key: key.into(),
            stable_device_id: true,
        }
    }

    #[test]
    fn a_snapshot_from_before_ids_continues_the_first_disk_found_under_its_path_only() {
        let legacy = snapshot(None, &[(SOURCE_PATH_TAG, "/dev/sdb")]);
        let (disk_a, disk_b) = (device("wwn-a", "/dev/sdb"), device("wwn-b", "/dev/sdb"));
        // The first backup with ids continues the old lineage.
        let parent = last_of(vec![legacy.clone()], &disk_a).map(|p| p.id);
        assert_eq!(parent, Some(legacy.id.clone()));
        let ided = [(SOURCE_PATH_TAG, "wwn-a"), (DEVICE_ID_TAG, "wwn-a")];
        let child = snapshot(Some(&legacy), &ided);
        let all = vec![legacy, child.clone()];
        assert_eq!(last_of(all.clone(), &disk_a).map(|p| p.id), Some(child.id));
        // Another disk under /dev/sdb later: the old lineage is taken.
        assert_eq!(last_of(all.clone(), &disk_b), None);
        // A disk that is only a path (no id) finds the snapshots of that path.
        let bare = SourceIdentity {
            stable_device_id: false,
            ..device("/dev/sdb", "/dev/sdb")
        };
        assert_eq!(
            last_of(all, &bare).map(|p| p.tags[0].value.clone()),
            Some("/dev/sdb".into())
        );
    }
}

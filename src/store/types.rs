//! The values that cross the [`SnapshotStore`](super::SnapshotStore) trait.

use super::{StoreError, ValidationReason};
use crate::block::{BlockIndex, Digest, BLOCK_SIZE};
use bytes::Bytes;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// An EBS-style snapshot id: `snap-` followed by 17 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut raw = [0u8; 9];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        SnapshotId(format!("snap-{}", &hex[..17]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let ok = s.strip_prefix("snap-").is_some_and(|hex| {
            hex.len() == 17 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(SnapshotId(s.to_owned()))
        } else {
            Err(StoreError::invalid(
                ValidationReason::InvalidSnapshotId,
                format!("{s:?} is not a snapshot id (snap- and 17 hex digits)"),
            ))
        }
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    Pending,
    Completed,
    Error,
}

impl SnapshotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Pending => "pending",
            SnapshotStatus::Completed => "completed",
            SnapshotStatus::Error => "error",
        }
    }
}

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A tag to remove: every tag with this key, or only the one with this value too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: Option<String>,
}

impl TagFilter {
    pub fn matches(&self, tag: &Tag) -> bool {
        tag.key == self.key && self.value.as_ref().is_none_or(|v| *v == tag.value)
    }
}

/// Applies CreateTags to a tag list: new keys are added, existing keys take the new value.
/// Linear (an index by key): a request with thousands of tags, merged one by one into a
/// list searched each time, held the store's lock for seconds. The tags stay in order
/// of first appearance. The merged list must fit EC2's limit of tags per snapshot, or
/// nothing changes.
pub(crate) fn merge_tags(tags: &mut Vec<Tag>, new: &[Tag]) -> super::StoreResult<()> {
    let mut merged = tags.clone();
    let mut at: std::collections::HashMap<String, usize> = merged
        .iter()
        .enumerate()
        .map(|(i, t)| (t.key.clone(), i))
        .collect();
    for tag in new {
        match at.get(&tag.key) {
            Some(&i) => merged[i].value = tag.value.clone(),
            None => {
                at.insert(tag.key.clone(), merged.len());
                merged.push(tag.clone());
            }
        }
    }
    super::rules::check_tag_count(merged.len())?;
    *tags = merged;
    Ok(())
}

/// The parameters of StartSnapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartSnapshot {
    pub volume_size_gib: u64,
    pub parent: Option<SnapshotId>,
    pub description: Option<String>,
    pub tags: Vec<Tag>,
    /// Idempotency token: the same token with the same parameters returns the same snapshot.
    pub client_token: Option<String>,
    /// Minutes a pending snapshot may sit idle before it goes to `error` (10 to 4320).
    pub timeout_minutes: Option<u32>,
    pub encrypted: bool,
    /// KMS key for an encrypted snapshot (EBS only; other stores ignore it).
    pub kms_key_arn: Option<String>,
}

impl StartSnapshot {
    pub fn new(volume_size_gib: u64) -> Self {
        StartSnapshot {
            volume_size_gib,
            parent: None,
            description: None,
            tags: Vec::new(),
            client_token: None,
            timeout_minutes: None,
            encrypted: false,
            kms_key_arn: None,
        }
    }
}

/// What a store knows about one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    pub parent: Option<SnapshotId>,
    pub status: SnapshotStatus,
    pub volume_size_gib: u64,
    pub block_size: u32,
    pub start_time: SystemTime,
    pub description: Option<String>,
    pub tags: Vec<Tag>,
    pub encrypted: bool,
    /// The KMS key an encrypted snapshot was started with, when one was named (the
    /// local store: the ARN that selected one of its keys). `None`: the default key.
    pub kms_key_arn: Option<String>,
    /// Blocks written to this snapshot (not inherited), once completed.
    pub changed_blocks_count: Option<u64>,
    /// LINEAR aggregate of the blocks written to this snapshot, once completed.
    pub aggregate: Option<Digest>,
}

impl SnapshotInfo {
    /// The KMS key the snapshot is encrypted with, as EBS reports it: only for an
    /// encrypted snapshot.
    pub fn kms_key(&self) -> Option<&str> {
        self.kms_key_arn.as_deref().filter(|_| self.encrypted)
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    /// Block size this store reports, checked against the one the engine works with.
    pub fn block_size_ok(&self) -> bool {
        self.block_size as usize == BLOCK_SIZE
    }
}

/// Opaque page token from a list call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageToken(pub String);

/// Opaque token that allows reading one block of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockToken(pub String);

/// Where a list call starts: a page token wins over the starting index.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub starting_block: BlockIndex,
    /// 100 to 10000; smaller values are clamped up; `None` means 10000.
    pub max_results: Option<u32>,
    pub token: Option<PageToken>,
}

impl PageRequest {
    pub fn from_token(token: Option<PageToken>) -> Self {
        PageRequest {
            token,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub index: BlockIndex,
    pub token: BlockToken,
}

#[derive(Clone, Debug)]
pub struct BlockPage {
    pub blocks: Vec<BlockRef>,
    pub next_token: Option<PageToken>,
    pub expiry_time: SystemTime,
    pub volume_size_gib: u64,
    pub block_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedBlock {
    pub index: BlockIndex,
    /// Absent where the first snapshot has no data at this index.
    pub first_token: Option<BlockToken>,
    pub second_token: Option<BlockToken>,
}

#[derive(Clone, Debug)]
pub struct ChangedBlockPage {
    pub blocks: Vec<ChangedBlock>,
    pub next_token: Option<PageToken>,
    pub expiry_time: SystemTime,
    pub volume_size_gib: u64,
    pub block_size: u32,
}

/// A block read back, with the checksum the store holds for it. The caller checks the
/// data against it: a store's word is not proof.
#[derive(Clone, Debug)]
pub struct FetchedBlock {
    pub data: Bytes,
    pub checksum: Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_bad_ids_do_not() {
        let id = SnapshotId::generate();
        assert_eq!(id.as_str().len(), 22);
        assert_eq!(id.as_str().parse::<SnapshotId>().unwrap(), id);
        for bad in [
            "snap-123",
            "snap-0123456789abcdefg",
            "vol-0123456789abcdef0",
            "snap-../../etc/x",
        ] {
            let err = bad.parse::<SnapshotId>().unwrap_err();
            assert_eq!(
                err.reason(),
                Some(ValidationReason::InvalidSnapshotId),
                "{bad}"
            );
        }
    }
}

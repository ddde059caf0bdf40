//! Snapshot metadata: one small JSON file per snapshot, replaced atomically.

use crate::block::{Digest, BLOCK_SIZE};
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStatus, StoreError, StoreResult, Tag};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const META_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub version: u32,
    pub id: String,
    pub parent: Option<String>,
    /// Id of the first snapshot of the lineage; survives deletions along the chain.
    pub lineage: String,
    pub status: String,
    pub volume_size_gib: u64,
    pub start_time_ms: u64,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    pub encrypted: bool,
    /// Encrypted snapshots: the id (fingerprint) and name of the key their blocks are
    /// encrypted with, and the KmsKeyArn that selected it (`None`: the default key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    pub client_token: Option<String>,
    /// Digest of the StartSnapshot parameters, for ClientToken retries.
    #[serde(default)]
    pub request_fingerprint: Option<String>,
    pub timeout_minutes: u32,
    pub changed_blocks_count: Option<u64>,
    pub aggregate: Option<String>,
}

impl Meta {
    pub fn to_info(&self) -> StoreResult<SnapshotInfo> {
        let bad = |m: String| StoreError::corrupt(format!("metadata of {}", self.id), m);
        let id = |s: &str| s.parse::<SnapshotId>().map_err(|e| bad(e.to_string()));
        let status = match self.status.as_str() {
            "pending" => SnapshotStatus::Pending,
            "completed" => SnapshotStatus::Completed,
            "error" => SnapshotStatus::Error,
            other => return Err(bad(format!("unknown status {other:?}"))),
        };
        let aggregate = match &self.aggregate {
            Some(a) => {
                Some(Digest::from_base64(a).ok_or_else(|| bad(format!("bad aggregate {a:?}")))?)
            }
            None => None,
        };
        Ok(SnapshotInfo {
            id: id(&self.id)?,
            parent: self.parent.as_deref().map(id).transpose()?,
            status,
            volume_size_gib: self.volume_size_gib,
            block_size: BLOCK_SIZE as u32,
            start_time: UNIX_EPOCH + Duration::from_millis(self.start_time_ms),
            description: self.description.clone(),
            tags: self.tags.iter().map(|(k, v)| Tag::new(k, v)).collect(),
            encrypted: self.encrypted,
            kms_key_arn: self.kms_key_arn.clone(),
            changed_blocks_count: self.changed_blocks_count,
            aggregate,
        })
    }

    pub fn start_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.start_time_ms)
    }

    pub fn parse(raw: &[u8], what: &str) -> StoreResult<Meta> {
        let meta: Meta = serde_json::from_slice(raw)
            .map_err(|e| StoreError::corrupt(what.to_owned(), e.to_string()))?;
        if meta.version != META_VERSION {
            return Err(StoreError::corrupt(
                what.to_owned(),
                format!(
                    "metadata version {} is not supported (this ebsnap reads {META_VERSION})",
                    meta.version
                ),
            ));
        }
        meta.to_info()?;
        Ok(meta)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("metadata serializes")
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

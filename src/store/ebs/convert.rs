//! The SDK boundary: every conversion between ebsnap's domain types (`u64` indexes
//! and sizes, [`SnapshotInfo`]) and the SDK's (`i32`/`i64`, EC2's `Snapshot`) is here,
//! and nowhere else.

use super::*;
use crate::block::{BlockIndex, Digest, BLOCK_SIZE};
use aws_sdk_ec2::types as ct;
use std::time::SystemTime;

/// Block indexes cross the SDK as `i32`.
pub(super) fn sdk_index(index: BlockIndex) -> StoreResult<i32> {
    i32::try_from(index.0).map_err(|_| {
        StoreError::invalid(
            ValidationReason::InvalidBlock,
            format!("block index {index} is out of range"),
        )
    })
}

pub(super) fn our_index(raw: Option<i32>) -> StoreResult<BlockIndex> {
    raw.and_then(|i| u64::try_from(i).ok())
        .map(BlockIndex)
        .ok_or_else(|| StoreError::Unavailable {
            message: "the service listed a block without a valid index".into(),
        })
}

pub(super) fn sdk_count(n: u64, what: &str) -> StoreResult<i32> {
    i32::try_from(n).map_err(|_| {
        StoreError::invalid(
            ValidationReason::InvalidParameterValue,
            format!("{what} {n} is out of range"),
        )
    })
}

/// A volume size from the SDK (GiB, `i64`); a missing or negative one reads as 0.
pub(super) fn gib(raw: Option<i64>) -> u64 {
    raw.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// A block size from the SDK (`i32`); checked against 524288 by the engine.
pub(super) fn block_size(raw: Option<i32>) -> u32 {
    raw.and_then(|b| u32::try_from(b).ok()).unwrap_or(0)
}

pub(super) fn status(raw: Option<&str>) -> SnapshotStatus {
    match raw {
        Some("completed") => SnapshotStatus::Completed,
        Some("pending") => SnapshotStatus::Pending,
        _ => SnapshotStatus::Error,
    }
}

pub(super) fn time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

pub(super) fn page_token(token: Option<String>) -> Option<PageToken> {
    token.filter(|t| !t.is_empty()).map(PageToken)
}

/// A snapshot as EC2 describes it, with ebsnap's own tags turned back into fields.
pub(super) fn from_ec2(s: &ct::Snapshot) -> StoreResult<SnapshotInfo> {
    let tag = |key: &str| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
    };
    let id: SnapshotId = s.snapshot_id().unwrap_or_default().parse()?;
    Ok(SnapshotInfo {
        id,
        parent: tag(PARENT_TAG).and_then(|p| p.parse().ok()),
        status: status(s.state().map(|st| st.as_str())),
        volume_size_gib: gib(s.volume_size().map(i64::from)),
        block_size: BLOCK_SIZE as u32,
        start_time: time(s.start_time()),
        description: s.description().filter(|d| !d.is_empty()).map(str::to_owned),
        tags: s
            .tags()
            .iter()
            // `ebsnap:managed` stays: it tells `forget` which snapshots are ebsnap's.
            .filter(|t| !FIELD_TAGS.contains(&t.key().unwrap_or_default()))
            .map(|t| Tag::new(t.key().unwrap_or_default(), t.value().unwrap_or_default()))
            .collect(),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key_arn: s.kms_key_id().map(str::to_owned),
        changed_blocks_count: tag(COUNT_TAG).and_then(|c| c.parse().ok()),
        aggregate: tag(CHECKSUM_TAG).and_then(Digest::from_base64),
    })
}

pub(super) fn ec2_tag(key: &str, value: &str) -> ct::Tag {
    ct::Tag::builder().key(key).value(value).build()
}

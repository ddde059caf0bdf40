//! The EBS rules every store enforces, as pure functions, so that all backends refuse
//! the same requests with the same reasons.

use super::ValidationReason::*;
use super::{
    Quota, SnapshotId, SnapshotInfo, SnapshotStatus, StartSnapshot, StoreError, StoreResult, Tag,
};
use crate::block::{volume_blocks, BlockIndex, Digest, HashedBlock, MAX_VOLUME_GIB};
use std::time::{Duration, SystemTime};

pub(crate) const DEFAULT_TIMEOUT_MINUTES: u32 = 60;
/// Snapshots that may be pending at once: EBS allows 100 per account (`serve
/// --max-pending` changes it). Each pending snapshot is work a client left open; without
/// a cap, a client could start them until the store runs out of resources.
pub const DEFAULT_MAX_PENDING: usize = 100;
/// Tags on one snapshot: EC2's limit.
pub const MAX_TAGS: usize = 50;

/// Checks StartSnapshot's parameters against the parent (already looked up).
pub(crate) fn check_start(req: &StartSnapshot, parent: Option<&SnapshotInfo>) -> StoreResult<()> {
    if !(1..=MAX_VOLUME_GIB).contains(&req.volume_size_gib) {
        return Err(StoreError::invalid(
            InvalidVolumeSize,
            format!(
                "volume size {} GiB is outside 1 to {MAX_VOLUME_GIB}",
                req.volume_size_gib
            ),
        ));
    }
    if req.description.as_deref().is_some_and(|d| !printable(d)) {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            "the description may not hold control characters, U+FFFE or U+FFFF (XML cannot carry them)",
        ));
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            "description is longer than 255 characters",
        ));
    }
    if let Some(t) = req.timeout_minutes.filter(|t| !(10..=4320).contains(t)) {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            format!("timeout {t} is outside 10 to 4320 minutes"),
        ));
    }
    check_tags(&req.tags)?;
    let keys: std::collections::HashSet<&str> = req.tags.iter().map(|t| t.key.as_str()).collect();
    check_tag_count(keys.len())?;
    let Some(parent) = parent else { return Ok(()) };
    if req.encrypted {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            "Encrypted cannot be given with ParentSnapshotId: a child of an encrypted parent is encrypted",
        ));
    }
    if parent.status != SnapshotStatus::Completed {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            format!(
                "parent snapshot {} is {}, not completed",
                parent.id, parent.status
            ),
        ));
    }
    if req.volume_size_gib < parent.volume_size_gib {
        return Err(StoreError::invalid(
            InvalidVolumeSize,
            format!(
                "volume size {} GiB is smaller than parent {}'s {} GiB",
                req.volume_size_gib, parent.id, parent.volume_size_gib
            ),
        ));
    }
    Ok(())
}

/// A digest of StartSnapshot's parameters, kept with the snapshot for ClientToken
/// idempotency: a retry matches the request as it was made, whatever happened to the
/// snapshot since (an inherited encryption flag, a parent deleted later).
pub(crate) fn start_fingerprint(req: &StartSnapshot) -> String {
    let canonical = serde_json::json!([
        req.volume_size_gib,
        req.parent.as_ref().map(|p| p.to_string()),
        req.description,
        req.tags
            .iter()
            .map(|t| [&t.key, &t.value])
            .collect::<Vec<_>>(),
        req.encrypted,
        req.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES),
        req.kms_key_arn,
    ]);
    Digest::of(canonical.to_string().as_bytes()).to_base64()
}

pub(crate) fn conflict(token: &str, id: &SnapshotId) -> StoreError {
    StoreError::Conflict {
        message: format!("client token {token:?} was used for {id} with different parameters"),
    }
}

/// A pending snapshot idle past its timeout has gone to `error`.
pub(crate) fn timed_out(
    status: SnapshotStatus,
    last_activity: SystemTime,
    timeout_minutes: u32,
) -> bool {
    status == SnapshotStatus::Pending
        && last_activity + Duration::from_secs(60 * u64::from(timeout_minutes)) < SystemTime::now()
}

/// Moves a pending snapshot idle past its timeout to `error`: stores apply this
/// wherever they look a snapshot up.
pub(crate) fn expire(status: &mut SnapshotStatus, last_activity: SystemTime, timeout_minutes: u32) {
    if timed_out(*status, last_activity, timeout_minutes) {
        *status = SnapshotStatus::Error;
    }
}

/// StartSnapshot with a client token the store knows, from the request that `made`
/// (whose fingerprint is `made_by`): the same request gets that snapshot back, another
/// one a conflict.
pub(crate) fn replay_start(
    token: &str,
    req: &StartSnapshot,
    made_by: Option<&str>,
    made: &SnapshotInfo,
) -> StoreResult<SnapshotInfo> {
    if made_by == Some(start_fingerprint(req).as_str()) {
        Ok(made.clone())
    } else {
        Err(conflict(token, &made.id))
    }
}

/// Checks that a block may be written to this snapshot at `index` with this checksum.
pub(crate) fn check_put(
    info: &SnapshotInfo,
    index: BlockIndex,
    block: &HashedBlock,
    claimed: Digest,
) -> StoreResult<()> {
    match info.status {
        SnapshotStatus::Pending => {}
        SnapshotStatus::Error => {
            return Err(StoreError::invalid(
                WriteRequestTimeout,
                format!("snapshot {} is in error state", info.id),
            ))
        }
        SnapshotStatus::Completed => {
            return Err(StoreError::invalid(
                InvalidParameterValue,
                format!(
                    "snapshot {} is completed: blocks can no longer be written",
                    info.id
                ),
            ))
        }
    }
    let blocks = volume_blocks(info.volume_size_gib);
    if index.0 >= blocks {
        return Err(StoreError::invalid(
            InvalidBlock,
            format!(
                "block index {index} is outside snapshot {} ({blocks} blocks)",
                info.id
            ),
        ));
    }
    if block.digest() != claimed {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            format!(
                "checksum {claimed} does not match the data of block {index} ({})",
                block.digest()
            ),
        ));
    }
    Ok(())
}

/// Checks CompleteSnapshot's block count and aggregate against what was written.
pub(crate) fn check_complete(
    id: &SnapshotId,
    claimed_count: u64,
    claimed_aggregate: Option<Digest>,
    count: u64,
    aggregate: Digest,
) -> StoreResult<()> {
    if claimed_count != count {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            format!("ChangedBlocksCount {claimed_count} does not match the {count} blocks written to {id}"),
        ));
    }
    if let Some(claimed) = claimed_aggregate.filter(|c| *c != aggregate) {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            format!("aggregate checksum {claimed} does not match the blocks written to {id} ({aggregate})"),
        ));
    }
    Ok(())
}

/// Checks that a snapshot may be read (listed, its blocks fetched).
pub(crate) fn check_readable(info: &SnapshotInfo) -> StoreResult<()> {
    if info.status == SnapshotStatus::Completed {
        return Ok(());
    }
    Err(StoreError::invalid(
        InvalidSnapshotId,
        format!(
            "snapshot {} is {}: only completed snapshots can be read",
            info.id, info.status
        ),
    ))
}

pub(crate) fn unrelated(first: &SnapshotId, second: &SnapshotId) -> StoreError {
    StoreError::invalid(
        UnrelatedSnapshots,
        format!("snapshots {first} and {second} are not of the same lineage"),
    )
}

/// A snapshot may be deleted unless a child of it is still being written (the child
/// would lose the blocks it inherits before it has a map to take them into).
pub(crate) fn check_delete(
    id: &SnapshotId,
    children: &[(SnapshotId, SnapshotStatus)],
) -> StoreResult<()> {
    match children
        .iter()
        .find(|(_, s)| *s != SnapshotStatus::Completed)
    {
        Some((child, status)) => Err(StoreError::invalid(
            InvalidDependencyRequest,
            format!(
                "snapshot {id} has a child {child} that is {status}: complete or delete it first"
            ),
        )),
        None => Ok(()),
    }
}

/// Whether a text can travel in EC2's XML answers: XML 1.0 allows no control character
/// but tab, newline and carriage return, and not U+FFFE or U+FFFF. (One accepted in a
/// tag made every DescribeSnapshots answer unparsable until the tag was removed.)
fn printable(text: &str) -> bool {
    text.chars().all(|c| {
        (!c.is_control() || matches!(c, '\t' | '\n' | '\r'))
            && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
    })
}

/// At most [`MAX_TAGS`] tags on a snapshot.
pub(crate) fn check_tag_count(tags: usize) -> StoreResult<()> {
    if tags > MAX_TAGS {
        return Err(StoreError::limit(
            Quota::TagsPerSnapshot,
            format!("a snapshot may have at most {MAX_TAGS} tags, not {tags}"),
        ));
    }
    Ok(())
}

/// At most `max` snapshots pending at once; `pending` are already.
pub(crate) fn check_pending(pending: usize, max: usize) -> StoreResult<()> {
    if pending >= max {
        return Err(StoreError::limit(
            Quota::PendingSnapshots,
            format!("{pending} snapshots are pending, the most allowed at once (complete or delete some first)"),
        ));
    }
    Ok(())
}

/// Tag keys of 1 to 127 characters, values of at most 255 (EC2's limits), no control
/// characters.
pub(crate) fn check_tags(tags: &[Tag]) -> StoreResult<()> {
    if tags
        .iter()
        .any(|t| !printable(&t.key) || !printable(&t.value))
    {
        return Err(StoreError::invalid(
            InvalidParameterValue,
            "tags may not hold control characters, U+FFFE or U+FFFF (XML cannot carry them)",
        ));
    }
    if tags
        .iter()
        .any(|t| t.key.is_empty() || t.key.chars().count() > 127 || t.value.chars().count() > 255)
    {
        return Err(StoreError::invalid(
            InvalidTag,
            "tag keys must be 1 to 127 characters, values at most 255",
        ));
    }
    Ok(())
}

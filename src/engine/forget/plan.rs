//! Which snapshots of a store's listing are candidates, how they group by source, and
//! what the policy decides for one group. Pure: the listing is read elsewhere.

use super::policy::{judge, KeepPolicy};
use super::ForgetEntry;
use crate::engine::{MANAGED_TAG, SOURCE_PATH_TAG};
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStatus};
use jiff::tz::TimeZone;
use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

/// The source a snapshot is a candidate of: a completed snapshot that ebsnap made
/// (`ebsnap:managed`), of a source it recorded. Pending snapshots (a backup under way,
/// or one to resume) and other tools' snapshots are never touched.
fn candidate_source(s: &SnapshotInfo) -> Option<&str> {
    if s.status != SnapshotStatus::Completed || s.tag(MANAGED_TAG).is_none() {
        return None;
    }
    s.tag(SOURCE_PATH_TAG)
}

/// The sources with candidates, in order; only `only` when given.
pub(super) fn sources(all: &[SnapshotInfo], only: Option<&str>) -> Vec<String> {
    let found: BTreeSet<&str> = all.iter().filter_map(candidate_source).collect();
    found
        .into_iter()
        .filter(|s| only.is_none_or(|o| o == *s))
        .map(str::to_owned)
        .collect()
}

/// What the policy decides for one source: entries kept, and those to remove (oldest
/// first, so an interrupted forget leaves the newer part of a lineage).
#[derive(Debug, Default)]
pub(super) struct Decision {
    pub kept: Vec<ForgetEntry>,
    pub remove: Vec<(SnapshotId, ForgetEntry)>,
}

/// Judges the candidates of `source` in `all`. A candidate that is the parent of an
/// unfinished snapshot (pending, or in error) is kept whatever the policy: the store
/// refuses to delete it, and a resumed backup needs it.
///
/// A candidate started after `now` (a clock that was wrong when it was made) is kept,
/// and left out of the judging: taken as the newest, it would push every real backup
/// out of `last` and `within`, and each night's new snapshot would be removed as soon
/// as it was made.
pub(super) fn decide(
    all: &[SnapshotInfo],
    source: &str,
    policy: &KeepPolicy,
    tz: &TimeZone,
    now: SystemTime,
) -> Decision {
    let mut group: Vec<SnapshotInfo> = all
        .iter()
        .filter(|s| candidate_source(s) == Some(source))
        .cloned()
        .collect();
    group.sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
    let future = group.partition_point(|s| s.start_time <= now);
    let mut reasons = judge(policy, &group[..future], tz);
    reasons.resize(group.len(), vec![FUTURE_REASON.to_owned()]);
    let unfinished = unfinished_children(all);
    let mut decision = Decision::default();
    for (s, mut reasons) in group.iter().zip(reasons) {
        if let Some((child, status)) = unfinished.get(&s.id) {
            reasons.push(format!("parent of {status} snapshot {child}"));
        }
        let entry = ForgetEntry::new(s, source, reasons);
        if entry.reasons.is_empty() {
            decision.remove.push((s.id.clone(), entry));
        } else {
            decision.kept.push(entry);
        }
    }
    decision
}

/// Why a snapshot started after now is kept.
const FUTURE_REASON: &str = "started in the future (a wrong clock)";

/// Each snapshot with an unfinished child: one such child, and its status.
fn unfinished_children(all: &[SnapshotInfo]) -> HashMap<SnapshotId, (SnapshotId, SnapshotStatus)> {
    all.iter()
        .filter(|s| s.status != SnapshotStatus::Completed)
        .filter_map(|s| Some((s.parent.clone()?, (s.id.clone(), s.status))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SOURCE_BYTES_TAG;
    use crate::store::Tag;
    use std::time::Duration;

    fn snap(n: u64, source: Option<&str>, managed: bool) -> SnapshotInfo {
        let mut tags = vec![Tag::new(SOURCE_BYTES_TAG, "1")];
        tags.extend(source.map(|s| Tag::new(SOURCE_PATH_TAG, s)));
        tags.extend(managed.then(|| Tag::new(MANAGED_TAG, "true")));
        SnapshotInfo {
            id: format!("snap-{n:017x}").parse().unwrap(),
            parent: None,
            status: SnapshotStatus::Completed,
            volume_size_gib: 1,
            block_size: 524_288,
            start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * n),
            description: None,
            tags,
            encrypted: false,
            kms_key_arn: None,
            changed_blocks_count: Some(1),
            aggregate: None,
        }
    }

    fn ids(entries: &[ForgetEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.snapshot_id.as_str()).collect()
    }

    #[test]
    fn only_completed_managed_snapshots_of_a_recorded_source_are_candidates() {
        let mut all: Vec<SnapshotInfo> = (1..=4).map(|n| snap(n, Some("/a"), true)).collect();
        all.push(snap(5, Some("/a"), false)); // another tool's
        all.push(snap(6, None, true)); // no source
        all.push(snap(7, Some("/b"), true));
        let mut pending = snap(8, Some("/a"), true);
        pending.status = SnapshotStatus::Pending;
        pending.parent = Some(all[1].id.clone());
        all.push(pending);
        assert_eq!(sources(&all, None), ["/a", "/b"]);
        assert_eq!(sources(&all, Some("/b")), ["/b"]);
        assert!(sources(&all, Some("/c")).is_empty());

        let last = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let a = decide(&all, "/a", &last, &TimeZone::UTC, SystemTime::now());
        // Snapshot 2 has a pending child; 4 is the newest completed.
        assert_eq!(
            ids(&a.kept),
            ["snap-00000000000000002", "snap-00000000000000004"]
        );
        assert_eq!(
            a.kept[0].reasons,
            ["parent of pending snapshot snap-00000000000000008"]
        );
        assert_eq!(a.kept[1].reasons, ["last snapshot", "newest of its source"]);
        let removed: Vec<_> = a.remove.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(
            removed,
            ["snap-00000000000000001", "snap-00000000000000003"]
        );
        assert_eq!(a.remove[0].1.source, "/a");
        assert_eq!(a.remove[0].1.start_time, "1970-01-02T00:00:00Z");
        let b = decide(&all, "/b", &last, &TimeZone::UTC, SystemTime::now());
        assert_eq!(ids(&b.kept), ["snap-00000000000000007"]);
        assert!(b.remove.is_empty());
    }

    #[test]
    fn a_snapshot_started_in_the_future_is_kept_and_not_taken_as_the_newest() {
        let mut all: Vec<SnapshotInfo> = (1..=3).map(|n| snap(n, Some("/a"), true)).collect();
        all.push(snap(1000, Some("/a"), true)); // made while the clock was years ahead
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 10);
        let last = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let a = decide(&all, "/a", &last, &TimeZone::UTC, now);
        // The real newest (3) stays: it is the next backup's parent.
        assert_eq!(
            ids(&a.kept),
            ["snap-00000000000000003", "snap-000000000000003e8"]
        );
        assert_eq!(a.kept[1].reasons, [FUTURE_REASON]);
        let removed: Vec<_> = a.remove.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(
            removed,
            ["snap-00000000000000001", "snap-00000000000000002"]
        );
    }
}

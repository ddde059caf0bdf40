//! The conformance suite: the same tests, run against every [`SnapshotStore`].
//!
//! Each function takes a fresh, empty store and panics on the first deviation from EBS
//! semantics. `tests/conformance.rs` runs them all against every backend with
//! [`conformance_tests!`](crate::conformance_tests).

use super::*;

mod fixtures;
use crate::block::{volume_blocks, LinearAggregate};
pub use fixtures::*;

fn reason(err: StoreError) -> Option<ValidationReason> {
    err.reason()
}

pub async fn round_trip(store: &dyn SnapshotStore) {
    let blocks = [(0, 1), (5, 2), (2047, 3), (9, 0)];
    let id = snapshot_with(store, None, 1, &blocks).await;
    assert_eq!(read_all(store, &id).await, digests(&blocks));
    let info = store.describe_snapshot(&id).await.unwrap();
    assert_eq!(info.status, SnapshotStatus::Completed);
    assert_eq!(info.changed_blocks_count, Some(4));
    let got = store
        .list_blocks(&id, PageRequest::default())
        .await
        .unwrap();
    let b5 = got
        .blocks
        .iter()
        .find(|b| b.index == BlockIndex(5))
        .unwrap();
    let data = store
        .get_block(&id, BlockIndex(5), &b5.token)
        .await
        .unwrap()
        .data;
    assert_eq!(data, block(2).data().clone());
    let listed = store.list_snapshots().await.unwrap();
    assert_eq!(listed.iter().map(|s| &s.id).collect::<Vec<_>>(), vec![&id]);
}

/// An encrypted lineage reads back as written, its changes are listed, and deleting
/// its root leaves the child whole, with the aggregate of what it holds.
pub async fn encrypted_lineages_read_back(store: &dyn SnapshotStore) {
    let mut req = StartSnapshot::new(1);
    req.encrypted = true;
    let root = snapshot_from(store, req, &[(0, 1), (5, 2), (9, 0)]).await;
    assert_eq!(
        read_all(store, &root).await,
        digests(&[(0, 1), (5, 2), (9, 0)])
    );
    let child = snapshot_with(store, Some(&root), 1, &[(5, 20), (6, 1)]).await;
    assert!(store.describe_snapshot(&child).await.unwrap().encrypted);
    let expected = digests(&[(0, 1), (5, 20), (6, 1), (9, 0)]);
    assert_eq!(read_all(store, &child).await, expected);
    assert_eq!(
        changed_indexes(store, Some(&root), &child).await,
        vec![(5, true, true), (6, false, true)]
    );
    store.delete_snapshot(&root).await.unwrap();
    assert_eq!(read_all(store, &child).await, expected);
    let info = store.describe_snapshot(&child).await.unwrap();
    assert_eq!(info.aggregate, Some(aggregate_of(&expected)));
}

pub async fn metadata_is_kept(store: &dyn SnapshotStore) {
    let mut req = StartSnapshot::new(3);
    req.description = Some("nightly /dev/sdb".into());
    req.tags = vec![
        Tag::new("ebsnap:source-bytes", "12345"),
        Tag::new("host", "db1"),
    ];
    let info = store.start_snapshot(req).await.unwrap();
    store.complete_snapshot(&info.id, 0, None).await.unwrap();
    let got = store.describe_snapshot(&info.id).await.unwrap();
    assert_eq!(got.description.as_deref(), Some("nightly /dev/sdb"));
    assert_eq!(got.tag("ebsnap:source-bytes"), Some("12345"));
    assert_eq!(got.tag("host"), Some("db1"));
    assert_eq!(got.volume_size_gib, 3);
    assert!(read_all(store, &info.id).await.is_empty());
}

pub async fn pages_are_clamped_and_resume(store: &dyn SnapshotStore) {
    let blocks: Vec<(u64, u64)> = (0..250).map(|i| (i * 3, 0)).collect();
    let id = snapshot_with(store, None, 1, &blocks).await;
    let req = PageRequest {
        max_results: Some(5),
        ..Default::default()
    };
    let first = store.list_blocks(&id, req).await.unwrap();
    assert_eq!(
        first.blocks.len(),
        100,
        "maxResults below 100 is clamped up"
    );
    assert!(first.next_token.is_some());
    let from = PageRequest {
        starting_block: BlockIndex(700),
        ..Default::default()
    };
    let tail = store.list_blocks(&id, from).await.unwrap();
    assert_eq!(tail.blocks.first().map(|b| b.index), Some(BlockIndex(702)));
    assert_eq!(tail.blocks.len(), 16);
    assert!(tail.next_token.is_none());
    // The token wins over the starting index.
    let both = PageRequest {
        starting_block: BlockIndex(700),
        token: first.next_token.clone(),
        max_results: Some(100),
    };
    let second = store.list_blocks(&id, both).await.unwrap();
    assert_eq!(second.blocks[0].index, BlockIndex(300));
    assert_eq!(read_all(store, &id).await.len(), 250);
    let bad = PageRequest::from_token(Some(PageToken("bm90IGEgdG9rZW4".into())));
    assert_eq!(
        reason(store.list_blocks(&id, bad).await.unwrap_err()),
        Some(ValidationReason::InvalidPageToken)
    );
}

pub async fn children_inherit_and_override(store: &dyn SnapshotStore) {
    let parent = snapshot_with(store, None, 1, &[(1, 1), (2, 2), (3, 3)]).await;
    let child = snapshot_with(store, Some(&parent), 2, &[(2, 20), (3, 0), (4000, 4)]).await;
    let expected = digests(&[(1, 1), (2, 20), (3, 0), (4000, 4)]);
    assert_eq!(read_all(store, &child).await, expected);
    assert_eq!(
        read_all(store, &parent).await,
        digests(&[(1, 1), (2, 2), (3, 3)])
    );
    let info = store.describe_snapshot(&child).await.unwrap();
    assert_eq!(info.parent.as_ref(), Some(&parent));
    assert_eq!(info.changed_blocks_count, Some(3));
    assert_eq!(
        changed_indexes(store, Some(&parent), &child).await,
        vec![(2, true, true), (3, true, true), (4000, false, true)]
    );
    assert_eq!(changed_indexes(store, None, &child).await.len(), 4);
    assert!(changed_indexes(store, Some(&child), &child)
        .await
        .is_empty());
}

pub async fn unrelated_snapshots_are_refused(store: &dyn SnapshotStore) {
    let a = snapshot_with(store, None, 1, &[(1, 1)]).await;
    let b = snapshot_with(store, None, 1, &[(1, 1)]).await;
    let err = store
        .list_changed_blocks(Some(&a), &b, PageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(err), Some(ValidationReason::UnrelatedSnapshots));
}

pub async fn bad_puts_are_refused(store: &dyn SnapshotStore) {
    let info = store.start_snapshot(StartSnapshot::new(1)).await.unwrap();
    let id = &info.id;
    let b = block(7);
    let err = store
        .put_block(id, BlockIndex(0), b.clone(), block(8).digest())
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "wrong checksum"
    );
    let beyond = BlockIndex(volume_blocks(1));
    let err = store
        .put_block(id, beyond, b.clone(), b.digest())
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidBlock),
        "index out of range"
    );
    let err = store
        .list_blocks(id, PageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidSnapshotId),
        "pending snapshots are unreadable"
    );
    store
        .put_block(id, BlockIndex(0), b.clone(), b.digest())
        .await
        .unwrap();
    let err = store.complete_snapshot(id, 2, None).await.unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "wrong block count"
    );
    let err = store
        .complete_snapshot(id, 1, Some(Digest::zero_block()))
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "wrong aggregate"
    );
    let mut agg = LinearAggregate::new();
    agg.push(BlockIndex(0), &b.digest()).unwrap();
    store
        .complete_snapshot(id, 1, Some(agg.finish()))
        .await
        .unwrap();
    let err = store
        .put_block(id, BlockIndex(1), b.clone(), b.digest())
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "put after complete"
    );
    assert_eq!(
        read_all(store, id).await,
        digests(&[(0, 7)]),
        "the failed calls changed nothing"
    );
    let missing: SnapshotId = "snap-0123456789abcdef0".parse().unwrap();
    assert!(matches!(
        store.describe_snapshot(&missing).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .put_block(&missing, BlockIndex(0), b.clone(), b.digest())
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Figures said ahead of completion ([`SnapshotStore::prepare_completion`]) are only
/// ever a head start: completion checks and records its own, and one said wrongly
/// never stands in for them.
pub async fn figures_said_ahead_never_stand_for_completions(store: &dyn SnapshotStore) {
    let aggregate = Some(aggregate_of(&digests(&[(0, 7)])));
    for ahead in [(1, aggregate), (2, Some(Digest::zero_block())), (1, None)] {
        let (id, _) = pending_from(store, StartSnapshot::new(1), &[(0, 7)]).await;
        store
            .prepare_completion(&id, ahead.0, ahead.1)
            .await
            .unwrap();
        let status = store.complete_snapshot(&id, 1, aggregate).await.unwrap();
        assert_eq!(status, SnapshotStatus::Completed, "{ahead:?}");
        let info = store.describe_snapshot(&id).await.unwrap();
        let completed = (info.changed_blocks_count, info.aggregate);
        assert_eq!(completed, (Some(1), aggregate), "said ahead: {ahead:?}");
    }
}

pub async fn block_tokens_are_checked(store: &dyn SnapshotStore) {
    let a = snapshot_with(store, None, 1, &[(1, 1), (2, 2)]).await;
    let b = snapshot_with(store, None, 1, &[(1, 1)]).await;
    let page = store.list_blocks(&a, PageRequest::default()).await.unwrap();
    let t1 = &page.blocks[0].token;
    let err = store.get_block(&a, BlockIndex(2), t1).await.unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidBlockToken),
        "token of another index"
    );
    let err = store.get_block(&b, BlockIndex(1), t1).await.unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidBlockToken),
        "token of another snapshot"
    );
    let forged = BlockToken("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let err = store
        .get_block(&a, BlockIndex(1), &forged)
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidBlockToken),
        "forged token"
    );
}

pub async fn start_is_validated_and_idempotent(store: &dyn SnapshotStore) {
    for gib in [0, 65_537] {
        let err = store
            .start_snapshot(StartSnapshot::new(gib))
            .await
            .unwrap_err();
        assert_eq!(reason(err), Some(ValidationReason::InvalidVolumeSize));
    }
    let mut req = StartSnapshot::new(1);
    req.client_token = Some("token-1".into());
    let first = store.start_snapshot(req.clone()).await.unwrap();
    let again = store.start_snapshot(req.clone()).await.unwrap();
    assert_eq!(
        first.id, again.id,
        "same token and parameters: same snapshot"
    );
    req.volume_size_gib = 2;
    assert!(matches!(
        store.start_snapshot(req).await,
        Err(StoreError::Conflict { .. })
    ));
    let parent = snapshot_with(store, None, 2, &[(0, 1)]).await;
    let mut child = StartSnapshot::new(2);
    child.parent = Some(parent.clone());
    child.encrypted = true;
    let err = store.start_snapshot(child.clone()).await.unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "Encrypted with a parent"
    );
    child.encrypted = false;
    child.volume_size_gib = 1;
    let err = store.start_snapshot(child).await.unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidVolumeSize),
        "smaller than the parent"
    );
}

pub async fn delete_keeps_children_whole(store: &dyn SnapshotStore) {
    let a = snapshot_with(store, None, 1, &[(0, 1), (1, 2), (2, 3)]).await;
    let b = snapshot_with(store, Some(&a), 1, &[(1, 20), (5, 5)]).await;
    let c = snapshot_with(store, Some(&b), 1, &[(2, 30)]).await;
    let before_c = read_all(store, &c).await;
    let before_b = read_all(store, &b).await;
    store.delete_snapshot(&b).await.unwrap();
    assert!(matches!(
        store.describe_snapshot(&b).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(read_all(store, &c).await, before_c);
    assert_eq!(
        store.describe_snapshot(&c).await.unwrap().parent.as_ref(),
        Some(&a)
    );
    store.delete_snapshot(&a).await.unwrap();
    assert_eq!(read_all(store, &c).await, before_c);
    let info = store.describe_snapshot(&c).await.unwrap();
    assert_eq!(info.parent, None);
    assert_eq!(
        info.changed_blocks_count,
        Some(before_c.len() as u64),
        "a root owns all its blocks"
    );
    assert_eq!(info.aggregate, Some(aggregate_of(&before_c)));
    assert_ne!(before_b, before_c);
    assert_eq!(store.list_snapshots().await.unwrap().len(), 1);
    store.delete_snapshot(&c).await.unwrap();
    assert!(store.list_snapshots().await.unwrap().is_empty());
}

pub async fn client_token_retries_match_the_request_as_made(store: &dyn SnapshotStore) {
    let mut root = StartSnapshot::new(1);
    root.encrypted = true;
    let root = store.start_snapshot(root).await.unwrap().id;
    store.complete_snapshot(&root, 0, None).await.unwrap();
    let mut child = StartSnapshot::new(1);
    child.parent = Some(root.clone());
    child.client_token = Some("retry-me".into());
    let first = store.start_snapshot(child.clone()).await.unwrap();
    assert!(
        first.encrypted,
        "a child of an encrypted parent is encrypted"
    );
    let again = store
        .start_snapshot(child)
        .await
        .expect("the same request again is no conflict");
    assert_eq!(first.id, again.id);
}

pub async fn a_parent_with_a_pending_child_is_not_deleted(store: &dyn SnapshotStore) {
    let parent = snapshot_with(store, None, 1, &[(0, 1)]).await;
    let mut req = StartSnapshot::new(1);
    req.parent = Some(parent.clone());
    let child = store.start_snapshot(req).await.unwrap().id;
    let err = store.delete_snapshot(&parent).await.unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidDependencyRequest)
    );
    let b = block(2);
    store
        .put_block(&child, BlockIndex(1), b.clone(), b.digest())
        .await
        .unwrap();
    let mut agg = LinearAggregate::new();
    agg.push(BlockIndex(1), &b.digest()).unwrap();
    store
        .complete_snapshot(&child, 1, Some(agg.finish()))
        .await
        .unwrap();
    store.delete_snapshot(&parent).await.unwrap();
    assert_eq!(read_all(store, &child).await, digests(&[(0, 1), (1, 2)]));
}

pub async fn tags_are_added_replaced_and_removed(store: &dyn SnapshotStore) {
    let id = snapshot_with(store, None, 1, &[]).await;
    store
        .create_tags(&id, &[Tag::new("a", "1"), Tag::new("b", "2")])
        .await
        .unwrap();
    store.create_tags(&id, &[Tag::new("a", "3")]).await.unwrap();
    let tags = user_tags(store, &id).await;
    assert_eq!(tags, vec![Tag::new("a", "3"), Tag::new("b", "2")]);
    let only_if = TagFilter {
        key: "b".into(),
        value: Some("other".into()),
    };
    store.delete_tags(&id, &[only_if]).await.unwrap();
    assert_eq!(user_tags(store, &id).await.len(), 2, "value must match");
    store
        .delete_tags(
            &id,
            &[TagFilter {
                key: "a".into(),
                value: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(user_tags(store, &id).await, vec![Tag::new("b", "2")]);
    let err = store
        .create_tags(&id, &[Tag::new("", "x")])
        .await
        .unwrap_err();
    assert_eq!(reason(err), Some(ValidationReason::InvalidTag));
    let err = store
        .create_tags(&id, &[Tag::new("k", "bell\u{7}")])
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "no control characters"
    );
    let err = store
        .create_tags(&id, &[Tag::new("k", "not xml \u{FFFE}")])
        .await
        .unwrap_err();
    assert_eq!(
        reason(err),
        Some(ValidationReason::InvalidParameterValue),
        "nothing XML cannot carry"
    );
    tag_limits(store, &id).await;
}

/// The snapshot's tags but the mark a store may put on what it starts (the EBS store's
/// `ebsnap:managed`).
async fn user_tags(store: &dyn SnapshotStore, id: &SnapshotId) -> Vec<Tag> {
    let mut tags = store.describe_snapshot(id).await.unwrap().tags;
    tags.retain(|t| t.key != crate::store::ebs_tags::MANAGED_TAG);
    tags
}

/// At most 50 tags on a snapshot, counting those a store keeps for itself (a key set
/// again is not another tag); over it, nothing changes.
async fn tag_limits(store: &dyn SnapshotStore, id: &SnapshotId) {
    let fifty: Vec<Tag> = (0..50).map(|i| Tag::new(format!("t{i}"), "v")).collect();
    let err = store.create_tags(id, &fifty).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LimitExceeded {
                quota: Quota::TagsPerSnapshot,
                ..
            }
        ),
        "50 more tags on a tagged snapshot: {err:?}"
    );
    let tags = store.describe_snapshot(id).await.unwrap().tags;
    assert!(
        tags.iter().all(|t| !t.key.starts_with('t')),
        "unchanged: {tags:?}"
    );
    let mut added = 0;
    for tag in &fifty {
        match store.create_tags(id, std::slice::from_ref(tag)).await {
            Ok(()) => added += 1,
            Err(StoreError::LimitExceeded { .. }) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!((40..50).contains(&added), "{added} tags added one by one");
    store.create_tags(id, &fifty[..1]).await.unwrap();
}

/// Generates one `#[tokio::test]` per conformance function. `$make` is an expression
/// giving `(store, guard)`; the guard (a temporary directory, say) lives as long as the test.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make; round_trip, encrypted_lineages_read_back, metadata_is_kept, pages_are_clamped_and_resume,
            children_inherit_and_override, unrelated_snapshots_are_refused, bad_puts_are_refused,
            block_tokens_are_checked, figures_said_ahead_never_stand_for_completions,
            start_is_validated_and_idempotent, delete_keeps_children_whole,
            client_token_retries_match_the_request_as_made, a_parent_with_a_pending_child_is_not_deleted,
            tags_are_added_replaced_and_removed);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::store::conformance::$name(&store).await;
            }
        )*
    };
}

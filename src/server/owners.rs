//! Whose snapshot is whose: each snapshot belongs to the owner of the key that started
//! it, and a key that is not an admin's sees only its owner's snapshots. Another
//! owner's snapshot is "not found", exactly as AWS answers for a snapshot of another
//! account, so a key cannot even learn which ids exist.
//!
//! The owner is recorded in a reserved tag, [`OWNER_TAG`], rather than in the local
//! store's metadata: the server runs on any `SnapshotStore` (memory, local, even EBS),
//! and a tag is already durable and written atomically with the snapshot's start; the
//! store's format and trait stay as they are. The server hides the
//! tag from every answer and filter, and no client may set or delete it (keys under
//! [`RESERVED_PREFIX`] are refused), so only StartSnapshot ever writes it. Snapshots of
//! [`OWNER_ID`] carry no tag at all: those that existed before owners, and those of the
//! environment's key, look as they always did.

use super::access::Caller;
use super::OWNER_ID;
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStore, StartSnapshot, StoreError, Tag};

/// The tag that records a snapshot's owner (when not [`OWNER_ID`]).
pub const OWNER_TAG: &str = "ebsnap-serve:owner";
/// Tag keys only the server itself writes.
pub const RESERVED_PREFIX: &str = "ebsnap-serve:";

/// Whether a tag key is the server's own, hidden and not for clients to set or delete.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The snapshot's owner.
pub fn owner_of(info: &SnapshotInfo) -> &str {
    info.tags
        .iter()
        .find(|t| t.key == OWNER_TAG)
        .map_or(OWNER_ID, |t| t.value.as_str())
}

/// Whether `caller` may see the snapshot.
pub fn visible(caller: &Caller, info: &SnapshotInfo) -> bool {
    caller.sees_all() || owner_of(info) == caller.owner
}

/// The tags a client is shown.
pub fn shown(tags: &[Tag]) -> impl Iterator<Item = &Tag> {
    tags.iter().filter(|t| !is_reserved(&t.key))
}

/// Refuses the first reserved key among those a client tries to set or delete, saying
/// why: each API wraps the message in its own error.
pub fn refuse_reserved<'a>(mut keys: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match keys.find(|k| is_reserved(k)) {
        Some(key) => Err(format!(
            "Tag keys starting with '{RESERVED_PREFIX}' are reserved for the server: {key:?}"
        )),
        None => Ok(()),
    }
}

/// Records the caller as owner of the snapshot a StartSnapshot makes, and scopes its
/// ClientToken to that owner, as EBS scopes tokens to an account: the store matches
/// tokens across all snapshots, and another owner's token would otherwise replay into
/// a conflict naming that owner's snapshot. The space that joins them is one no valid
/// token holds (`^[\S]+$`), so no client can spell another owner's scoped token.
pub fn stamp(request: &mut StartSnapshot, caller: &Caller) {
    if caller.owner != OWNER_ID {
        request.tags.push(Tag::new(OWNER_TAG, caller.owner.clone()));
    }
    if let Some(token) = &mut request.client_token {
        *token = format!("{} {token}", caller.owner);
    }
}

/// The snapshot as `caller` may see it: another owner's is not found, as the store
/// would say of a snapshot that does not exist.
pub async fn describe(
    store: &dyn SnapshotStore,
    caller: &Caller,
    id: &SnapshotId,
) -> Result<SnapshotInfo, StoreError> {
    let info = store.describe_snapshot(id).await?;
    if visible(caller, &info) {
        Ok(info)
    } else {
        Err(StoreError::snapshot_not_found(id))
    }
}

/// Fails unless `caller` may see the snapshot. Admins are not looked up: a server
/// with only the environment's key does no more store work per request than before.
pub async fn check(
    store: &dyn SnapshotStore,
    caller: &Caller,
    id: &SnapshotId,
) -> Result<(), StoreError> {
    if caller.sees_all() {
        return Ok(());
    }
    describe(store, caller, id).await.map(|_| ())
}

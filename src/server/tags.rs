//! EC2 CreateTags and DeleteTags, within what the caller may change.
//!
//! No client sets or deletes the server's own tags ([`owners::RESERVED_PREFIX`]): they
//! record whose a snapshot is. A backup key may add tags but not remove ebsnap's own
//! (`ebsnap:`): retention groups and judges snapshots by them (docs/retention.md), so
//! deleting one, or changing its value (which removes the old one), is as strong as a
//! delete. Every check is made on every named snapshot before any is changed, and tag
//! edits are made one at a time, so that no edit slips between another's check and its
//! write.

use super::access::Caller;
use super::ec2::{resources, Params};
use super::error::Ec2Error;
use super::{owners, AppState};
use crate::store::ebs_tags::FIELD_TAGS;
use crate::store::{SnapshotId, SnapshotInfo, Tag, TagFilter};

type Result<T> = std::result::Result<T, Ec2Error>;

/// ebsnap's own tags, which retention relies on.
const EBSNAP_PREFIX: &str = "ebsnap:";

pub(super) async fn create_tags(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<String> {
    let ids = resources(params)?;
    let tags: Vec<Tag> = (1..)
        .map_while(|n| {
            params
                .get(&format!("Tag.{n}.Key"))
                .map(|k| Tag::new(k, params.get(&format!("Tag.{n}.Value")).unwrap_or("")))
        })
        .collect();
    refuse_reserved(tags.iter().map(|t| t.key.as_str()))?;
    let _one_at_a_time = state.tag_edits.lock().await;
    for info in visible(state, caller, &ids).await? {
        if let Some(old) = overwritten_ebsnap_tag(caller, &info, &tags) {
            let what = format!("ec2:CreateTags changing {} of {}", old.key, info.id);
            return Err(caller.ec2_denied(&what));
        }
    }
    for id in &ids {
        state
            .store
            .create_tags(id, &tags)
            .await
            .map_err(|e| Ec2Error::from_store(e, id.as_str()))?;
    }
    Ok("<return>true</return>".into())
}

pub(super) async fn delete_tags(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<String> {
    let ids = resources(params)?;
    let tags: Vec<TagFilter> = (1..)
        .map_while(|n| {
            params.get(&format!("Tag.{n}.Key")).map(|k| TagFilter {
                key: k.to_owned(),
                value: params.get(&format!("Tag.{n}.Value")).map(str::to_owned),
            })
        })
        .collect();
    refuse_reserved(tags.iter().map(|t| t.key.as_str()))?;
    if !caller.may_remove_ebsnap_tags() {
        if let Some(t) = tags.iter().find(|t| t.key.starts_with(EBSNAP_PREFIX)) {
            return Err(caller.ec2_denied(&format!("ec2:DeleteTags of {}", t.key)));
        }
    }
    let _one_at_a_time = state.tag_edits.lock().await;
    visible(state, caller, &ids).await?;
    for id in &ids {
        state
            .store
            .delete_tags(id, &tags)
            .await
            .map_err(|e| Ec2Error::from_store(e, id.as_str()))?;
    }
    Ok("<return>true</return>".into())
}

/// A reserved key among those a client names: refused as EC2 refuses `aws:` keys.
fn refuse_reserved<'a>(keys: impl Iterator<Item = &'a str>) -> Result<()> {
    owners::refuse_reserved(keys).map_err(|message| Ec2Error::new("InvalidParameterValue", message))
}

/// The snapshots, each as the caller may see it: another owner's is not found.
pub(super) async fn visible(
    state: &AppState,
    caller: &Caller,
    ids: &[SnapshotId],
) -> Result<Vec<SnapshotInfo>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let info = owners::describe(&*state.store, caller, id).await;
        out.push(info.map_err(|e| Ec2Error::from_store(e, id.as_str()))?);
    }
    Ok(out)
}

/// The `ebsnap:` tag of `info` that `new` would give another value, if the caller may
/// not remove ebsnap's tags. Setting one that is absent, or to the value it has, is fine.
/// The field tags (parent, block count, checksum) are exempt: the server reports them
/// from the store's own record whatever was tagged, so retagging them changes nothing a
/// client sees, and a backup resumed after a crash between its tagging and its
/// completion tags them again.
fn overwritten_ebsnap_tag<'a>(
    caller: &Caller,
    info: &'a SnapshotInfo,
    new: &[Tag],
) -> Option<&'a Tag> {
    if caller.may_remove_ebsnap_tags() {
        return None;
    }
    info.tags.iter().find(|old| {
        old.key.starts_with(EBSNAP_PREFIX)
            && !FIELD_TAGS.contains(&old.key.as_str())
            && new.iter().any(|t| t.key == old.key && t.value != old.value)
    })
}

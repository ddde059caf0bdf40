//! The EC2 Query API subset that goes with the EBS direct APIs: DescribeSnapshots
//! (ids, filters, paging), DeleteSnapshot, CreateTags, DeleteTags. Form-encoded POST in,
//! XML out.

use super::access::{Caller, Operation};
use super::error::Ec2Error;
pub(super) use super::filters::{filters, select};
use super::tags::{self, create_tags, delete_tags};
use super::{owners, request_id, AppState};
use crate::store::ebs_tags::{CHECKSUM_TAG, COUNT_TAG, FIELD_TAGS, PARENT_TAG};
use crate::store::{SnapshotId, SnapshotInfo, Tag};
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use quick_xml::escape::escape;
use std::collections::BTreeMap;

const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

type Result<T> = std::result::Result<T, Ec2Error>;

/// The form's parameters, by name.
pub(super) struct Params(BTreeMap<String, String>);

impl Params {
    /// A form body, decoded as the server decodes it (bytes that are not UTF-8 become
    /// U+FFFD: they can only make a value that matches nothing).
    pub(super) fn parse(body: &[u8]) -> Params {
        Params(form_urlencoded::parse(body).into_owned().collect())
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `Prefix.1`, `Prefix.2`, ... in order, up to the first gap.
    pub(super) fn list(&self, prefix: &str) -> Vec<&str> {
        (1..)
            .map_while(|n| self.get(&format!("{prefix}.{n}")))
            .collect()
    }
}

pub async fn query(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let action = params.get("Action").unwrap_or("").to_owned();
    // The role first: a refused call does no store work and changes nothing.
    if let Some(op) = Operation::of_ec2(&action).filter(|op| !caller.role.allows(*op)) {
        return caller.ec2_denied(&format!("ec2:{op:?}")).into_response();
    }
    let (state, caller) = (&state, &caller);
    let result = match action.as_str() {
        "DescribeSnapshots" => describe_snapshots(state, caller, &params).await,
        "DeleteSnapshot" => delete_snapshot(state, caller, &params).await,
        "CreateTags" => create_tags(state, caller, &params).await,
        "DeleteTags" => delete_tags(state, caller, &params).await,
        "" => Err(Ec2Error::new(
            "MissingAction",
            "The request must contain the parameter Action",
        )),
        other => Err(Ec2Error::new(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
    };
    match result {
        Ok(inner) => xml_response(&action, &inner),
        Err(e) => e.into_response(),
    }
}

fn xml_response(action: &str, inner: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{XMLNS}\"><requestId>{}</requestId>{inner}</{action}Response>",
        request_id()
    );
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    response
}

pub(super) fn snapshot_id(raw: &str) -> Result<SnapshotId> {
    raw.parse().map_err(|_| {
        Ec2Error::new(
            "InvalidSnapshotID.Malformed",
            format!("Invalid id: \"{raw}\""),
        )
    })
}

async fn describe_snapshots(state: &AppState, caller: &Caller, params: &Params) -> Result<String> {
    let ids: Vec<SnapshotId> = params
        .list("SnapshotId")
        .into_iter()
        .map(snapshot_id)
        .collect::<Result<_>>()?;
    let owners = params.list("Owner");
    let filters = filters(params)?;
    let snapshots = named_or_all(state, caller, &ids).await?;
    // `Owner.N`: account ids, or `self`: the caller's own account's, for an admin too,
    // as in AWS. ebsnap's EBS store lists with `self`, so an admin's `snapshots` and
    // `forget` see its own owner's backups only: another owner's backup key can tag
    // snapshots of its own with `ebsnap:source` and `ebsnap:managed`, and an admin's
    // retention judging every owner's together would then remove real backups.
    let wanted = |s: &SnapshotInfo| {
        let owner = owners::owner_of(s);
        owners.is_empty()
            || owners
                .iter()
                .any(|o| *o == owner || (*o == "self" && owner == caller.owner))
    };
    let snapshots: Vec<SnapshotInfo> = snapshots.into_iter().filter(wanted).collect();
    // Matching globs is CPU work, bounded but not small: off the async threads.
    let snapshots = tokio::task::spawn_blocking(move || select(snapshots, &filters))
        .await
        .map_err(|e| Ec2Error::internal(format!("filtering snapshots: {e}")))??;
    let (start, max) = paging(params, ids.is_empty())?;
    let page: Vec<&SnapshotInfo> = snapshots.iter().skip(start).take(max).collect();
    let mut out = String::from("<snapshotSet>");
    for s in &page {
        out += &snapshot_xml(s);
    }
    out += "</snapshotSet>";
    if start + page.len() < snapshots.len() {
        out += &format!(
            "<nextToken>{}</nextToken>",
            B64.encode((start + page.len()).to_string())
        );
    }
    Ok(out)
}

/// The snapshots `ids` names (another owner's are not found), or all the caller sees.
async fn named_or_all(
    state: &AppState,
    caller: &Caller,
    ids: &[SnapshotId],
) -> Result<Vec<SnapshotInfo>> {
    if ids.is_empty() {
        let all = state
            .store
            .list_snapshots()
            .await
            .map_err(|e| Ec2Error::from_store(e, ""))?;
        return Ok(all
            .into_iter()
            .filter(|s| owners::visible(caller, s))
            .collect());
    }
    tags::visible(state, caller, ids).await
}

/// Where a DescribeSnapshots page starts and how long it is. MaxResults (5 to 1000) may
/// not be combined with snapshot ids.
pub(super) fn paging(params: &Params, listing: bool) -> Result<(usize, usize)> {
    let max = match params.get("MaxResults") {
        None => usize::MAX,
        Some(_) if !listing => {
            return Err(Ec2Error::new(
                "InvalidParameterCombination",
                "The parameter snapshotIdSet cannot be used with the parameter maxResults",
            ))
        }
        Some(m) => match m.parse::<usize>() {
            Ok(m) if (5..=1000).contains(&m) => m,
            _ => {
                return Err(Ec2Error::new(
                    "InvalidParameterValue",
                    format!("MaxResults {m} is outside 5 to 1000"),
                ))
            }
        },
    };
    let start = match params.get("NextToken") {
        None | Some("") => 0,
        Some(t) => B64
            .decode(t)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Ec2Error::new("InvalidNextToken", "The specified NextToken is not valid.")
            })?,
    };
    Ok((start, max))
}

pub(super) fn snapshot_xml(s: &SnapshotInfo) -> String {
    let owner = owners::owner_of(s);
    let progress = if s.status == crate::store::SnapshotStatus::Completed {
        "100%"
    } else {
        "0%"
    };
    let mut out = format!(
        "<item><snapshotId>{}</snapshotId><volumeId>vol-ffffffff</volumeId><status>{}</status><startTime>{}</startTime><progress>{progress}</progress><ownerId>{owner}</ownerId><volumeSize>{}</volumeSize><description>{}</description><encrypted>{}</encrypted><storageTier>standard</storageTier>",
        s.id,
        s.status.as_str(),
        humantime::format_rfc3339_millis(s.start_time),
        s.volume_size_gib,
        escape(s.description.as_deref().unwrap_or("")),
        s.encrypted,
    );
    if let Some(k) = s.kms_key() {
        out += &format!("<kmsKeyId>{}</kmsKeyId>", escape(k));
    }
    let tags = reported_tags(s);
    if !tags.is_empty() {
        out += "<tagSet>";
        for t in &tags {
            out += &format!(
                "<item><key>{}</key><value>{}</value></item>",
                escape(&t.key),
                escape(&t.value)
            );
        }
        out += "</tagSet>";
    }
    out + "</item>"
}

/// The snapshot's tags (without the server's own), with ebsnap's field tags (parent, block count, checksum) taken
/// from the store's own record rather than from what was tagged at the time: after a
/// deletion the store has reparented children and recomputed their aggregates, and
/// clients that read these tags (ebsnap's EBS store) see the truth.
fn reported_tags(s: &SnapshotInfo) -> Vec<Tag> {
    let mut tags: Vec<Tag> = owners::shown(&s.tags)
        .filter(|t| !FIELD_TAGS.contains(&t.key.as_str()))
        .cloned()
        .collect();
    if let Some(p) = &s.parent {
        tags.push(Tag::new(PARENT_TAG, p.as_str()));
    }
    if let Some(c) = s.changed_blocks_count {
        tags.push(Tag::new(COUNT_TAG, c.to_string()));
    }
    if let Some(a) = s.aggregate {
        tags.push(Tag::new(CHECKSUM_TAG, a.to_base64()));
    }
    tags
}

async fn delete_snapshot(state: &AppState, caller: &Caller, params: &Params) -> Result<String> {
    let raw = params.get("SnapshotId").ok_or_else(|| {
        Ec2Error::new(
            "MissingParameter",
            "The request must contain the parameter SnapshotId",
        )
    })?;
    let id = snapshot_id(raw)?;
    owners::check(&*state.store, caller, &id)
        .await
        .map_err(|e| Ec2Error::from_store(e, raw))?;
    state
        .store
        .delete_snapshot(&id)
        .await
        .map_err(|e| Ec2Error::from_store(e, raw))?;
    Ok("<return>true</return>".into())
}

/// `ResourceId.N`, as snapshot ids, each once (a request naming one snapshot thousands
/// of times would otherwise rewrite, and fsync, its metadata as often).
pub(super) fn resources(params: &Params) -> Result<Vec<SnapshotId>> {
    let ids = params.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::new(
            "MissingParameter",
            "The request must contain the parameter resourceIdSet",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<&str> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
    ids.into_iter().map(snapshot_id).collect()
}

//! The six EBS direct-API operations, over any `SnapshotStore`.

use super::access::Caller;
use super::error::EbsError;
use super::{epoch_secs, owners, AppState};
use crate::block::{BlockIndex, Digest, HashedBlock, BLOCK_SIZE};
use crate::store::ValidationReason::*;
use crate::store::{
    BlockToken, PageRequest, PageToken, SnapshotId, SnapshotInfo, StartSnapshot, Tag,
};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

type Result<T> = std::result::Result<T, EbsError>;

pub(super) fn snapshot_id(raw: &str) -> Result<SnapshotId> {
    raw.parse().map_err(|_| {
        EbsError::validation(
            InvalidSnapshotId,
            format!("The snapshot ID {raw:?} is not valid"),
        )
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn number<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T> {
    raw.parse().map_err(|_| {
        EbsError::validation(
            InvalidParameterValue,
            format!("{what} must be a non-negative integer, not {raw:?}"),
        )
    })
}

pub(super) fn checksum(headers: &HeaderMap, required: bool) -> Result<Option<Digest>> {
    let Some(raw) = header(headers, "x-amz-checksum") else {
        return if required {
            Err(EbsError::validation(
                InvalidParameterValue,
                "x-amz-Checksum is required",
            ))
        } else {
            Ok(None)
        };
    };
    match header(headers, "x-amz-checksum-algorithm") {
        Some("SHA256") => {}
        other => {
            return Err(EbsError::validation(
                InvalidParameterValue,
                format!("x-amz-Checksum-Algorithm must be SHA256, not {other:?}"),
            ))
        }
    }
    Digest::from_base64(raw).map(Some).ok_or_else(|| {
        EbsError::validation(
            InvalidParameterValue,
            "x-amz-Checksum is not a base64 SHA-256",
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartBody {
    volume_size: i64,
    parent_snapshot_id: Option<String>,
    #[serde(default)]
    tags: Vec<TagBody>,
    description: Option<String>,
    client_token: Option<String>,
    encrypted: Option<bool>,
    kms_key_arn: Option<String>,
    timeout: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagBody {
    key: String,
    #[serde(default)]
    value: String,
}

/// StartSnapshot's answer. `SseType` says what the store did: `sse-kms` when a named
/// key (KmsKeyArn) encrypts it, `sse-ebs` for the store's default key, else `none`.
fn snapshot_json(info: &SnapshotInfo) -> Value {
    let mut out = json!({
        "SnapshotId": info.id.to_string(),
        "OwnerId": owners::owner_of(info),
        "Status": info.status.as_str(),
        "StartTime": epoch_secs(info.start_time),
        "VolumeSize": info.volume_size_gib,
        "BlockSize": info.block_size,
        "Tags": owners::shown(&info.tags).map(|t| json!({"Key": t.key, "Value": t.value})).collect::<Vec<_>>(),
        "SseType": if info.encrypted { "sse-ebs" } else { "none" },
    });
    if let Some(d) = &info.description {
        out["Description"] = d.clone().into();
    }
    if let Some(p) = &info.parent {
        out["ParentSnapshotId"] = p.to_string().into();
    }
    if let Some(k) = info.kms_key() {
        out["KmsKeyArn"] = k.into();
        out["SseType"] = "sse-kms".into();
    }
    out
}

pub async fn start_snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response> {
    let mut request = start_request(&body)?;
    owners::refuse_reserved(request.tags.iter().map(|t| t.key.as_str()))
        .map_err(|message| EbsError::validation(InvalidTag, message))?;
    // A parent of another owner is not found, as the store says of a missing one.
    if let Some(parent) = &request.parent {
        owners::check(&*state.store, &caller, parent).await?;
    }
    owners::stamp(&mut request, &caller);
    let info = state.store.start_snapshot(request).await?;
    Ok((StatusCode::CREATED, Json(snapshot_json(&info))).into_response())
}

/// StartSnapshot's JSON body, read into the store's request (the store checks the
/// EBS rules on it).
pub(super) fn start_request(body: &[u8]) -> Result<StartSnapshot> {
    let body: StartBody = serde_json::from_slice(body).map_err(|e| {
        EbsError::validation(InvalidParameterValue, format!("invalid request body: {e}"))
    })?;
    let volume_size_gib = u64::try_from(body.volume_size)
        .map_err(|_| EbsError::validation(InvalidVolumeSize, "VolumeSize must be positive"))?;
    let timeout_minutes = match body.timeout {
        Some(t) => Some(u32::try_from(t).map_err(|_| {
            EbsError::validation(
                InvalidParameterValue,
                format!("Timeout {t} is outside 10 to 4320"),
            )
        })?),
        None => None,
    };
    Ok(StartSnapshot {
        volume_size_gib,
        parent: body
            .parent_snapshot_id
            .as_deref()
            .map(snapshot_id)
            .transpose()?,
        description: body.description,
        tags: body
            .tags
            .into_iter()
            .map(|t| Tag::new(t.key, t.value))
            .collect(),
        client_token: body.client_token,
        timeout_minutes,
        encrypted: body.encrypted.unwrap_or(false),
        kms_key_arn: body.kms_key_arn,
    })
}

pub async fn put_block(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let Path((id, index)) = path?;
    let id = snapshot_id(&id)?;
    owners::check(&*state.store, &caller, &id).await?;
    let index = BlockIndex(index.parse().map_err(|_| {
        EbsError::validation(InvalidBlock, format!("block index {index:?} is not valid"))
    })?);
    let length: u64 = number(
        header(&headers, "x-amz-data-length").ok_or_else(|| {
            EbsError::validation(InvalidParameterValue, "x-amz-Data-Length is required")
        })?,
        "x-amz-Data-Length",
    )?;
    if length != BLOCK_SIZE as u64 || body.len() != BLOCK_SIZE {
        return Err(EbsError::validation(
            InvalidParameterValue,
            format!("a block is {BLOCK_SIZE} bytes: x-amz-Data-Length was {length} and the body {} bytes", body.len()),
        ));
    }
    if let Some(p) = header(&headers, "x-amz-progress") {
        let p: u64 = number(p, "x-amz-Progress")?;
        if p > 100 {
            return Err(EbsError::validation(
                InvalidParameterValue,
                "x-amz-Progress must be 0 to 100",
            ));
        }
    }
    let claimed = checksum(&headers, true)?.expect("required");
    let block = HashedBlock::new(body).expect("length checked");
    let computed = block.digest();
    state.store.put_block(&id, index, block, claimed).await?;
    // A 201 promises the block is kept (EBS semantics): a client that resumes after
    // this server is killed skips the blocks it was told were written.
    state.store.flush(&id).await?;
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    h.insert(
        "x-amz-checksum",
        HeaderValue::from_str(&computed.to_base64()).expect("base64 is a header value"),
    );
    h.insert(
        "x-amz-checksum-algorithm",
        HeaderValue::from_static("SHA256"),
    );
    Ok(response)
}

pub async fn complete_snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response> {
    let Path(id) = path?;
    let id = snapshot_id(&id)?;
    owners::check(&*state.store, &caller, &id).await?;
    let count = header(&headers, "x-amz-changedblockscount").ok_or_else(|| {
        EbsError::validation(
            InvalidParameterValue,
            "x-amz-ChangedBlocksCount is required",
        )
    })?;
    let count: u64 = number(count, "x-amz-ChangedBlocksCount")?;
    let aggregate = checksum(&headers, false)?;
    if let Some(method) =
        header(&headers, "x-amz-checksum-aggregation-method").filter(|m| *m != "LINEAR")
    {
        return Err(EbsError::validation(
            InvalidParameterValue,
            format!("x-amz-Checksum-Aggregation-Method must be LINEAR, not {method:?}"),
        ));
    }
    let status = state.store.complete_snapshot(&id, count, aggregate).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "Status": status.as_str() })),
    )
        .into_response())
}

/// The paging parameters of the list calls.
pub(super) fn page_request(query: &HashMap<String, String>) -> Result<PageRequest> {
    let max_results = query
        .get("maxResults")
        .map(|m| number::<u32>(m, "maxResults"))
        .transpose()?;
    let starting_block = query
        .get("startingBlockIndex")
        .map(|s| number::<u64>(s, "startingBlockIndex"))
        .transpose()?
        .unwrap_or(0);
    let token = query
        .get("pageToken")
        .filter(|t| !t.is_empty())
        .map(|t| PageToken(t.clone()));
    Ok(PageRequest {
        starting_block: BlockIndex(starting_block),
        max_results,
        token,
    })
}

pub async fn list_blocks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response> {
    let Path(id) = path?;
    let Query(query) = query?;
    let id = snapshot_id(&id)?;
    owners::check(&*state.store, &caller, &id).await?;
    let page = state.store.list_blocks(&id, page_request(&query)?).await?;
    let blocks = page
        .blocks
        .iter()
        .map(|b| json!({"BlockIndex": b.index.0, "BlockToken": b.token.0}))
        .collect();
    Ok(page_json(
        "Blocks",
        blocks,
        page.expiry_time,
        page.volume_size_gib,
        page.block_size,
        page.next_token,
    ))
}

/// The body of a list call's answer: its items, then what every page carries.
fn page_json(
    key: &str,
    items: Vec<Value>,
    expiry: std::time::SystemTime,
    volume_size_gib: u64,
    block_size: u32,
    next: Option<PageToken>,
) -> Response {
    let mut out = json!({
        key: items,
        "ExpiryTime": epoch_secs(expiry),
        "VolumeSize": volume_size_gib,
        "BlockSize": block_size,
    });
    if let Some(next) = next {
        out["NextToken"] = next.0.into();
    }
    Json(out).into_response()
}

pub async fn list_changed_blocks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response> {
    let Path(id) = path?;
    let Query(query) = query?;
    let second = snapshot_id(&id)?;
    let first = query
        .get("firstSnapshotId")
        .filter(|f| !f.is_empty())
        .map(|f| snapshot_id(f))
        .transpose()?;
    for id in first.iter().chain([&second]) {
        owners::check(&*state.store, &caller, id).await?;
    }
    let page = state
        .store
        .list_changed_blocks(first.as_ref(), &second, page_request(&query)?)
        .await?;
    let blocks: Vec<Value> = page
        .blocks
        .iter()
        .map(|b| {
            let mut v = json!({ "BlockIndex": b.index.0 });
            if let Some(t) = &b.first_token {
                v["FirstBlockToken"] = t.0.clone().into();
            }
            if let Some(t) = &b.second_token {
                v["SecondBlockToken"] = t.0.clone().into();
            }
            v
        })
        .collect();
    Ok(page_json(
        "ChangedBlocks",
        blocks,
        page.expiry_time,
        page.volume_size_gib,
        page.block_size,
        page.next_token,
    ))
}

pub async fn get_block(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response> {
    let Path((id, index)) = path?;
    let Query(query) = query?;
    let id = snapshot_id(&id)?;
    owners::check(&*state.store, &caller, &id).await?;
    let index = BlockIndex(index.parse().map_err(|_| {
        EbsError::validation(InvalidBlock, format!("block index {index:?} is not valid"))
    })?);
    let token = query
        .get("blockToken")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| EbsError::validation(InvalidBlockToken, "blockToken is required"))?;
    let block = state
        .store
        .get_block(&id, index, &BlockToken(token.clone()))
        .await?;
    let mut response = block.data.into_response();
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("x-amz-data-length", HeaderValue::from(BLOCK_SIZE as u64));
    h.insert(
        "x-amz-checksum",
        HeaderValue::from_str(&block.checksum.to_base64()).expect("base64 is a header value"),
    );
    h.insert(
        "x-amz-checksum-algorithm",
        HeaderValue::from_static("SHA256"),
    );
    Ok(response)
}

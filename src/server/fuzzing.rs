//! Entry points for the fuzz targets (`fuzz/`): the server's parsers, and the whole
//! application over a memory store, reachable from outside the crate. Not an API:
//! hidden from the documentation, and free to change with the targets.

use super::{ebs, ec2, OWNER_ID};
use crate::block::{BlockIndex, Digest, HashedBlock, LinearAggregate};
use crate::store::{
    MemoryStore, PageRequest, SnapshotId, SnapshotInfo, SnapshotStore, StartSnapshot,
};
use axum::http::HeaderMap;
use axum::Router;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// An EC2 Query form, read as DescribeSnapshots reads it (ids, owners, filters,
/// paging) and applied to `snapshots` without a store, plus the ids DeleteSnapshot and
/// CreateTags/DeleteTags would take. `Ok`: the indexes of the snapshots of the page
/// DescribeSnapshots would answer (each rendered as its XML); `Err`: the EC2 error code.
pub fn ec2_form(body: &[u8], snapshots: &[SnapshotInfo]) -> Result<Vec<usize>, String> {
    let code = |e: super::error::Ec2Error| e.code;
    let params = ec2::Params::parse(body);
    if let Some(raw) = params.get("SnapshotId") {
        let _ = ec2::snapshot_id(raw);
    }
    let _ = ec2::resources(&params);
    let ids = params
        .list("SnapshotId")
        .into_iter()
        .map(ec2::snapshot_id)
        .collect::<Result<Vec<_>, _>>()
        .map_err(code)?;
    let filters = ec2::filters(&params).map_err(code)?;
    let (start, max) = ec2::paging(&params, ids.is_empty()).map_err(code)?;
    let owners = params.list("Owner");
    if owners.iter().any(|o| *o != "self" && *o != OWNER_ID) {
        return Ok(Vec::new());
    }
    let named: Vec<SnapshotInfo> = snapshots
        .iter()
        .filter(|s| ids.is_empty() || ids.contains(&s.id))
        .cloned()
        .collect();
    let selected = ec2::select(named, &filters).map_err(code)?;
    let page: Vec<usize> = selected
        .iter()
        .filter_map(|s| snapshots.iter().position(|o| o.id == s.id))
        .skip(start)
        .take(max)
        .collect();
    for &i in &page {
        ec2::snapshot_xml(&snapshots[i]);
    }
    Ok(page)
}

/// The `*` and `?` matching of EC2 filter values.
pub fn glob(pattern: &str, text: &str) -> bool {
    super::filters::glob(pattern, text)
}

/// StartSnapshot's JSON body, as the server reads it (`Err`: the message).
pub fn start_snapshot_body(body: &[u8]) -> Result<StartSnapshot, String> {
    ebs::start_request(body).map_err(|e| e.message)
}

/// A snapshot id from a path or a query.
pub fn snapshot_id(raw: &str) -> Result<SnapshotId, String> {
    ebs::snapshot_id(raw).map_err(|e| e.message)
}

/// The paging parameters of ListSnapshotBlocks and ListChangedBlocks, from a query
/// string.
pub fn page_request(query: &str) -> Result<PageRequest, String> {
    let query: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    ebs::page_request(&query).map_err(|e| e.message)
}

/// The `x-amz-checksum` headers of PutSnapshotBlock and CompleteSnapshot.
pub fn checksum(headers: &HeaderMap, required: bool) -> Result<Option<Digest>, String> {
    ebs::checksum(headers, required).map_err(|e| e.message)
}

/// The whole application (no authentication) over a memory store that holds a
/// completed snapshot (blocks 0, zero, and 1) and a pending one.
pub struct App {
    pub router: Router,
    pub store: Arc<MemoryStore>,
    pub completed: SnapshotId,
    pub pending: SnapshotId,
    /// A genuine block token for block 1 of `completed`.
    pub block_token: String,
}

/// A fresh [`App`].
pub async fn app() -> App {
    // One data block, hashed once per process.
    static DATA: OnceLock<HashedBlock> = OnceLock::new();
    let data = DATA
        .get_or_init(|| {
            HashedBlock::new(Bytes::from(vec![0x5a; crate::block::BLOCK_SIZE])).expect("one block")
        })
        .clone();
    let store = Arc::new(MemoryStore::new());
    let completed = store
        .start_snapshot(StartSnapshot::new(1))
        .await
        .expect("start")
        .id;
    let mut aggregate = LinearAggregate::new();
    for (index, block) in [(0, HashedBlock::zero()), (1, data)] {
        let digest = block.digest();
        store
            .put_block(&completed, BlockIndex(index), block, digest)
            .await
            .expect("put");
        aggregate
            .push(BlockIndex(index), &digest)
            .expect("in order");
    }
    store
        .complete_snapshot(&completed, 2, Some(aggregate.finish()))
        .await
        .expect("complete");
    let pending = store
        .start_snapshot(StartSnapshot::new(1))
        .await
        .expect("start")
        .id;
    let page = store
        .list_blocks(&completed, PageRequest::default())
        .await
        .expect("list");
    let block_token = page
        .blocks
        .iter()
        .find(|b| b.index == BlockIndex(1))
        .expect("block 1")
        .token
        .0
        .clone();
    App {
        router: super::router(store.clone(), None),
        store,
        completed,
        pending,
        block_token,
    }
}

/// The server's TLS side from PEM bytes, built as `serve --tls-cert --tls-key` builds
/// it (the fuzz target's certificate and key are files of the fuzz crate).
pub fn tls(cert_pem: &[u8], key_pem: &[u8]) -> super::Tls {
    let name = std::path::Path::new;
    super::Tls::from_pem(cert_pem, key_pem, name("cert.pem"), name("key.pem"))
        .expect("a usable pair")
}

/// Feeds `flights` to the server's real handshake (its acceptor and timeout) as all
/// that a client sends before closing its side; whether the handshake completed.
///
/// The server's answers go into a buffer larger than any flight of its, so that it
/// never waits on a client that does not read.
pub async fn tls_handshake(tls: &super::Tls, flights: &[u8]) -> bool {
    use tokio::io::AsyncWriteExt;
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let timeout = std::time::Duration::from_secs(5);
    let accept = super::connections::handshake(tls, server, timeout);
    let send = async move {
        let _ = client.write_all(flights).await;
        let _ = client.shutdown().await;
        client
    };
    let (accepted, _client) = tokio::join!(accept, send);
    accepted.is_ok()
}

/// A keys file (`serve --keys`), read as the server reads it: `Ok`, the number of keys;
/// `Err`, the message, which names the file. Panics if a key's `Debug` (or its
/// credentials') depends on its secret: it must never show it.
pub fn keys_file(text: &str) -> Result<usize, String> {
    let name = "keys.toml";
    let set = super::keys::KeySet::parse(std::path::Path::new(name), text).map_err(|e| {
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("keys file {name}")),
            "{message}"
        );
        message
    })?;
    for key in set.keys() {
        let mut blanked = (**key).clone();
        blanked.credentials.secret_access_key = "-".into();
        assert_eq!(format!("{key:?}"), format!("{blanked:?}"));
        assert_eq!(
            format!("{:?}", key.credentials),
            format!("{:?}", blanked.credentials)
        );
        assert!(key.owner.len() == 12 && !key.credentials.secret_access_key.is_empty());
        assert!(set.get(&key.credentials.access_key_id).is_some());
    }
    Ok(set.len())
}

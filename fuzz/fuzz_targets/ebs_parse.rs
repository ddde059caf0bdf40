//! The EBS side's parsing of what a client sends: StartSnapshot's JSON body (then the
//! store's rules on it), snapshot ids, the list calls' paging parameters, the checksum
//! headers, and page and block tokens (src/store/token.rs).
//!
//! The input is lines: a JSON body, a snapshot id, a query string, an x-amz-checksum
//! value, a token. Beyond not crashing: an id that parses is `snap-` and 17 hex digits,
//! and no token made up by the fuzzer opens a block or a page (the store's key is
//! random: only a genuine token may).
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use ebsnap::block::BlockIndex;
use ebsnap::fuzzing::server;
use ebsnap::store::{BlockToken, MemoryStore, PageRequest, PageToken, SnapshotStore};
use ebsnap_fuzz::runtime;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == b'\n');
    let mut next = || fields.next().unwrap_or_default();
    let (body, id, query, checksum, token) = (next(), next(), next(), next(), next());
    let (id, query, token) = (
        String::from_utf8_lossy(id),
        String::from_utf8_lossy(query),
        String::from_utf8_lossy(token).into_owned(),
    );

    if let Ok(id) = server::snapshot_id(&id) {
        let hex = id.as_str().strip_prefix("snap-").unwrap();
        assert!(hex.len() == 17 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let page = server::page_request(&query);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(checksum) {
        headers.insert("x-amz-checksum", v);
        headers.insert(
            "x-amz-checksum-algorithm",
            HeaderValue::from_static("SHA256"),
        );
    }
    let _ = server::checksum(&headers, true);

    runtime().block_on(async {
        if let Ok(start) = server::start_snapshot_body(body) {
            // The store's rules on whatever the body asked for.
            let _ = MemoryStore::new().start_snapshot(start).await;
        }
        let app = server::app().await;
        let store = &app.store;
        if token != app.block_token {
            for index in [0, 1, 2, u64::MAX] {
                let got = store
                    .get_block(
                        &app.completed,
                        BlockIndex(index),
                        &BlockToken(token.clone()),
                    )
                    .await;
                assert!(got.is_err(), "a made-up block token opened block {index}");
            }
        }
        let forged = PageRequest::from_token(Some(PageToken(token.clone())));
        assert!(
            store
                .list_blocks(&app.completed, forged.clone())
                .await
                .is_err()
                || token.is_empty()
        );
        assert!(
            store
                .list_changed_blocks(None, &app.completed, forged)
                .await
                .is_err()
                || token.is_empty()
        );
        if let Ok(page) = page {
            let _ = store.list_blocks(&app.completed, page.clone()).await;
            let _ = store
                .list_changed_blocks(Some(&app.completed), &app.completed, page)
                .await;
        }
    });
});

//! A whole local store read from disk (src/store/local/): metadata, maps, journals,
//! pack indexes and packs, as a writer opens it (recovery and journal repair
//! included), then listed, read block by block, compared, checked, and one snapshot
//! deleted (garbage collection included).
//!
//! The input is the store's files, each introduced by a line `=== NAME` (NAME one of
//! `snapshots/snap-<17 hex>.json|.map|.journal`, `packs/<8 hex>.idx|.pack`, `key`,
//! `ebsnap-store.json`; anything else is skipped, so nothing is written outside a
//! scratch directory). A valid key and format file are supplied when absent. Damage
//! must be an error (or a damage report), never a crash or a hang.
#![no_main]

use ebsnap::block::BlockIndex;
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{LocalStore, PageRequest, SnapshotId, SnapshotStore};
use ebsnap_fuzz::runtime;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Whether `name` is one of the store's own file names.
fn allowed(name: &str) -> bool {
    let hex =
        |s: &str, n: usize, digits: &[u8]| s.len() == n && s.bytes().all(|b| digits.contains(&b));
    const LOWER_HEX: &[u8] = b"0123456789abcdef";
    if name == "key" || name == "ebsnap-store.json" {
        return true;
    }
    if let Some(file) = name.strip_prefix("snapshots/snap-") {
        return [".json", ".map", ".journal"].iter().any(|ext| {
            file.strip_suffix(ext)
                .is_some_and(|h| hex(h, 17, LOWER_HEX))
        });
    }
    if let Some(file) = name.strip_prefix("packs/") {
        return [".idx", ".pack"]
            .iter()
            .any(|ext| file.strip_suffix(ext).is_some_and(|h| hex(h, 8, LOWER_HEX)));
    }
    false
}

/// Writes the sections of `data` under `root`.
fn materialize(root: &Path, data: &[u8]) {
    std::fs::create_dir_all(root.join("snapshots")).unwrap();
    std::fs::create_dir_all(root.join("packs")).unwrap();
    std::fs::write(root.join("key"), [7u8; 32]).unwrap();
    std::fs::write(
        root.join("ebsnap-store.json"),
        br#"{"format":"ebsnap-local-store","version":1}"#,
    )
    .unwrap();
    let marker = b"=== ";
    let mut starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i..].starts_with(marker) && (i == 0 || data[i - 1] == b'\n'))
        .collect();
    starts.push(data.len());
    for pair in starts.windows(2) {
        let section = &data[pair[0] + marker.len()..pair[1]];
        let end = section
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(section.len());
        let Ok(name) = std::str::from_utf8(&section[..end]) else {
            continue;
        };
        if !allowed(name) {
            continue;
        }
        let mut content = section.get(end + 1..).unwrap_or_default();
        // The newline before the next marker belongs to the marker.
        if pair[1] < data.len() {
            content = content.strip_suffix(b"\n").unwrap_or(content);
        }
        std::fs::write(root.join(name), content).unwrap();
    }
}

/// Every block of a snapshot, page by page (a bounded number of pages: more would
/// mean paging that never ends).
async fn read_all(store: &LocalStore, id: &SnapshotId) {
    let mut request = PageRequest {
        max_results: Some(100),
        ..PageRequest::default()
    };
    for _ in 0..1000 {
        let Ok(page) = store.list_blocks(id, request.clone()).await else {
            return;
        };
        for block in page.blocks.iter().take(64) {
            if let Ok(got) = store.get_block(id, block.index, &block.token).await {
                assert_eq!(got.data.len(), 524_288);
            }
        }
        let Some(token) = page.next_token else {
            return;
        };
        request = PageRequest {
            max_results: Some(100),
            ..PageRequest::from_token(Some(token))
        };
    }
    panic!("ListSnapshotBlocks of {id} never ends");
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    materialize(&root, data);
    runtime().block_on(async {
        let Ok(store) = LocalStore::open(&root, Access::Write, LockWait::Fail) else {
            return;
        };
        let Ok(snapshots) = store.list_snapshots().await else {
            return;
        };
        for info in snapshots.iter().take(8) {
            let _ = store.describe_snapshot(&info.id).await;
            read_all(&store, &info.id).await;
            let _ = store
                .list_changed_blocks(info.parent.as_ref(), &info.id, PageRequest::default())
                .await;
            let _ = store
                .get_block(
                    &info.id,
                    BlockIndex(0),
                    &ebsnap::store::BlockToken(String::new()),
                )
                .await;
        }
        let _ = store.check(false);
        if let Some(first) = snapshots.first() {
            let _ = store.delete_snapshot(&first.id).await;
            let _ = store.check(false);
        }
    });
});

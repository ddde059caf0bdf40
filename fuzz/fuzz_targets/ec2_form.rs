//! The EC2 Query form (src/server/ec2.rs): decoding, `SnapshotId.N`, `Owner.N`,
//! `Filter.N.Name` / `Filter.N.Value.M`, `MaxResults` / `NextToken`, `ResourceId.N`,
//! applied to three snapshots without a store; and the filter glob, checked against
//! a plain recursive matcher on short strings.
#![no_main]

use ebsnap::fuzzing::server;
use ebsnap::store::{SnapshotInfo, SnapshotStatus, Tag};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

fn snapshots() -> &'static [SnapshotInfo] {
    static SNAPSHOTS: OnceLock<Vec<SnapshotInfo>> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        let snapshot = |id: &str, status, description: &str, tags: &[(&str, &str)]| SnapshotInfo {
            id: id.parse().unwrap(),
            parent: None,
            status,
            volume_size_gib: 8,
            block_size: 524_288,
            start_time: UNIX_EPOCH,
            description: Some(description.into()),
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
            encrypted: false,
            kms_key_arn: None,
            changed_blocks_count: None,
            aggregate: None,
        };
        vec![
            snapshot(
                "snap-0123456789abcdef0",
                SnapshotStatus::Completed,
                "db1 data disk",
                &[("host", "db1"), ("ebsnap:source", "/dev/sdb")],
            ),
            snapshot("snap-0123456789abcdef1", SnapshotStatus::Pending, "", &[]),
            snapshot(
                "snap-fedcba98765432100",
                SnapshotStatus::Error,
                "<&>\"'é",
                &[("", ""), ("k?*", "v*?")],
            ),
        ]
    })
}

/// `*` any run, `?` one character: the definition, by recursion.
fn naive(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| naive(rest, &text[i..])),
        Some(('?', rest)) => !text.is_empty() && naive(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && naive(rest, &text[1..]),
    }
}

fuzz_target!(|data: &[u8]| {
    let all = snapshots();
    if let Ok(page) = server::ec2_form(data, all) {
        assert!(page.iter().all(|&i| i < all.len()));
    }
    // Any two short values of the form, as pattern and text.
    let values: Vec<Vec<char>> = form_urlencoded::parse(data)
        .map(|(_, v)| v.chars().collect::<Vec<char>>())
        .filter(|v| v.len() <= 12)
        .take(8)
        .collect();
    for p in &values {
        for t in &values {
            let (ps, ts): (String, String) = (p.iter().collect(), t.iter().collect());
            assert_eq!(server::glob(&ps, &ts), naive(p, t), "{ps:?} on {ts:?}");
        }
    }
});

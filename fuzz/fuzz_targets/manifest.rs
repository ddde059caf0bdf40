//! A source's manifest (src/block/manifest.rs), opened from arbitrary bytes: the
//! header, its JSON, the record count against the file's length, and the records.
#![no_main]

use ebsnap::block::manifest::{Entry, Manifest};
use ebsnap_fuzz::scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch().join("fuzz.manifest");
    std::fs::write(&path, data).unwrap();
    let Ok(Some(manifest)) = Manifest::open(&path) else {
        return;
    };
    let blocks = manifest.header().blocks;
    assert!(
        4096 + blocks * 32 <= data.len() as u64,
        "records within the file"
    );
    for index in (0..blocks.min(256)).chain([blocks, blocks.saturating_add(1), u64::MAX]) {
        let entry = manifest.entry(index);
        assert_eq!(
            matches!(entry, Entry::Unknown),
            index >= blocks,
            "Unknown exactly beyond the records"
        );
    }
});

//! Property: random images with random contents round-trip exactly, through the engine
//! and the local store.

mod common;

use common::*;
use ebsnap::engine::{self, BackupOptions, NoProgress, RestoreOptions};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{LocalStore, SnapshotStore};
use proptest::prelude::*;
use std::sync::Arc;

/// An image: its size and the regions holding random data (some are zeros on purpose).
fn image() -> impl Strategy<Value = (u64, Vec<(u64, usize, bool)>)> {
    (0u64..12 * BLOCK).prop_flat_map(|size| {
        let region = (0..size.max(1), 1usize..(3 * BLOCK as usize), any::<bool>());
        (Just(size), proptest::collection::vec(region, 0..6))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_images_round_trip((size, regions) in image(), seed in any::<u64>()) {
        let env = Env::new();
        let path = env.path("image");
        // Regions past the end are cut so the file keeps its size.
        let regions: Vec<(u64, usize)> = regions.iter().map(|&(off, len, _)| (off, len.min((size - off.min(size)) as usize))).filter(|r| r.1 > 0).collect();
        make_image(&path, size, &regions, seed);
        // Some regions are overwritten with explicit zeros: data on disk, zeros in content.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for (i, &(off, len)) in regions.iter().enumerate() {
            if (seed >> (i % 64)) & 1 == 1 {
                std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; len / 2], off).unwrap();
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap());
            let b = engine::backup(store.clone(), &path, &BackupOptions::default(), &NoProgress).await.unwrap();
            prop_assert_eq!(b.source_bytes, size);
            prop_assert_eq!(b.blocks_written + b.blocks_zero, b.blocks_total);
            let id = b.snapshot_id.as_deref().unwrap().parse().unwrap();
            let out = env.path("restored");
            engine::restore(store.clone(), &id, &out, &RestoreOptions::default(), &NoProgress).await.unwrap();
            prop_assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&out).unwrap());
            let v = engine::verify(store, &id, Some(&path), 4, &NoProgress).await.unwrap();
            prop_assert!(v.ok, "verify --against the source: {:?}", v);
            Ok(())
        })?;
    }
}

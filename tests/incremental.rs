//! Incremental backup and restore over generations of a changing image, on the local
//! store and on the EBS store through `ebsnap serve`.

mod common;

use common::server::TestServer;
use common::*;
use ebsnap::engine::{
    self, BackupOptions, BackupReport, NoProgress, ParentChoice, RestoreOptions, RestoreReport,
};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{LocalStore, SnapshotId, SnapshotStore};
use proptest::prelude::*;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A test's world: a store, a state directory, an image that changes.
struct World {
    env: Env,
    store: Arc<dyn SnapshotStore>,
    image: PathBuf,
}

impl World {
    fn local() -> World {
        let env = Env::new();
        let store =
            Arc::new(LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap());
        let image = env.path("image");
        World { env, store, image }
    }

    fn state(&self) -> PathBuf {
        self.env.path("state")
    }

    async fn backup_with(&self, parent: ParentChoice, encrypted: bool) -> BackupReport {
        let options = BackupOptions {
            parent,
            encrypted,
            state_dir: Some(self.state()),
            ..BackupOptions::default()
        };
        engine::backup(self.store.clone(), &self.image, &options, &NoProgress)
            .await
            .unwrap()
    }

    async fn backup(&self) -> BackupReport {
        self.backup_with(ParentChoice::Auto, false).await
    }

    async fn restore(&self, id: &str, target: &Path, from: Option<&str>) -> RestoreReport {
        let options = RestoreOptions {
            from: from.map(|f| f.parse().unwrap()),
            state_dir: Some(self.state()),
            force: true,
            ..RestoreOptions::default()
        };
        engine::restore(
            self.store.clone(),
            &id.parse::<SnapshotId>().unwrap(),
            target,
            &options,
            &NoProgress,
        )
        .await
        .unwrap()
    }

    fn write(&self, block: u64, seed: u64) {
        let mut data = vec![0u8; BLOCK as usize];
        fill_random(&mut data, seed);
        File::options()
            .write(true)
            .open(&self.image)
            .unwrap()
            .write_all_at(&data, block * BLOCK)
            .unwrap();
    }

    fn zero(&self, block: u64) {
        File::options()
            .write(true)
            .open(&self.image)
            .unwrap()
            .write_all_at(&vec![0u8; BLOCK as usize], block * BLOCK)
            .unwrap();
    }
}

fn id(r: &BackupReport) -> String {
    r.snapshot_id.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_zeroed_since_the_parent_is_written_as_zeros() {
    let w = World::local();
    make_image(&w.image, 8 * BLOCK, &[(0, 8 * BLOCK as usize)], 1);
    let first = w.backup().await;
    assert_eq!(first.blocks_written, 8);
    w.zero(3);
    let second = w.backup().await;
    assert_eq!(
        second.parent_snapshot_id.as_deref(),
        Some(id(&first).as_str())
    );
    assert_eq!(second.blocks_written, 1, "only the zeroed block");
    assert_eq!(second.blocks_unchanged, 7);
    let out = w.env.path("out");
    w.restore(&id(&second), &out, None).await;
    assert_eq!(
        fs::read(&out).unwrap(),
        fs::read(&w.image).unwrap(),
        "the child does not keep the parent's stale data"
    );
    let unchanged = w.backup().await;
    assert_eq!(unchanged.blocks_written, 0);
    assert_eq!(unchanged.blocks_unchanged, 8);
}

/// The holes of a large sparse source, and of its manifest, are jumped over, not
/// walked: what lies between data far apart is still found, and a block that became a
/// hole far out is written as zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_far_apart_in_a_sparse_volume_is_found_and_a_far_block_zeroed() {
    let w = World::local();
    // 1 TiB: two million blocks, data at the start, at 100 GiB and near the end.
    let (far, last) = (200_000, 2_097_150);
    let regions = [(0, BLOCK as usize), (far * BLOCK, 2 * BLOCK as usize)];
    make_image(&w.image, 1 << 40, &regions, 3);
    w.write(last, 30);
    let first = w.backup().await;
    assert_eq!(first.blocks_written, 4);
    // Block `far + 1` becomes a hole (punched), block `last` changes.
    punch(&w.image, (far + 1) * BLOCK, BLOCK);
    w.write(last, 31);
    let second = w.backup().await;
    assert_eq!(
        second.blocks_written, 2,
        "the punched block and the changed one"
    );
    assert_eq!(second.blocks_unchanged, 2);
    let out = w.env.path("out");
    w.restore(&id(&second), &out, None).await;
    assert_same_content(&out, &w.image);
}

/// Deallocates `len` bytes at `offset` of `path`: they read as zeros, and are a hole.
fn punch(path: &Path, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let f = File::options().write(true).open(path).unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: a plain syscall on a descriptor we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_two_generations_back_and_a_lost_manifest() {
    let w = World::local();
    make_image(&w.image, 10 * BLOCK, &[(0, 10 * BLOCK as usize)], 2);
    let g1 = w.backup().await;
    w.write(2, 20);
    let g2 = w.backup().await;
    w.write(5, 50);
    let g3 = w
        .backup_with(ParentChoice::Snapshot(id(&g1).parse().unwrap()), false)
        .await;
    assert_eq!(g3.parent_snapshot_id.as_deref(), Some(id(&g1).as_str()));
    assert_eq!(
        g3.blocks_written, 2,
        "blocks 2 and 5 differ from g1 (the manifest describes g2)"
    );
    let out = w.env.path("out");
    w.restore(&id(&g3), &out, None).await;
    assert_eq!(fs::read(&out).unwrap(), fs::read(&w.image).unwrap());
    let _ = g2;

    fs::remove_dir_all(w.state().join("manifests")).unwrap();
    w.zero(7);
    let g4 = w.backup().await;
    assert_eq!(
        g4.parent_snapshot_id.as_deref(),
        Some(id(&g3).as_str()),
        "found by its source tag"
    );
    assert_eq!(
        g4.blocks_written, 10,
        "without a manifest: the 9 data blocks, and the zero where the parent has data"
    );
    w.restore(&id(&g4), &out, Some(&id(&g3))).await;
    assert_eq!(fs::read(&out).unwrap(), fs::read(&w.image).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_volume_and_a_shrinking_one() {
    let w = World::local();
    make_image(&w.image, (1 << 30) - BLOCK, &[(0, BLOCK as usize)], 3);
    let g1 = w.backup().await;
    assert_eq!(g1.volume_size_gib, 1);
    let f = File::options().write(true).open(&w.image).unwrap();
    f.set_len((1 << 30) + 3 * BLOCK).unwrap();
    f.write_all_at(b"grown", (1 << 30) + BLOCK).unwrap();
    let g2 = w.backup().await;
    assert_eq!(g2.volume_size_gib, 2);
    assert_eq!(g2.parent_snapshot_id.as_deref(), Some(id(&g1).as_str()));
    assert_eq!(g2.blocks_written, 1);
    let out = w.env.path("out");
    w.restore(&id(&g1), &out, None).await;
    // Another name of the same file finds the same record.
    let alias = w.env.path("alias");
    std::os::unix::fs::symlink(&out, &alias).unwrap();
    let r = w.restore(&id(&g2), &alias, None).await;
    assert_eq!(
        r.from_snapshot_id.as_deref(),
        Some(id(&g1).as_str()),
        "remembered what the target holds"
    );
    assert_same_content(&w.image, &out);
    f.set_len(BLOCK).unwrap();
    let g3 = w.backup().await;
    assert_eq!(
        g3.parent_snapshot_id, None,
        "a shrink below the parent's volume starts a new lineage"
    );
    let err = engine::backup(
        w.store.clone(),
        &w.image,
        &BackupOptions {
            parent: ParentChoice::Snapshot(id(&g2).parse().unwrap()),
            state_dir: Some(w.state()),
            ..BackupOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("smaller than parent"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_snapshots_get_every_zero_block() {
    let server = TestServer::start(true).await;
    let env = Env::new();
    let w = World {
        store: Arc::new(server.client().await),
        image: env.path("image"),
        env,
    };
    make_image(&w.image, 6 * BLOCK, &[(BLOCK, 1000)], 4);
    let g1 = w.backup_with(ParentChoice::Auto, true).await;
    assert_eq!(
        g1.blocks_written, 2048,
        "absent blocks of an encrypted snapshot are not zeros: the whole volume is written"
    );
    w.write(4, 40);
    w.zero(1);
    let g2 = w.backup().await;
    assert_eq!(g2.parent_snapshot_id.as_deref(), Some(id(&g1).as_str()));
    assert_eq!(g2.blocks_written, 2);
    let out = w.env.path("out");
    w.restore(&id(&g2), &out, None).await;
    assert_eq!(fs::read(&out).unwrap(), fs::read(&w.image).unwrap());
}

/// One generation's change to the image.
#[derive(Clone, Debug)]
enum Change {
    Write(u64, u64),
    Zero(u64),
    Hole(u64),
}

const BLOCKS: u64 = 24;

fn changes() -> impl Strategy<Value = Vec<Vec<Change>>> {
    let change = prop_oneof![
        (0..BLOCKS, any::<u64>()).prop_map(|(b, s)| Change::Write(b, s)),
        (0..BLOCKS).prop_map(Change::Zero),
        (0..BLOCKS).prop_map(Change::Hole),
    ];
    proptest::collection::vec(proptest::collection::vec(change, 0..6), 2..5)
}

fn apply(image: &Path, change: &Change) {
    let f = File::options().write(true).open(image).unwrap();
    match *change {
        Change::Write(b, seed) => {
            let mut data = vec![0u8; BLOCK as usize];
            fill_random(&mut data, seed);
            f.write_all_at(&data, b * BLOCK).unwrap();
        }
        Change::Zero(b) => f
            .write_all_at(&vec![0u8; BLOCK as usize], b * BLOCK)
            .unwrap(),
        Change::Hole(b) => {
            use std::os::unix::io::AsRawFd;
            let r = unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (b * BLOCK) as i64,
                    BLOCK as i64,
                )
            };
            assert_eq!(r, 0);
        }
    }
}

/// Blocks whose content differs between two images, each block zero-padded as a
/// snapshot holds it (a write past the end may have grown the image).
fn differing_blocks(a: &[u8], b: &[u8]) -> u64 {
    let block = |img: &[u8], i: usize| {
        let mut out = img
            .get(i * BLOCK as usize..)
            .unwrap_or(&[])
            .iter()
            .take(BLOCK as usize)
            .copied()
            .collect::<Vec<u8>>();
        out.resize(BLOCK as usize, 0);
        out
    };
    let n = a.len().max(b.len()).div_ceil(BLOCK as usize);
    (0..n).filter(|&i| block(a, i) != block(b, i)).count() as u64
}

/// Backs up every generation incrementally, checks that exactly the changed blocks were
/// written, then restores every generation in full and from its predecessor.
async fn generations(
    w: &World,
    gens: &[Vec<Change>],
    seed: u64,
) -> Result<Vec<(String, u64)>, TestCaseError> {
    make_image(
        &w.image,
        BLOCKS * BLOCK - 1000,
        &[(0, 6 * BLOCK as usize), (15 * BLOCK, 4 * BLOCK as usize)],
        seed,
    );
    let mut copies: Vec<(String, Vec<u8>)> = Vec::new();
    let mut written = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    for (n, gen) in gens.iter().enumerate() {
        for change in gen {
            apply(&w.image, change);
        }
        let now = fs::read(&w.image).unwrap();
        let report = w.backup().await;
        if let Some(prev) = &previous {
            prop_assert_eq!(
                report.blocks_written,
                differing_blocks(prev, &now),
                "generation {}: written = changed",
                n
            );
            prop_assert!(report.parent_snapshot_id.is_some());
        }
        previous = Some(now.clone());
        written.push((id(&report), report.blocks_written));
        copies.push((id(&report), now));
    }
    let chained = w.env.path("chained");
    for (n, (snapshot, content)) in copies.iter().enumerate() {
        let full = w.env.path(&format!("full-{n}"));
        w.restore(snapshot, &full, None).await;
        prop_assert!(
            fs::read(&full).unwrap() == *content,
            "full restore of generation {}",
            n
        );
        let from = n.checked_sub(1).map(|p| copies[p].0.clone());
        let r = w.restore(snapshot, &chained, from.as_deref()).await;
        prop_assert!(
            fs::read(&chained).unwrap() == *content,
            "incremental restore of generation {}",
            n
        );
        if n > 0 {
            // Only the blocks that differ from the predecessor are fetched.
            prop_assert!(r.blocks_fetched <= differing_blocks(&copies[n - 1].1, content));
        }
    }
    Ok(written)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn generations_round_trip_on_the_local_store(gens in changes(), seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async { generations(&World::local(), &gens, seed).await.map(|_| ()) })?;
    }

    #[test]
    fn generations_round_trip_through_the_server(gens in changes(), seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let server = TestServer::start(true).await;
            let env = Env::new();
            let w = World { store: Arc::new(server.client().await), image: env.path("image"), env };
            let written = generations(&w, &gens, seed).await?;
            // On the server's side: each snapshot received exactly the blocks the backup
            // reported writing (the changed ones).
            for (snapshot, blocks) in written {
                prop_assert_eq!(server_side_puts(&server, &snapshot.parse().unwrap()).await, blocks);
            }
            Ok(())
        })?;
    }
}

/// The number of blocks the server's own store says were written to a snapshot.
async fn server_side_puts(server: &TestServer, id: &SnapshotId) -> u64 {
    server
        .store()
        .describe_snapshot(id)
        .await
        .unwrap()
        .changed_blocks_count
        .unwrap()
}

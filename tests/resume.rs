//! Interrupted backups resume: `kill -9` at random moments, SIGINT and SIGTERM, and a
//! source that changes between the interruption and the rerun.

mod common;

use common::rigged::{unavailable, Call, Rigged, Then};
use common::*;
use ebsnap::block::BlockIndex;
use ebsnap::engine::{self, BackupOptions, NoProgress, Progress, RestoreOptions, Stop};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{
    LocalStore, SnapshotId, SnapshotStatus, SnapshotStore, StoreError, ValidationReason,
};
use ebsnap::Error;
use serde_json::Value;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (splitmix64), so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Gives `count` distinct random blocks of `image` new random content; returns how many.
fn rewrite_blocks(image: &Path, blocks: u64, count: u64, rng: &mut Rng) -> u64 {
    let f = OpenOptions::new().write(true).open(image).unwrap();
    let mut chosen: Vec<u64> = (0..blocks).collect();
    for i in 0..count as usize {
        let j = i + rng.below(blocks - i as u64) as usize;
        chosen.swap(i, j);
    }
    let mut data = vec![0u8; BLOCK as usize];
    for &index in &chosen[..count as usize] {
        fill_random(&mut data, rng.next());
        f.write_all_at(&data, index * BLOCK).unwrap();
    }
    f.sync_all().unwrap();
    count
}

fn journals(env: &Env) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(env.path("xdg-state/ebsnap/uploads")) {
        Ok(dir) => dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "journal"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// The crash loop: 20 runs, each killing a backup (`kill -9`) at a random
/// moment and then running the same command again. Every rerun must end with a
/// snapshot that restores byte-identical, and reruns that resumed must put fewer
/// blocks than a fresh start would (the blocks this round changed).
#[test]
fn backups_killed_at_random_moments_resume_and_restore_identically() {
    const BLOCKS: u64 = 768; // 384 MiB
    const CHANGED: u64 = 768;
    // Paced, so that a backup lasts long enough (about 1.3 s, with a checkpoint every
    // half second) to be killed in any phase on any machine.
    const RATE: &str = "600";
    let seed = std::env::var("EBSNAP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed);
    let env = Env::new();
    let image = env.dense_image("image", BLOCKS, seed);
    let img = image.to_str().unwrap();
    // An uninterrupted backup: the parent of what follows, and how long one takes here.
    let started = Instant::now();
    env.json(&["backup", img, "--max-rate", RATE]);
    let full = started.elapsed();
    let (mut resumed_runs, mut runs_with_fewer) = (0, 0);
    for run in 0..20 {
        let changed = rewrite_blocks(&image, BLOCKS, CHANGED, &mut rng);
        let command = ["backup", img, "--max-rate", RATE];
        let mut child = env.process(&command).arg("-q").spawn().unwrap();
        // Within the time a full backup takes, so that the kill lands in any phase:
        // planning, sending, checkpoints, completion, or after the end.
        let delay = full.mul_f64(0.1 + rng.below(900) as f64 / 1000.0);
        std::thread::sleep(delay);
        let finished_first = matches!(child.try_wait(), Ok(Some(s)) if s.success());
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let report = env.json(&command);
        let (written, resumed) = (
            number(&report, "blocks_written"),
            number(&report, "blocks_resumed"),
        );
        let context = format!("run {run} (seed {seed}, killed after {delay:?}): {report}");
        if report["resumed"] == true {
            resumed_runs += 1;
            if resumed > 0 {
                runs_with_fewer += 1;
                assert!(written < changed, "{context}");
            }
        } else {
            // A fresh start, or nothing left to do: the killed run had completed its
            // snapshot (or sent its completion, which the rerun finished).
            assert!(written == changed || written == 0, "{context}");
            assert_eq!(resumed, 0, "{context}");
            if finished_first {
                assert_eq!(written, 0, "{context}");
            }
        }
        assert!(journals(&env).is_empty(), "{context}: a journal stays");
        let target = env.path(&format!("restored-{run}"));
        env.restore(report["snapshot_id"].as_str().unwrap(), &target);
        assert_same_content(&image, &target);
        std::fs::remove_file(&target).unwrap();
        keep_only(&env, report["snapshot_id"].as_str().unwrap(), &context);
    }
    eprintln!("20 kills: {resumed_runs} reruns resumed, {runs_with_fewer} put fewer blocks");
    assert!(
        runs_with_fewer >= 3,
        "only {runs_with_fewer} of 20 reruns resumed with blocks already put (seed {seed})"
    );
}

/// Checks that nothing was left behind (each snapshot a killed run started was
/// completed by its rerun, or deleted), then deletes every snapshot but `latest`: the
/// blocks of twenty rounds of 384 MiB would otherwise fill a small disk.
fn keep_only(env: &Env, latest: &str, context: &str) {
    let snapshots = env.json(&["snapshots"]);
    for s in snapshots["snapshots"].as_array().unwrap() {
        assert_eq!(s["status"], "completed", "{context}: {snapshots}");
        let id = s["snapshot_id"].as_str().unwrap();
        if id != latest {
            env.json(&["delete", id]);
        }
    }
}

/// SIGINT and SIGTERM stop a backup cleanly: exit 130 or 143, a message that says how
/// to resume, and the rerun resumes with what was already put.
#[test]
fn a_signal_stops_a_backup_that_the_same_command_resumes() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let env = Env::new();
        let blocks = 768;
        let image = env.dense_image("image", blocks, 9);
        let img = image.to_str().unwrap();
        let child = env
            .process(&["backup", img, "-q"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Once the journal exists, the snapshot is started and puts are under way.
        wait_until("no journal appeared", || !journals(&env).is_empty());
        std::thread::sleep(Duration::from_millis(50));
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // The backup won the race: nothing to resume, which is fine too.
            continue;
        }
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("interrupted by"), "{stderr}");
        assert!(stderr.contains("run the same command again"), "{stderr}");
        assert_eq!(journals(&env).len(), 1);

        let report = env.json(&["backup", img]);
        assert_eq!(report["resumed"], true, "{report}");
        assert_eq!(
            number(&report, "blocks_written") + number(&report, "blocks_resumed"),
            blocks,
            "{report}"
        );
        let target = env.path("restored");
        env.restore(report["snapshot_id"].as_str().unwrap(), &target);
        assert_same_content(&image, &target);
    }
}

/// Asks the backup to stop once `after` bytes are behind it.
struct StopAfter {
    stop: Stop,
    after: u64,
}

impl Progress for StopAfter {
    fn set(&self, done: u64) {
        if done >= self.after {
            self.stop.request(libc::SIGINT);
        }
    }
}

/// Backs up `image` and stops it (as a signal would) once `after` bytes are behind it.
/// Returns the snapshot kept pending for a resume, and the options to resume it with.
async fn interrupted_backup(
    env: &Env,
    store: Arc<dyn SnapshotStore>,
    image: &Path,
    after: u64,
) -> (SnapshotId, BackupOptions) {
    let stop = Stop::default();
    let options = BackupOptions {
        state_dir: Some(env.path("state")),
        workers: 4,
        stop: stop.clone(),
        ..BackupOptions::default()
    };
    let first = engine::backup(store, image, &options, &StopAfter { stop, after }).await;
    let Err(Error::Resumable { snapshot, .. }) = first else {
        panic!("expected a resumable interruption, got {first:?}");
    };
    let rerun = BackupOptions {
        stop: Stop::default(),
        ..options
    };
    (snapshot, rerun)
}

/// The source changes between the interruption and the rerun: blocks the interrupted
/// run put become zeros, or get other data. The resumed snapshot must hold the new
/// content, with no block of the interrupted run left behind.
#[tokio::test]
async fn a_resumed_backup_takes_in_what_changed_since_the_interruption() {
    let env = Env::new();
    let blocks = 64;
    let image = env.dense_image("image", blocks, 3);
    let local = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(local);
    let (snapshot, options) =
        interrupted_backup(&env, store.clone(), &image, blocks / 2 * BLOCK).await;

    // Zeros where the first run put data (and a hole), new data elsewhere.
    let f = OpenOptions::new().write(true).open(&image).unwrap();
    f.write_all_at(&vec![0u8; BLOCK as usize], 0).unwrap();
    f.write_all_at(&vec![0u8; BLOCK as usize], 5 * BLOCK)
        .unwrap();
    let mut data = vec![0u8; BLOCK as usize];
    fill_random(&mut data, 77);
    f.write_all_at(&data, 2 * BLOCK).unwrap();
    f.write_all_at(&data, (blocks - 1) * BLOCK).unwrap();
    drop(f);

    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    assert!(report.resumed);
    assert_eq!(report.snapshot_id.as_deref(), Some(snapshot.as_str()));
    assert!(report.blocks_resumed > 0 && report.blocks_resumed < blocks);
    let target = env.path("restored");
    let restore = RestoreOptions {
        workers: 4,
        ..RestoreOptions::default()
    };
    engine::restore(store.clone(), &snapshot, &target, &restore, &NoProgress)
        .await
        .unwrap();
    assert_same_content(&image, &target);
    let verified = engine::verify(store, &snapshot, Some(&image), 4, &NoProgress)
        .await
        .unwrap();
    assert!(verified.ok, "{verified:?}");
}

/// The source grew between the interruption and the rerun, within the same volume
/// size: the rerun starts afresh, since the pending snapshot's size tag (what a restore
/// gives back) was set at its start and says the old size.
#[tokio::test]
async fn a_source_that_changed_size_since_the_interruption_is_backed_up_afresh() {
    let env = Env::new();
    let image = env.path("image");
    let size = 64 * BLOCK + 1000;
    make_image(&image, size, &[(0, size as usize)], 8);
    let local = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(local);
    let (_, options) = interrupted_backup(&env, store.clone(), &image, size / 2).await;

    let mut more = vec![0u8; 300_000];
    fill_random(&mut more, 9);
    OpenOptions::new()
        .append(true)
        .open(&image)
        .unwrap()
        .write_all_at(&more, size)
        .unwrap();
    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    assert!(!report.resumed, "{report:?}");
    restore_and_compare(&env, store, &report, &image).await;
}

/// A rerun that asks for something else (`--full` where the interrupted run had a
/// parent) does not resume: it deletes the interrupted snapshot and starts afresh.
#[test]
fn a_rerun_asking_for_another_parent_starts_afresh() {
    let env = Env::new();
    let blocks = 768;
    let image = env.dense_image("image", blocks, 5);
    let img = image.to_str().unwrap();
    env.backup(&image);
    rewrite_blocks(&image, blocks, blocks, &mut Rng(1));
    let child = env.process(&["backup", img, "-q"]).spawn().unwrap();
    wait_until("no journal appeared", || !journals(&env).is_empty());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        return; // finished before the signal: nothing to test this time
    }
    let report = env.json(&["backup", img, "--full"]);
    assert_eq!(report["resumed"], false);
    assert_eq!(report["parent_snapshot_id"], Value::Null);
    let snapshots = env.json(&["snapshots"]);
    let all = snapshots["snapshots"].as_array().unwrap();
    assert_eq!(
        all.len(),
        2,
        "the interrupted snapshot was deleted: {snapshots}"
    );
}

fn restore_progress_files(env: &Env) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(env.path("xdg-state/ebsnap/restoring")) {
        Ok(dir) => dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A restore stopped by SIGINT keeps its partial file and progress; the same command
/// resumes it from there. Then `kill -9` at random moments: every rerun still ends with
/// a byte-identical target.
#[test]
fn interrupted_restores_resume_where_they_stopped() {
    let env = Env::new();
    let blocks = 768;
    let image = env.dense_image("image", blocks, 11);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let target = env.path("target");
    let restore = [
        "restore",
        &id,
        target.to_str().unwrap(),
        "--max-rate",
        "1000",
    ];
    let child = env
        .process(&restore)
        .arg("-q")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("no restore progress appeared", || {
        !restore_progress_files(&env).is_empty()
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(!target.exists(), "a partial restore is never put in place");
    assert!(env.path("target.ebsnap-partial").exists());
    let report = env.json(&restore);
    let at = number(&report, "resumed_at_block");
    assert!(
        at > 0 && number(&report, "blocks_fetched") == blocks - at,
        "{report}"
    );
    assert_same_content(&image, &target);
    assert!(restore_progress_files(&env).is_empty());
    std::fs::remove_file(&target).unwrap();

    let mut rng = Rng(21);
    for run in 0..5 {
        let target = env.path(&format!("target-{run}"));
        let restore = [
            "restore",
            &id,
            target.to_str().unwrap(),
            "--max-rate",
            "1000",
        ];
        let mut child = env.process(&restore).arg("-q").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
        let _ = child.kill();
        let _ = child.wait();
        let force = if target.exists() {
            vec!["--force"]
        } else {
            vec![]
        };
        let report = env.json(&[&restore[..], &force[..]].concat());
        assert_same_content(&image, &target);
        std::fs::remove_file(&target).unwrap();
        eprintln!("kill -9 restore run {run}: {report}");
    }
}

/// A restore of another snapshot onto the same target, killed (`kill -9`) before its
/// first checkpoint, leaves nothing of the restore it replaced to be resumed: running
/// that one again writes the whole target, not only what its old progress said was
/// left (the rest of the file now holds the other snapshot's blocks, or zeros).
#[test]
fn a_restore_of_another_snapshot_forgets_the_progress_it_replaces() {
    let env = Env::new();
    let blocks = 128;
    let (a_image, b_image) = (
        env.dense_image("a", blocks, 31),
        env.dense_image("b", blocks, 32),
    );
    let snapshot = |image: &Path| {
        env.backup(image)["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a, b) = (snapshot(&a_image), snapshot(&b_image));
    let target = env.path("target");
    let t = target.to_str().unwrap();

    // A, paced to last about 6 s, stopped by SIGINT after its first checkpoint.
    let restore_a = ["restore", &a, t, "--max-rate", "20"];
    let child = env.process(&restore_a).arg("-q").spawn().unwrap();
    wait_until("no restore progress appeared", || {
        !restore_progress_files(&env).is_empty()
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));

    // B, at two blocks a second, killed once it has written its first block: long
    // before its first checkpoint (2 s).
    let mut b_first = vec![0u8; BLOCK as usize];
    std::fs::File::open(&b_image)
        .unwrap()
        .read_exact_at(&mut b_first, 0)
        .unwrap();
    let partial = env.path("target.ebsnap-partial");
    let mut child = env
        .process(&["restore", &b, t, "--max-rate", "2", "-q"])
        .spawn()
        .unwrap();
    wait_until("the restore of B wrote nothing", || {
        let mut first = vec![0u8; BLOCK as usize];
        std::fs::File::open(&partial).is_ok_and(|f| f.read_exact_at(&mut first, 0).is_ok())
            && first == b_first
    });
    let _ = child.kill();
    let _ = child.wait();

    let report = env.json(&restore_a);
    assert_eq!(report["resumed_at_block"], Value::Null, "{report}");
    assert_same_content(&a_image, &target);
}

/// Two restores onto one target: the second waits, or with `--lock-wait 0` fails
/// clearly.
#[test]
fn a_second_restore_onto_the_same_target_waits_or_fails_clearly() {
    let env = Env::new();
    let blocks = 256;
    let image = env.dense_image("image", blocks, 12);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = env.path("target");
    let t = target.to_str().unwrap();
    let mut slow = env
        .process(&["restore", &id, t, "--max-rate", "50", "-q"])
        .spawn()
        .unwrap();
    // The first restore holds the target once its partial file exists.
    wait_until("the first restore did not start", || {
        env.path("target.ebsnap-partial").exists()
    });
    let out = env
        .ebsnap(&["restore", &id, t, "--lock-wait", "0", "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another restore onto"), "{stderr}");

    // A restore waiting for the target stops at once on a signal: nothing has started.
    let mut waiting = env
        .process(&["restore", &id, t, "--force"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let said = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (said, mut stderr) = (said.clone(), waiting.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
                said.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait_until("the second restore did not wait", || {
        said.lock().unwrap().contains("waiting for it")
    });
    unsafe { libc::kill(waiting.id() as i32, libc::SIGINT) };
    let status = waiting.wait().unwrap();
    reader.join().unwrap();
    let said = said.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the first restore ended first: the wait was not cut short"
    );
    assert!(slow.wait().unwrap().success());
    assert_same_content(&image, &target);
}

/// StartSnapshot made a snapshot but its answer was lost: the journal named the
/// request's client token before it was sent, so the rerun sends the same token, gets
/// that snapshot back and completes it. No snapshot is left behind, pending.
#[tokio::test]
async fn a_snapshot_whose_start_answer_was_lost_is_the_one_the_rerun_completes() {
    let env = Env::new();
    let blocks = 8;
    let image = env.dense_image("image", blocks, 4);
    let store = losing_the_first_start_answer();
    let options = with_state(&env);
    let first = engine::backup(store.clone(), &image, &options, &NoProgress).await;
    assert!(
        matches!(
            first,
            Err(Error::Store {
                snapshot: None,
                index: None,
                source: StoreError::Unavailable { .. }
            })
        ),
        "{first:?}"
    );
    let made = store.inner.list_snapshots().await.unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].status, SnapshotStatus::Pending);

    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.snapshot_id, Some(made[0].id.to_string()));
    assert_eq!(report.blocks_written, blocks);
    let all = store.inner.list_snapshots().await.unwrap();
    assert_eq!(all.len(), 1, "a snapshot was left behind: {all:?}");
    assert_eq!(all[0].status, SnapshotStatus::Completed);
    restore_and_compare(&env, store, &report, &image).await;
}

/// A store whose first CompleteSnapshot never arrives (the run ends resumable), and
/// which then refuses to complete that snapshot, describing it with `status`.
fn store_refusing_a_second_completion(
    status: SnapshotStatus,
) -> (Arc<Rigged>, Arc<Mutex<Option<SnapshotId>>>) {
    let first = Arc::new(Mutex::new(None::<SnapshotId>));
    let (refusing, describing) = (first.clone(), first.clone());
    let store = Rigged::new(
        move |call| {
            let Call::Complete(id) = call else {
                return Then::Answer;
            };
            let mut first = refusing.lock().unwrap();
            match &*first {
                None => {
                    *first = Some(id.clone());
                    Then::Fail(unavailable())
                }
                Some(f) if f == id => Then::Fail(StoreError::invalid(
                    ValidationReason::InvalidParameterValue,
                    format!("{id} cannot be completed now"),
                )),
                Some(_) => Then::Answer,
            }
        },
        |_| Then::Answer,
    )
    .with_status(move |id| (describing.lock().unwrap().as_ref() == Some(id)).then_some(status));
    (Arc::new(store), first)
}

/// The completion an interrupted run sent can never finish (the service failed the
/// snapshot while sealing): the rerun gives that snapshot up and backs up afresh,
/// instead of failing on it at every run from then on.
#[tokio::test]
async fn a_completion_that_can_never_finish_is_given_up_by_the_rerun() {
    let env = Env::new();
    let blocks = 8;
    let image = env.dense_image("image", blocks, 6);
    let (store, failed) = store_refusing_a_second_completion(SnapshotStatus::Error);
    let options = with_state(&env);
    let first = engine::backup(store.clone(), &image, &options, &NoProgress).await;
    assert!(matches!(first, Err(Error::Resumable { .. })), "{first:?}");

    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    let failed = failed.lock().unwrap().clone().unwrap();
    assert_ne!(report.snapshot_id, Some(failed.to_string()));
    assert_eq!(report.blocks_written, blocks);
    let all = store.inner.list_snapshots().await.unwrap();
    assert_eq!(all.len(), 1, "the failed snapshot stays: {all:?}");
    assert_eq!(all[0].status, SnapshotStatus::Completed);
}

/// The completion is refused while the snapshot still says `pending` (sealing, as
/// far as the client can tell): the rerun reports the error and keeps the snapshot
/// and its journal, rather than delete a backup that may be about to complete.
#[tokio::test]
async fn a_snapshot_that_may_be_sealing_is_never_deleted_by_the_rerun() {
    let env = Env::new();
    let blocks = 8;
    let image = env.dense_image("image", blocks, 16);
    let (store, sealing) = store_refusing_a_second_completion(SnapshotStatus::Pending);
    let options = with_state(&env);
    let first = engine::backup(store.clone(), &image, &options, &NoProgress).await;
    assert!(matches!(first, Err(Error::Resumable { .. })), "{first:?}");

    let second = engine::backup(store.clone(), &image, &options, &NoProgress).await;
    assert!(second.is_err(), "{second:?}");
    let sealing = sealing.lock().unwrap().clone().unwrap();
    let all = store.inner.list_snapshots().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].id, sealing, "the snapshot was deleted: {all:?}");
    let journals = std::fs::read_dir(env.path("state/uploads"))
        .unwrap()
        .count();
    assert_eq!(journals, 1, "the journal was dropped");
}

/// A put that failed may have landed all the same (its answer lost after every
/// retry). The rerun must not take that block as never put: here the source turns to
/// zeros there, and the resumed snapshot must read zeros there too.
#[tokio::test]
async fn a_put_whose_answer_was_lost_is_not_taken_as_never_made() {
    let env = Env::new();
    let blocks = 32;
    let image = env.dense_image("image", blocks, 12);
    let lost = AtomicBool::new(false);
    let store = Arc::new(Rigged::new(
        |_| Then::Answer,
        move |call| match call {
            Call::Put(_, BlockIndex(10)) if !lost.swap(true, SeqCst) => Then::Fail(unavailable()),
            _ => Then::Answer,
        },
    ));
    let options = BackupOptions {
        state_dir: Some(env.path("state")),
        workers: 4,
        ..BackupOptions::default()
    };
    let first = engine::backup(store.clone(), &image, &options, &NoProgress).await;
    assert!(matches!(first, Err(Error::Resumable { .. })), "{first:?}");

    write_block(&image, 10, &vec![0u8; BLOCK as usize]);
    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    assert!(report.resumed, "{report:?}");
    restore_and_compare(&env, store, &report, &image).await;
}

/// The last put fails while the store is still being told the completion's figures,
/// and that call never answers: the failure comes back at once, not after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_put_does_not_wait_for_the_completion_figures() {
    let env = Env::new();
    let blocks = 32;
    let image = env.dense_image("image", blocks, 13);
    let store = Arc::new(Rigged::new(
        |call| match call {
            Call::Prepare(_) => Then::Hang,
            _ => Then::Answer,
        },
        |call| match call {
            Call::Put(_, BlockIndex(31)) => Then::Fail(unavailable()),
            _ => Then::Answer,
        },
    ));
    let options = BackupOptions {
        state_dir: Some(env.path("state")),
        workers: 4,
        ..BackupOptions::default()
    };
    let backup = engine::backup(store, &image, &options, &NoProgress);
    let failed = tokio::time::timeout(Duration::from_secs(30), backup).await;
    let failed = failed.expect("the failure waited for a call that never answers");
    assert!(matches!(failed, Err(Error::Resumable { .. })), "{failed:?}");
}

/// A resumed run puts a block again (its content changed since) and is killed before
/// that put is recorded: the block's record in the journal is stale. The next rerun
/// must not trust it, whatever the source holds there by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_put_again_by_a_killed_rerun_is_put_again_by_the_next() {
    let env = Env::new();
    let blocks = 32;
    let image = env.dense_image("image", blocks, 13);
    let hang = Arc::new(AtomicBool::new(false));
    let landed = Arc::new(tokio::sync::Notify::new());
    let (hanging, landing) = (hang.clone(), landed.clone());
    let store = Arc::new(Rigged::new(
        |_| Then::Answer,
        move |call| match call {
            Call::Put(_, BlockIndex(10)) if hanging.load(SeqCst) => {
                landing.notify_one();
                Then::Hang
            }
            _ => Then::Answer,
        },
    ));
    let (_, options) = interrupted_backup(&env, store.clone(), &image, 24 * BLOCK).await;

    // Block 10 changes; the rerun puts it (the store takes it) and is killed while it
    // waits for the answer, long before its first checkpoint.
    let mut old = vec![0u8; BLOCK as usize];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut old, 10 * BLOCK)
        .unwrap();
    let mut new = vec![0u8; BLOCK as usize];
    fill_random(&mut new, 99);
    write_block(&image, 10, &new);
    hang.store(true, SeqCst);
    let rerun = tokio::spawn({
        let (store, image, options) = (store.clone(), image.clone(), options.clone());
        async move { engine::backup(store, &image, &options, &NoProgress).await }
    });
    landed.notified().await;
    rerun.abort();
    assert!(rerun.await.unwrap_err().is_cancelled());
    hang.store(false, SeqCst);

    // Back to the content the journal's record names.
    write_block(&image, 10, &old);
    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    assert!(report.resumed, "{report:?}");
    restore_and_compare(&env, store, &report, &image).await;
}

fn write_block(image: &Path, index: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(data, index * BLOCK).unwrap();
}

async fn restore_and_compare(
    env: &Env,
    store: Arc<dyn SnapshotStore>,
    report: &engine::BackupReport,
    image: &Path,
) {
    let id = report.snapshot_id.as_deref().unwrap().parse().unwrap();
    let target = env.path("restored");
    engine::restore(store, &id, &target, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_same_content(image, &target);
}

/// A resumed run stopped before it has put anything (still reading past what the
/// interrupted run had settled) must not cost the next rerun what was already put:
/// that one puts only what the interruptions left unsettled.
#[tokio::test]
async fn a_resumed_run_stopped_early_keeps_what_the_first_run_settled() {
    let env = Env::new();
    let blocks = 64;
    let image = env.dense_image("image", blocks, 15);
    let local = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(local);
    let (_, options) = interrupted_backup(&env, store.clone(), &image, 48 * BLOCK).await;

    let stop = Stop::default();
    let early = BackupOptions {
        stop: stop.clone(),
        ..options.clone()
    };
    let second = engine::backup(store.clone(), &image, &early, &StopAfter { stop, after: 1 }).await;
    assert!(matches!(second, Err(Error::Resumable { .. })), "{second:?}");

    let report = engine::backup(store.clone(), &image, &options, &NoProgress)
        .await
        .unwrap();
    assert!(report.resumed, "{report:?}");
    assert!(
        report.blocks_resumed >= 32,
        "the first run's settled blocks were put again: {report:?}"
    );
    restore_and_compare(&env, store, &report, &image).await;
}

/// A start in doubt, and a rerun that starts its snapshot otherwise (another
/// description): the store refuses the old token for the new request, and the rerun
/// goes on with a new one. The first request's snapshot is left pending (logged).
#[tokio::test]
async fn a_start_in_doubt_taken_up_with_other_parameters_starts_anew() {
    let env = Env::new();
    let blocks = 4;
    let image = env.dense_image("image", blocks, 17);
    let store = losing_the_first_start_answer();
    let options = with_state(&env);
    let first = engine::backup(store.clone(), &image, &options, &NoProgress).await;
    assert!(first.is_err(), "{first:?}");
    let orphan = store.inner.list_snapshots().await.unwrap()[0].id.clone();

    let other = BackupOptions {
        description: Some("another description".into()),
        ..options
    };
    let report = engine::backup(store.clone(), &image, &other, &NoProgress)
        .await
        .unwrap();
    assert_ne!(report.snapshot_id, Some(orphan.to_string()));
    let id = report.snapshot_id.as_deref().unwrap();
    let all = store.inner.list_snapshots().await.unwrap();
    let status = |wanted: &str| all.iter().find(|s| s.id.as_str() == wanted).unwrap().status;
    assert_eq!(status(id), SnapshotStatus::Completed);
    assert_eq!(status(orphan.as_str()), SnapshotStatus::Pending);
}

/// Backup options that keep state (journals, manifests) in the test directory.
fn with_state(env: &Env) -> BackupOptions {
    BackupOptions {
        state_dir: Some(env.path("state")),
        ..BackupOptions::default()
    }
}

/// A store that makes the first snapshot asked for, and loses the answer.
fn losing_the_first_start_answer() -> Arc<Rigged> {
    let lost = AtomicBool::new(false);
    Arc::new(Rigged::new(
        |_| Then::Answer,
        move |call| match call {
            Call::Start if !lost.swap(true, SeqCst) => Then::Fail(unavailable()),
            _ => Then::Answer,
        },
    ))
}

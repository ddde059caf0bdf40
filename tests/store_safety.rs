//! The local store under stress: another process holding it, and `kill -9` at random
//! moments during a backup.

mod common;

use common::*;
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{LocalStore, StoreError};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_writer_excludes_other_writers_and_readers() {
    let env = Env::new();
    let writer = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    for access in [Access::Write, Access::Read] {
        let err = LocalStore::open(&env.store(), access, LockWait::Fail).unwrap_err();
        assert!(
            matches!(err, StoreError::Locked { .. }),
            "{access:?}: {err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
    drop(writer);
    // Not `Fail`: a child that another test forks at this moment shares the lock's
    // open file until it execs (and closes it); that window is short.
    let r1 = LocalStore::open(
        &env.store(),
        Access::Read,
        LockWait::Up(Duration::from_secs(5)),
    )
    .unwrap();
    let _r2 = LocalStore::open(&env.store(), Access::Read, LockWait::Fail).expect("readers share");
    assert!(LocalStore::open(&env.store(), Access::Write, LockWait::Fail).is_err());
    drop(r1);
}

#[test]
fn a_second_process_waits_for_the_store() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, BLOCK, &[(0, 1000)], 1);
    env.backup(&image);
    let holder = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    let child = env
        .process(&["snapshots", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the reader waits while a writer holds the store"
    );
    drop(holder);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another ebsnap process"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
}

/// kill -9 a backup at different moments; the store must open every time, keep the
/// completed snapshot intact, and take new backups.
#[test]
fn kill_9_during_backup_leaves_a_working_store() {
    let env = Env::new();
    let keep = env.path("keep");
    make_image(&keep, 6 * BLOCK, &[(0, 6 * BLOCK as usize)], 2);
    let kept = env.backup(&keep)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = env.path("big");
    let size = 160u64 << 20;
    make_image(&big, size, &[(0, size as usize)], 3);
    for (i, delay_ms) in [5u64, 30, 80, 150, 250, 400].into_iter().enumerate() {
        let mut child = env
            .process(&["backup", big.to_str().unwrap(), "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let restored = env.path(&format!("restored-{i}"));
        env.restore(&kept, &restored);
        assert_same_content(&keep, &restored);
        let v = env.json(&["verify", &kept]);
        assert_eq!(v["ok"], true, "run {i}: {v}");
        let list = env.json(&["snapshots"]);
        for s in list["snapshots"].as_array().unwrap() {
            let status = s["status"].as_str().unwrap();
            assert!(status == "completed" || status == "pending", "run {i}: {s}");
            if status == "completed" {
                assert_eq!(
                    env.json(&["verify", s["snapshot_id"].as_str().unwrap()])["ok"],
                    true,
                    "run {i}: {s}"
                );
            }
        }
    }
    let b = env.backup(&big);
    let restored = env.path("restored-big");
    env.restore(b["snapshot_id"].as_str().unwrap(), &restored);
    assert_same_content(&big, &restored);
}

#[test]
fn lock_wait_gives_up_clearly() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, BLOCK, &[(0, 1000)], 1);
    env.backup(&image);
    let holder = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    for wait in ["0", "1"] {
        let started = std::time::Instant::now();
        let out = env
            .process(&["snapshots", "--lock-wait", wait])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "--lock-wait {wait}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("locked by another ebsnap process"), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(wait.parse().unwrap()));
    }
    drop(holder);
    let out = env
        .process(&["snapshots", "--lock-wait", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

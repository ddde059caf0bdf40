//! `--limit-upload` and `--limit-download` on the command line: units, and a backup and
//! restore that go through the limit. (The rate itself is measured by the accounting's
//! tests, `store::bandwidth`, and by `benches/bandwidth.rs`, not timed here.)

mod common;

use common::{assert_same_content, Env};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn limits_take_units_and_a_backup_and_restore_go_through_them() {
    let env = Env::new();
    let image = env.dense_image("a.img", 4, 7);
    let image_arg = image.to_str().unwrap();
    let backup = env.json(&["--limit-upload", "64MiB/s", "backup", image_arg]);
    assert_eq!(backup["blocks_written"], 4, "{backup}");
    let id = backup["snapshot_id"].as_str().unwrap();
    let target = env.path("restored.img");
    let target_arg = target.to_str().unwrap();
    env.json(&["--limit-download", "1.5G", "restore", id, target_arg]);
    assert_same_content(&image, &target);
}

#[test]
fn a_limit_of_nothing_or_of_no_unit_known_is_a_usage_error() {
    let env = Env::new();
    for bad in ["0", "20MiB/h", "fast"] {
        let out = env
            .ebsnap(&["--limit-upload", bad, "snapshots"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--limit-upload {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--limit-upload"), "{err}");
    }
}

/// A signal stops a backup and a restore held back by a low limit promptly: the
/// requests waiting for their turn (minutes of them here, one block every 2 s with
/// 16 in flight) are dropped after a short grace, and the same command resumes.
#[test]
fn a_signal_stops_limited_transfers_promptly_and_they_resume() {
    let env = Env::new();
    let blocks = 24;
    let image = env.dense_image("a.img", blocks, 11);
    let image_arg = image.to_str().unwrap();
    let backup = ["backup", image_arg, "-q"];
    let limited = ["--limit-upload", "256KiB/s"];
    stopped_promptly(&env, &[&limited[..], &backup].concat());
    let resumed = env.json(&backup[..2]);
    assert_eq!(resumed["resumed"], true, "{resumed}");
    let id = resumed["snapshot_id"].as_str().unwrap();

    let target = env.path("restored.img");
    let restore = ["restore", id, target.to_str().unwrap(), "-q"];
    stopped_promptly(
        &env,
        &[&["--limit-download", "256KiB/s"][..], &restore].concat(),
    );
    env.json(&restore[..3]);
    assert_same_content(&image, &target);
}

/// Runs `args`, sends SIGTERM once it is under way, and expects it to end, interrupted,
/// well before its requests in flight could have gone through the limit.
fn stopped_promptly(env: &Env, args: &[&str]) {
    let child = env.process(args).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let waited = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{args:?}: {stderr}");
    // Without the grace, the 16 requests in flight take over 30 s to get through.
    assert!(waited < Duration::from_secs(15), "{args:?} took {waited:?}");
}

//! `backup --freeze` of a live ext4 filesystem on a loop device, with a writer
//! appending checksummed records all along: the restored image is consistent, the
//! writer waits only while ebsnap reads (however slow the link), and the thaw happens
//! on every way out, `kill -9` included. Needs root and loop devices: skips loudly
//! without them.

mod common;

use common::live::*;
use common::recover::{Location, LoopMount};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn ebsnap(env: &Env, args: &[&str]) -> Command {
    let mut command = env.process(args);
    command.env("XDG_CACHE_HOME", env.path("xdg-cache"));
    command
}

fn backup_args<'a>(live: &'a LiveFs, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backup",
        &live.device,
        "--freeze",
        live.mnt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// Some data on the filesystem besides the records, so that reading takes a moment.
fn fill(live: &LiveFs, mib: usize) {
    let mut data = vec![0u8; mib << 20];
    fill_random(&mut data, 42);
    std::fs::write(live.path("data"), &data).unwrap();
}

/// Restores `id`, checks it with e2fsck, mounts it read-only: returns how many whole
/// records it holds (every one checked: none torn, none missing before the last).
fn restored_records(env: &Env, id: &str) -> u64 {
    let image = env.path("restored.img");
    env.restore(id, &image);
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let dir = env.path("restored-mnt");
    let mount = LoopMount::new(&image, &dir).expect("the restored image mounts");
    let records = std::fs::read(mount.0.join("records")).unwrap();
    check_records(&records)
}

/// What a frozen backup with a live writer showed.
struct Measured {
    report: serde_json::Value,
    before: u64,
    after: u64,
    longest_write: Duration,
}

fn backup_with_writer(live: &LiveFs, mut command: Command) -> Measured {
    let writer = RecordWriter::start(&live.path("records"), Duration::from_millis(3));
    std::thread::sleep(Duration::from_millis(300));
    let before = writer.count();
    let report = ok_json(command.output().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let (after, longest_write) = writer.stop();
    Measured {
        report,
        before,
        after,
        longest_write,
    }
}

#[test]
fn a_live_ext4_backed_up_under_freeze_restores_whole() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 256, "a_live_ext4_backed_up_under_freeze") else {
        return;
    };
    fill(&live, 48);
    let command = ebsnap(
        &env,
        &[&["--json", "-q"], &backup_args(&live, &[])[..]].concat(),
    );
    let m = backup_with_writer(&live, command);
    let frozen = m.report["frozen_seconds"].as_f64().expect("frozen_seconds");
    let total = m.report["seconds"].as_f64().unwrap();
    eprintln!(
        "frozen {frozen:.3}s of a {total:.3}s backup; the writer's longest write {:.3}s; {} records before, {} after",
        m.longest_write.as_secs_f64(),
        m.before,
        m.after
    );
    // The writer waited only while ebsnap read (a generous bound: scheduling).
    assert!(
        m.longest_write.as_secs_f64() <= frozen + 1.0,
        "the writer was blocked {:?}, longer than the {frozen}s freeze",
        m.longest_write
    );
    let id = m.report["snapshot_id"].as_str().unwrap();
    let held = restored_records(&env, id);
    assert!(
        (m.before..=m.after).contains(&held),
        "{held} records: a whole prefix of the {} written, at least the {} written before",
        m.after,
        m.before
    );
}

#[test]
fn at_max_rate_10_the_freeze_lasts_only_the_read() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 128, "at_max_rate_10_the_freeze") else {
        return;
    };
    fill(&live, 8);
    let location = Location::served(&env);
    let args = [
        &["--json", "-q", "--max-rate", "10"],
        &backup_args(&live, &[])[..],
    ]
    .concat();
    let mut command = location.command(&env, &args);
    command.env("XDG_CACHE_HOME", env.path("xdg-cache"));
    let m = backup_with_writer(&live, command);
    let frozen = m.report["frozen_seconds"].as_f64().unwrap();
    let total = m.report["seconds"].as_f64().unwrap();
    let written = m.report["blocks_written"].as_u64().unwrap();
    eprintln!(
        "--max-rate 10, {written} blocks through ebsnap serve: frozen {frozen:.3}s, backup {total:.3}s, the writer's longest write {:.3}s",
        m.longest_write.as_secs_f64()
    );
    assert!(written >= 16, "enough to upload for a while: {}", m.report);
    // At 10 puts a second the upload takes seconds; the freeze, only the read.
    assert!(frozen < total / 2.0, "frozen {frozen}s of {total}s");
    assert!(m.longest_write.as_secs_f64() < total / 2.0);
}

/// Starts a frozen backup that reads slowly (a pause after each batch), and waits
/// until the filesystem is frozen.
fn slow_frozen_backup(env: &Env, live: &LiveFs, extra: &[&str]) -> std::process::Child {
    let args = backup_args(live, &[&["--test-slow-read-ms", "300"], extra].concat());
    let mut child = ebsnap(env, &args)
        .stderr(std::fs::File::create(env.path("stderr")).unwrap())
        .spawn()
        .unwrap();
    live.wait_until_frozen(&mut child);
    child
}

#[test]
fn kill_9_while_frozen_thaws_within_2s() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "kill_9_while_frozen") else {
        return;
    };
    fill(&live, 8);
    let mut child = slow_frozen_backup(&env, &live, &[]);
    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    assert!(
        live.writable_within(Duration::from_secs(2)),
        "still frozen 2s after kill -9"
    );
    eprintln!("writable again {:?} after kill -9", killed.elapsed());
}

/// A signal while frozen: ebsnap thaws, exits 128 + the signal, and the post-hook is
/// told `interrupted`.
fn signal_while_frozen(signal: i32, test: &str) {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, test) else {
        return;
    };
    fill(&live, 8);
    let told = env.path("status");
    let hook = format!("echo $EBSNAP_STATUS $EBSNAP_EXIT_CODE > {}", told.display());
    let mut child = slow_frozen_backup(&env, &live, &["--post-hook", &hook]);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(env.path("stderr")).unwrap();
    assert_eq!(status.code(), Some(128 + signal), "{stderr}");
    assert!(live.writable_within(Duration::from_millis(500)), "thawed");
    let said = std::fs::read_to_string(&told).unwrap();
    assert_eq!(said.trim(), format!("interrupted {}", 128 + signal));
}

#[test]
fn sigint_while_frozen_thaws_and_reports_interrupted() {
    signal_while_frozen(libc::SIGINT, "sigint_while_frozen");
}

#[test]
fn sigterm_while_frozen_thaws_and_reports_interrupted() {
    signal_while_frozen(libc::SIGTERM, "sigterm_while_frozen");
}

#[test]
fn a_full_spool_thaws_and_fails_midway_and_the_post_hook_says_failed() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_full_spool") else {
        return;
    };
    fill(&live, 8);
    let told = env.path("status");
    let hook = format!("echo $EBSNAP_STATUS > {}", told.display());
    let args = [
        &["--max-rate", "10"],
        &backup_args(&live, &["--spool-max", "1M", "--post-hook", &hook])[..],
    ]
    .concat();
    let out = ebsnap(&env, &args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--spool-max"), "{stderr}");
    assert!(live.writable_within(Duration::from_millis(500)), "thawed");
    assert_eq!(std::fs::read_to_string(&told).unwrap().trim(), "failed");
    let list = env.json(&["snapshots"]);
    assert!(
        list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] != "completed"),
        "no snapshot completed from that read: {list}"
    );
    assert_spool_empty(&env);
}

fn assert_spool_empty(env: &Env) {
    let spool = env.path("xdg-cache").join("ebsnap/spool");
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(left.is_empty(), "the spool is left empty: {left:?}");
}

#[test]
fn a_freeze_past_its_timeout_thaws_and_fails() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_freeze_past_its_timeout") else {
        return;
    };
    fill(&live, 8);
    let args = backup_args(
        &live,
        &["--freeze-timeout", "1", "--test-slow-read-ms", "300"],
    );
    let out = ebsnap(&env, &args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--freeze-timeout (1s)"), "{stderr}");
    assert!(live.writable_within(Duration::from_millis(500)), "thawed");
}

#[test]
fn an_already_frozen_filesystem_is_refused_and_left_frozen() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "an_already_frozen_filesystem") else {
        return;
    };
    let mnt = live.mnt.to_str().unwrap();
    assert!(Command::new("fsfreeze")
        .args(["-f", mnt])
        .status()
        .unwrap()
        .success());
    let out = ebsnap(&env, &backup_args(&live, &[])).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already frozen") && stderr.contains(mnt),
        "{stderr}"
    );
    assert!(
        !live.writable_within(Duration::from_millis(300)),
        "ebsnap did not thaw what it did not freeze"
    );
    assert!(Command::new("fsfreeze")
        .args(["-u", mnt])
        .status()
        .unwrap()
        .success());
}

#[test]
fn freeze_of_a_mount_the_source_is_not_is_refused_unless_read_from() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "freeze_of_a_mount_the_source_is_not") else {
        return;
    };
    let image = env.dense_image("other.img", 128, 3);
    let mnt = live.mnt.to_str().unwrap();
    let refused = ebsnap(&env, &["backup", image.to_str().unwrap(), "--freeze", mnt])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not the device") && stderr.contains(mnt),
        "{stderr}"
    );
    // The device is the copy of the image's disk that --read-from names.
    let args = [
        "--json",
        "-q",
        "backup",
        image.to_str().unwrap(),
        "--read-from",
        &live.device,
        "--freeze",
        mnt,
    ];
    let report = ok_json(ebsnap(&env, &args).output().unwrap());
    assert!(report["frozen_seconds"].as_f64().is_some(), "{report}");
    assert!(live.writable_within(Duration::from_millis(500)));
}

#[test]
fn a_spool_on_the_filesystem_to_freeze_is_refused_before_anything() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_spool_on_the_filesystem_to_freeze") else {
        return;
    };
    let spool = live.path("spool");
    let args = backup_args(&live, &["--spool", spool.to_str().unwrap()]);
    let out = ebsnap(&env, &args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("spool directory"), "{stderr}");
    assert!(!spool.exists(), "nothing was made there");
    assert!(live.writable_within(Duration::from_millis(500)));
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn a_freeze_path_that_is_not_a_mountpoint_is_refused() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_freeze_path_not_a_mountpoint") else {
        return;
    };
    // FIFREEZE on any path freezes the filesystem holding it: a mountpoint mistyped,
    // or one whose mount failed, would freeze that one (often the root filesystem).
    let sub = live.path("sub");
    std::fs::create_dir(&sub).unwrap();
    let out = ebsnap(
        &env,
        &["backup", &live.device, "--freeze", sub.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a mountpoint") && stderr.contains(sub.to_str().unwrap()),
        "{stderr}"
    );
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn kill_9_thaws_every_filesystem_when_stderr_is_on_one_of_them() {
    let env = Env::new();
    // Each in a directory of its own: a LiveFs mounts on `mnt` there.
    let (dir_a, dir_b) = (env.path("a"), env.path("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let (Some(a), Some(b)) = (
        LiveFs::new(&dir_a, 64, "kill_9_stderr_on_frozen_a"),
        LiveFs::new(&dir_b, 64, "kill_9_stderr_on_frozen_b"),
    ) else {
        return;
    };
    fill(&a, 8);
    let (mnt_a, mnt_b) = (a.mnt.to_str().unwrap(), b.mnt.to_str().unwrap());
    // The log on the first filesystem: the watchdog must not write it before it has
    // thawed that one too (it would wait for a thaw only it can do).
    let args = [
        "backup",
        &a.device,
        "--read-from",
        &a.device,
        "--freeze",
        mnt_a,
        "--freeze",
        mnt_b,
        "--test-slow-read-ms",
        "300",
    ];
    let mut child = ebsnap(&env, &args)
        .stderr(std::fs::File::create(a.path("ebsnap.log")).unwrap())
        .spawn()
        .unwrap();
    b.wait_until_frozen(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(a.writable_within(Duration::from_secs(2)), "{mnt_a} frozen");
    assert!(b.writable_within(Duration::from_secs(2)), "{mnt_b} frozen");
}

#[test]
fn a_watchdog_killed_while_frozen_thaws_and_fails() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_watchdog_killed_while_frozen") else {
        return;
    };
    fill(&live, 8);
    let mut child = slow_frozen_backup(&env, &live, &[]);
    // Without its watchdog, a kill -9 of ebsnap would leave the filesystem frozen.
    let watchdog = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&watchdog.stdout)
        .trim()
        .parse()
        .unwrap();
    // SAFETY: a signal to ebsnap's own child, the watchdog.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(env.path("stderr")).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("watchdog died"), "{stderr}");
    assert!(live.writable_within(Duration::from_millis(500)), "thawed");
    let snapshots = env.json(&["snapshots"]);
    assert_eq!(
        snapshots["snapshots"].as_array().unwrap().len(),
        0,
        "{snapshots}"
    );
}

#[test]
fn a_filesystem_named_twice_is_frozen_once() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_filesystem_named_twice") else {
        return;
    };
    let again = format!("{}/", live.mnt.display());
    let args = backup_args(&live, &["--freeze", &again, "--json", "-q"]);
    let report = ok_json(ebsnap(&env, &args).output().unwrap());
    assert!(report["frozen_seconds"].as_f64().is_some(), "{report}");
    assert!(live.writable_within(Duration::from_millis(500)));
}

/// The data of one file of the snapshot `id`, restored and mounted read-only.
fn restored_file(env: &Env, id: &str, name: &str) -> Vec<u8> {
    let image = env.path("restored.img");
    env.restore(id, &image);
    let mount = LoopMount::new(&image, &env.path("restored-mnt")).expect("it mounts");
    std::fs::read(mount.0.join(name)).unwrap()
}

#[test]
fn a_device_s_stale_page_cache_is_not_backed_up() {
    let env = Env::new();
    let Some(live) = LiveFs::new(env.dir.path(), 64, "a_device_s_stale_page_cache") else {
        return;
    };
    let mut data = vec![0u8; 4 << 20];
    fill_random(&mut data, 1);
    std::fs::write(live.path("data"), &data).unwrap();
    ok_json(
        ebsnap(&env, &backup_args(&live, &["--json", "-q"]))
            .output()
            .unwrap(),
    );
    // Anyone reading the device through its page cache (blkid, dd, a cmp) leaves
    // pages there that the filesystem's later writes of file data do not update.
    std::fs::read(&live.device).unwrap();
    fill_random(&mut data, 2);
    std::fs::write(live.path("data"), &data).unwrap();
    let report = ok_json(
        ebsnap(&env, &backup_args(&live, &["--json", "-q"]))
            .output()
            .unwrap(),
    );
    let id = report["snapshot_id"].as_str().unwrap();
    assert!(restored_file(&env, id, "data") == data, "{report}");
}

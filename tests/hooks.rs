//! `backup --pre-hook/--post-hook` and `--read-from`, on image files (no root needed):
//! what the hooks are told, that a failing pre-hook starts nothing, that the post-hook
//! runs whatever happened and its failure shows, and that a backup read from a copy
//! stays in the source's lineage.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A post-hook that writes what it was told into `file`, one VAR=VALUE a line.
fn recording_hook(file: &Path) -> String {
    format!(
        "for v in EBSNAP_SOURCE EBSNAP_STORE EBSNAP_STATUS EBSNAP_SNAPSHOT_ID EBSNAP_EXIT_CODE; \
         do eval echo \"$v=\\${{$v-unset}}\"; done > {}",
        file.display()
    )
}

/// The VAR=VALUE lines a recording hook wrote.
fn recorded(file: &Path) -> std::collections::HashMap<String, String> {
    let text = fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("the post-hook did not run ({}): {e}", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_failing_pre_hook_starts_nothing_and_the_post_hook_runs_with_failed() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 4, 1);
    let told = env.path("post.env");
    let out = env
        .ebsnap(&[
            "-v",
            "--json",
            "backup",
            image.to_str().unwrap(),
            "--pre-hook",
            "echo making the copy; echo cannot make it >&2; exit 3",
            "--post-hook",
            &recording_hook(&told),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pre-hook: making the copy") && stderr.contains("pre-hook: cannot make it"),
        "the hook's output is in the log, prefixed: {stderr}"
    );
    assert!(stderr.contains("exited with 3"), "{stderr}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["exit_code"], 1, "{error}");
    assert_eq!(error["post_hook_exit_code"], 0, "{error}");
    let vars = recorded(&told);
    assert_eq!(vars["EBSNAP_STATUS"], "failed");
    assert_eq!(vars["EBSNAP_SNAPSHOT_ID"], "");
    assert_eq!(vars["EBSNAP_EXIT_CODE"], "1");
    assert_eq!(vars["EBSNAP_SOURCE"], image.to_str().unwrap());
    assert_eq!(vars["EBSNAP_STORE"], env.store().to_str().unwrap());
    assert_eq!(env.snapshot_count(), 0, "no snapshot was started");
}

#[test]
fn a_pre_hook_past_its_timeout_is_killed() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 1);
    let told = env.path("post.env");
    let started = std::time::Instant::now();
    let out = env
        .ebsnap(&[
            "backup",
            image.to_str().unwrap(),
            "--hook-timeout",
            "1",
            "--pre-hook",
            "sleep 30",
            "--post-hook",
            &recording_hook(&told),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timeout (1s)"), "{stderr}");
    assert!(started.elapsed().as_secs() < 20, "the hook was killed");
    assert_eq!(recorded(&told)["EBSNAP_STATUS"], "failed");
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn the_post_hook_is_told_the_snapshot_and_its_failure_makes_exit_1() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 4, 1);
    let told = env.path("post.env");
    let hook = format!("{}; exit 7", recording_hook(&told));
    let out = env
        .ebsnap(&[
            "--json",
            "backup",
            image.to_str().unwrap(),
            "--pre-hook",
            "true",
            "--post-hook",
            &hook,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["post_hook_exit_code"], 7, "{report}");
    let id = report["snapshot_id"].as_str().unwrap();
    let vars = recorded(&told);
    assert_eq!(vars["EBSNAP_STATUS"], "ok");
    assert_eq!(vars["EBSNAP_SNAPSHOT_ID"], id);
    assert_eq!(vars["EBSNAP_EXIT_CODE"], "0");
    assert!(
        stderr.contains("post-hook") && stderr.contains("exited with 7"),
        "{stderr}"
    );
    // The snapshot itself is complete: the hook's failure cost only the exit code.
    assert_eq!(env.snapshot_count(), 1);
    let ok = env.json(&["backup", image.to_str().unwrap(), "--post-hook", "true"]);
    assert_eq!(ok["post_hook_exit_code"], 0, "{ok}");
}

#[test]
fn read_from_a_copy_makes_a_child_of_the_source_s_snapshot() {
    let env = Env::new();
    let source = env.dense_image("disk.img", 16, 1);
    let first = env.backup(&source);
    // Tonight's point-in-time copy (an LVM snapshot, say), with three blocks changed.
    let copy = env.path("copy.img");
    fs::copy(&source, &copy).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&copy).unwrap();
    for block in [2u64, 7, 15] {
        f.write_all_at(b"changed since last night", block * BLOCK + 100)
            .unwrap();
    }
    drop(f);
    let second = env.json(&[
        "backup",
        source.to_str().unwrap(),
        "--read-from",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(
        second["parent_snapshot_id"], first["snapshot_id"],
        "{second}"
    );
    assert_eq!(
        second["blocks_written"], 3,
        "exactly the changed blocks: {second}"
    );
    let id = second["snapshot_id"].as_str().unwrap();
    let show = env.json(&["show", id]);
    assert!(
        show.to_string().contains(source.to_str().unwrap()),
        "tagged with the source: {show}"
    );
    let restored = env.path("restored.img");
    env.restore(id, &restored);
    assert_same_content(&restored, &copy);
    // The next plain backup of the source is a child of the one read from the copy.
    let third = env.backup(&source);
    assert_eq!(third["parent_snapshot_id"], id);
}

#[test]
fn read_from_a_path_of_another_size_is_refused() {
    let env = Env::new();
    let source = env.dense_image("disk.img", 4, 1);
    let other = env.dense_image("other.img", 5, 1);
    let told = env.path("post.env");
    let out = env
        .ebsnap(&[
            "backup",
            source.to_str().unwrap(),
            "--read-from",
            other.to_str().unwrap(),
            "--post-hook",
            &recording_hook(&told),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("other.img") && stderr.contains("same size"),
        "{stderr}"
    );
    assert_eq!(recorded(&told)["EBSNAP_STATUS"], "failed");
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn the_pre_hook_makes_the_copy_read_from_reads_and_the_post_hook_removes() {
    let env = Env::new();
    let source = env.dense_image("disk.img", 8, 1);
    let first = env.backup(&source);
    let copy = env.path("point-in-time.img");
    let (s, c) = (source.to_str().unwrap(), copy.to_str().unwrap());
    let report = env.json(&[
        "backup",
        s,
        "--pre-hook",
        &format!("cp \"$EBSNAP_SOURCE\" {c}"),
        "--read-from",
        c,
        "--post-hook",
        &format!("test \"$EBSNAP_READ_FROM\" = {c} && rm {c}"),
    ]);
    assert_eq!(report["parent_snapshot_id"], first["snapshot_id"]);
    assert_eq!(report["blocks_written"], 0, "nothing changed: {report}");
    assert_eq!(report["post_hook_exit_code"], 0, "{report}");
    assert!(!copy.exists(), "the post-hook removed the copy");
}

#[test]
fn a_spool_smaller_than_one_block_is_refused_before_anything_is_frozen() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 1);
    let spool = env.path("spool");
    let out = env
        .process(&[
            "backup",
            image.to_str().unwrap(),
            "--freeze",
            "/",
            "--spool",
            spool.to_str().unwrap(),
            "--spool-max",
            "1K",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("less than one block"), "{stderr}");
    // Refused before the spool was made (and before any freeze).
    assert!(!spool.exists());
    assert_eq!(env.snapshot_count(), 0);
}

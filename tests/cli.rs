//! The binary, run against real files and a real store directory.

mod common;

use common::*;
use serde_json::Value;
use std::fs;

fn round_trip(env: &Env, size: u64, regions: &[(u64, usize)]) -> (Value, Value) {
    let image = env.path("image");
    make_image(&image, size, regions, size ^ 0x5eed);
    let b = env.backup(&image);
    let id = b["snapshot_id"].as_str().unwrap().to_owned();
    let restored = env.path("restored");
    let _ = fs::remove_file(&restored);
    let r = env.restore(&id, &restored);
    assert_same_content(&image, &restored);
    (b, r)
}

#[test]
fn empty_source_round_trips() {
    let env = Env::new();
    let (b, r) = round_trip(&env, 0, &[]);
    assert_eq!(b["blocks_total"], 0);
    assert_eq!(b["blocks_written"], 0);
    assert_eq!(b["volume_size_gib"], 1);
    assert_eq!(r["blocks_written"], 0);
}

#[test]
fn one_byte_source_round_trips() {
    let env = Env::new();
    let (b, _) = round_trip(&env, 1, &[(0, 1)]);
    assert_eq!(b["source_bytes"], 1);
    assert_eq!(b["blocks_total"], 1);
    // The one random byte may be zero; either way the file comes back as 1 byte.
    assert!(b["blocks_written"].as_u64().unwrap() <= 1);
}

#[test]
fn size_not_a_multiple_of_the_block_size_round_trips() {
    let env = Env::new();
    let size = 5 * BLOCK + 12_345;
    let (b, r) = round_trip(&env, size, &[(0, size as usize)]);
    assert_eq!(b["blocks_total"], 6);
    assert_eq!(b["blocks_written"], 6);
    assert_eq!(b["bytes_written"], 6 * BLOCK);
    assert_eq!(
        r["bytes_written"], size,
        "the last block is cut at the source's size"
    );
}

#[test]
fn dense_random_image_round_trips() {
    let env = Env::new();
    let size = 256 << 20;
    let (b, r) = round_trip(&env, size, &[(0, size as usize)]);
    assert_eq!(b["blocks_written"], 512);
    assert_eq!(b["blocks_zero"], 0);
    assert_eq!(r["blocks_written"], 512);
    for key in [
        "snapshot_id",
        "parent_snapshot_id",
        "volume_size_gib",
        "source_bytes",
        "blocks_total",
        "blocks_written",
        "blocks_zero",
        "bytes_written",
        "checksum",
        "seconds",
    ] {
        assert!(b.get(key).is_some(), "backup --json lacks {key}");
    }
    for key in [
        "snapshot_id",
        "target",
        "blocks_written",
        "bytes_written",
        "seconds",
    ] {
        assert!(r.get(key).is_some(), "restore --json lacks {key}");
    }
}

#[test]
fn sparse_64_gib_image_backs_up_only_its_data() {
    let env = Env::new();
    let size = 64 << 30;
    let regions = [
        (0, 1 << 20),
        (7 << 30, 3 << 20),
        ((40 << 30) + 4096, 100_000),
        (size - 10, 10),
    ];
    let (b, _) = round_trip(&env, size, &regions);
    assert_eq!(b["volume_size_gib"], 64);
    assert_eq!(b["blocks_total"], 131_072);
    // 2 + 6 + 1 + 1 blocks hold data.
    assert_eq!(b["blocks_written"], 10);
    assert!(
        allocated(&env.path("restored")) < 64 << 20,
        "the restored file is sparse"
    );
}

#[test]
fn zero_blocks_are_not_stored_and_come_back_as_zeros() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, 8 * BLOCK, &[(0, BLOCK as usize)], 1);
    // Block 3 is written, but with zeros: data to the filesystem, nothing to the snapshot.
    fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .map(|f| {
            std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; BLOCK as usize], 3 * BLOCK)
                .unwrap()
        })
        .unwrap();
    let b = env.backup(&image);
    assert_eq!(b["blocks_written"], 1);
    assert_eq!(b["blocks_zero"], 7);
    let restored = env.path("restored");
    env.restore(b["snapshot_id"].as_str().unwrap(), &restored);
    assert_eq!(fs::read(&image).unwrap(), fs::read(&restored).unwrap());
}

#[test]
fn global_flags_work_after_the_command_and_the_store_defaults_to_the_environment() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, BLOCK, &[(0, 100)], 2);
    let out = assert_cmd::Command::cargo_bin("ebsnap")
        .unwrap()
        .env("EBSNAP_STORE", env.store())
        .args([
            "backup",
            image.to_str().unwrap(),
            "--json",
            "-q",
            "--tag",
            "host=db1",
            "--description",
            "nightly",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = b["snapshot_id"].as_str().unwrap();
    let show = env.json(&["show", id]);
    assert_eq!(show["description"], "nightly");
    assert_eq!(show["tags"]["host"], "db1");
    assert_eq!(show["source_bytes"], BLOCK);
    let list = env.json(&["snapshots"]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(list["snapshots"][0]["status"], "completed");
}

#[test]
fn missing_source_fails_clearly_and_leaves_no_snapshot() {
    let env = Env::new();
    let missing = env.path("no-such-image");
    let out = env
        .ebsnap(&["backup", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-image"), "error names the path: {err}");
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn restore_refuses_to_overwrite_without_force() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, 3 * BLOCK, &[(0, 3 * BLOCK as usize)], 3);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = env.path("target");
    fs::write(&target, b"precious").unwrap();
    let out = env
        .ebsnap(&["restore", &id, target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    env.ebsnap(&["restore", &id, target.to_str().unwrap(), "--force", "-q"])
        .assert()
        .success();
    assert_same_content(&image, &target);
}

#[test]
fn unknown_snapshot_and_bad_ids_get_distinct_exit_codes() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, BLOCK, &[(0, 10)], 4);
    env.backup(&image);
    let target = env.path("target");
    let out = env
        .ebsnap(&[
            "restore",
            "snap-0123456789abcdef0",
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("snap-0123456789abcdef0"));
    assert!(!target.exists());
    let out = env
        .ebsnap(&["restore", "snap-oops", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed id is a usage error"
    );
    env.ebsnap(&["frobnicate"]).assert().code(2);
    env.ebsnap(&["restore"]).assert().code(2);
}

#[test]
fn diff_lists_the_blocks_that_differ_and_unrelated_snapshots_fail() {
    let env = Env::new();
    let a = env.path("a");
    make_image(&a, 4 * BLOCK, &[(0, 100)], 5);
    let first = env.backup(&a)["snapshot_id"].as_str().unwrap().to_owned();
    let same = env.json(&["diff", &first, &first]);
    assert_eq!(same["changed_blocks"], 0);
    let child = env.backup(&a);
    assert_eq!(child["parent_snapshot_id"].as_str(), Some(first.as_str()));
    assert_eq!(
        env.json(&["diff", &first, child["snapshot_id"].as_str().unwrap()])["changed_blocks"],
        0
    );
    let b = env.json(&["backup", a.to_str().unwrap(), "--full"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = env.ebsnap(&["diff", &first, &b]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNRELATED_SNAPSHOTS"));
}

#[test]
fn verify_checks_blocks_and_compares_with_a_source() {
    let env = Env::new();
    let image = env.path("image");
    make_image(
        &image,
        10 * BLOCK,
        &[(0, 2 * BLOCK as usize), (6 * BLOCK, 100)],
        6,
    );
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = env.json(&["verify", &id, "--against", image.to_str().unwrap()]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["blocks_checked"], 3);
    assert_eq!(v["bad_blocks"].as_array().unwrap().len(), 0);
    assert_eq!(v["aggregate_ok"], true);
    // Change the source in a block the snapshot holds, and in one it does not.
    let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", BLOCK + 5).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"new", 8 * BLOCK).unwrap();
    let out = env
        .ebsnap(&[
            "verify",
            &id,
            "--against",
            image.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["different_blocks"], serde_json::json!([1, 8]));
}

/// The pack file holding the store's data (the test stores have one).
fn only_pack(env: &Env) -> std::path::PathBuf {
    let packs: Vec<_> = fs::read_dir(env.store().join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert_eq!(packs.len(), 1);
    packs[0].clone()
}

#[test]
fn a_damaged_block_is_reported_by_verify_and_refused_by_restore() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, 4 * BLOCK, &[(0, 4 * BLOCK as usize)], 7);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pack = only_pack(&env);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut byte = [0u8; 1];
    let at = 2 * BLOCK + 777; // some block's data: slot 2 of the pack
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte[0] ^ 0xff], at).unwrap();
    let out = env.ebsnap(&["verify", &id, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad = v["bad_blocks"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "exactly one block is damaged: {v}");
    let bad = bad[0].as_u64().unwrap();
    // The structure is intact: only reading the data finds the damage.
    assert_eq!(env.json(&["check"])["ok"], true);
    let out = env
        .ebsnap(&["check", "--read-data", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["damaged"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["damaged"][0]["snapshot_id"].as_str(), Some(id.as_str()));
    assert_eq!(c["damaged"][0]["block"].as_u64(), Some(bad));
    let target = env.path("target");
    let out = env
        .ebsnap(&["restore", &id, target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&id) && err.contains(&format!("block {bad}:")),
        "names snapshot and block {bad}: {err}"
    );
    assert!(!target.exists(), "no target is left behind");
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "no partial file is left behind");
}

#[test]
fn delete_removes_snapshots_and_frees_their_space() {
    let env = Env::new();
    let a = env.path("a");
    make_image(&a, 8 * BLOCK, &[(0, 8 * BLOCK as usize)], 8);
    let first = env.backup(&a)["snapshot_id"].as_str().unwrap().to_owned();
    let b = env.path("b");
    make_image(&b, 2 * BLOCK, &[(0, 2 * BLOCK as usize)], 9);
    let second = env.backup(&b)["snapshot_id"].as_str().unwrap().to_owned();
    let pack_bytes = || {
        fs::read_dir(env.store().join("packs"))
            .unwrap()
            .flatten()
            .map(|e| allocated(&e.path()))
            .sum::<u64>()
    };
    let before = pack_bytes();
    let d = env.json(&["delete", &first]);
    assert_eq!(d["deleted"], serde_json::json!([first]));
    let after = pack_bytes();
    // A few KiB of slack: the rewritten pack index may take a page more or less.
    assert!(
        after <= before - 8 * BLOCK + 16 * 1024,
        "the deleted snapshot's blocks are freed: {before} bytes before, {after} after"
    );
    let restored = env.path("restored");
    env.restore(&second, &restored);
    assert_same_content(&b, &restored);
    let out = env.ebsnap(&["delete", &first]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn identical_blocks_are_stored_once() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, 4 * BLOCK, &[(0, 4 * BLOCK as usize)], 10);
    env.backup(&image);
    env.backup(&image);
    let stored: u64 = fs::metadata(only_pack(&env)).unwrap().len();
    assert_eq!(
        stored,
        4 * BLOCK,
        "the second backup reuses the first one's blocks"
    );
}

#[test]
fn backups_are_incremental_and_restores_move_a_standby_forward() {
    let env = Env::new();
    let image = env.path("image");
    make_image(&image, 12 * BLOCK, &[(0, 12 * BLOCK as usize)], 21);
    let img = image.to_str().unwrap();
    let first = env.json(&["backup", img]);
    assert_eq!(first["blocks_written"], 12);
    assert_eq!(first["parent_snapshot_id"], Value::Null);
    let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", 4 * BLOCK).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; BLOCK as usize], 9 * BLOCK).unwrap();

    let dry = env.json(&["backup", img, "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["snapshot_id"], Value::Null);
    assert_eq!(dry["blocks_written"], 2);
    assert_eq!(env.snapshot_count(), 1, "a dry run starts nothing");

    let second = env.json(&["backup", img]);
    assert_eq!(second["parent_snapshot_id"], first["snapshot_id"]);
    assert_eq!(second["blocks_written"], 2);
    assert_eq!(second["blocks_unchanged"], 10);
    let full = env.json(&["backup", img, "--full"]);
    assert_eq!(full["parent_snapshot_id"], Value::Null);
    assert_eq!(full["blocks_written"], 11);

    // A standby copy: restored once in full, then moved forward by the changes only.
    let standby = env.path("standby");
    let (a, b) = (
        first["snapshot_id"].as_str().unwrap(),
        second["snapshot_id"].as_str().unwrap(),
    );
    env.json(&["restore", a, standby.to_str().unwrap()]);
    let r = env.json(&["restore", b, standby.to_str().unwrap()]);
    assert_eq!(
        r["from_snapshot_id"], first["snapshot_id"],
        "remembered what the target holds"
    );
    // Block 4 changed; block 9 was written as an explicit zero block: both are fetched,
    // and the zeros become a hole.
    assert_eq!(r["blocks_fetched"], 2);
    assert_eq!(r["blocks_written"], 1);
    assert_eq!(r["blocks_zeroed"], 1);
    assert_same_content(&image, &standby);
    let explicit = env.path("explicit");
    env.json(&["restore", a, explicit.to_str().unwrap()]);
    let r = env.json(&["restore", b, explicit.to_str().unwrap(), "--from", a]);
    assert_eq!(r["blocks_fetched"], 2);
    assert_same_content(&image, &explicit);
    let diff = env.json(&["diff", a, b]);
    assert_eq!(diff["changed_block_indexes"], serde_json::json!([4, 9]));
}

//! `ebsnap copy`, through the binary: a local chain into a real `ebsnap serve` (an EBS
//! store over HTTP) and back into a fresh local store, incrementally, with lineage kept,
//! idempotent, resumable after `kill -9`, and under the server's faults.

mod common;

use common::journals::{journals, settled_below};
use common::server::{ServeProcess, KEY_ID, SECRET};
use common::*;
use serde_json::Value;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `ebsnap --store LOCATION --json -q ARGS`, with the test's state directories and the
/// server's credentials (and no AWS setup of the machine's).
fn command(env: &Env, location: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
    env.aws_client(&mut cmd, (KEY_ID, SECRET))
        .args(["--store", location, "--json", "-q"])
        .args(args)
        .env_remove("EBSNAP_STORE")
        .env("XDG_DATA_HOME", env.path("xdg-data"))
        .env("XDG_STATE_HOME", env.path("xdg-state"))
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_EBS")
        .env_remove("AWS_ENDPOINT_URL_EC2");
    cmd
}

fn run(env: &Env, location: &str, args: &[&str]) -> Value {
    let out: Output = command(env, location, args).output().unwrap();
    assert!(
        out.status.success(),
        "ebsnap --store {location} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn local(env: &Env) -> String {
    env.store().display().to_string()
}

fn write_block(image: &Path, index: u64, seed: Option<u64>) {
    let mut data = vec![0u8; BLOCK as usize];
    if let Some(seed) = seed {
        fill_random(&mut data, seed);
    }
    let f = OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(&data, index * BLOCK).unwrap();
}

/// A source backed up three times: generation 1, then one with blocks changed, added
/// and zeroed, then another. Returns the image, each generation's content (a copy of
/// the image), and the snapshots.
fn three_generations(env: &Env) -> (PathBuf, Vec<PathBuf>, Vec<String>) {
    let image = env.path("disk.img");
    make_image(&image, 24 * BLOCK, &[(0, 6 * BLOCK as usize)], 1);
    write_block(&image, 10, Some(2));
    write_block(&image, 20, Some(3));
    let changes: [&[(u64, Option<u64>)]; 3] = [
        &[],
        // two changed, one zeroed, one new
        &[(2, Some(11)), (3, Some(12)), (4, None), (12, Some(13))],
        // one changed, two zeroed, two new (one of them the last block)
        &[
            (0, Some(21)),
            (10, None),
            (20, None),
            (15, Some(22)),
            (23, Some(23)),
        ],
    ];
    let (mut generations, mut ids) = (Vec::new(), Vec::new());
    for (n, blocks) in changes.iter().enumerate() {
        for &(index, seed) in *blocks {
            write_block(&image, index, seed);
        }
        let kept = env.path(&format!("generation-{}", n + 1));
        std::fs::copy(&image, &kept).unwrap();
        generations.push(kept);
        let backup = env.backup(&image);
        ids.push(backup["snapshot_id"].as_str().unwrap().to_owned());
    }
    (image, generations, ids)
}

fn diff(env: &Env, location: &str, first: &str, second: &str) -> Vec<u64> {
    let report = run(env, location, &["diff", first, second]);
    let indexes = report["changed_block_indexes"].as_array().unwrap();
    indexes.iter().map(|i| i.as_u64().unwrap()).collect()
}

fn ids_of(report: &Value, key: &str, field: &str) -> Vec<String> {
    let entries = report[key].as_array().unwrap();
    entries
        .iter()
        .map(|c| c[field].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn number(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Checks a copy of the three generations: the originals in order, each onto the copy
/// of its parent, generation 1 in full and the others with exactly what changed (as the
/// source's `diff` says), and the target's `diff` the same as the source's. Returns the
/// copies.
fn check_chain(
    env: &Env,
    report: &Value,
    originals: &[String],
    source: &str,
    target: &str,
) -> Vec<String> {
    assert_eq!(ids_of(report, "copied", "from"), originals, "{report}");
    let copies = ids_of(report, "copied", "to");
    let parents = ids_of(report, "copied", "parent");
    assert_eq!(parents, ["-", &copies[0], &copies[1]], "{report}");
    let copied = report["copied"].as_array().unwrap();
    assert_eq!(
        number(&copied[0], "blocks_copied"),
        8,
        "generation 1's data blocks"
    );
    for g in 1..3 {
        let changed = diff(env, source, &originals[g - 1], &originals[g]);
        assert_eq!(
            number(&copied[g], "blocks_copied"),
            changed.len() as u64,
            "{report}"
        );
        assert_eq!(
            number(&copied[g], "bytes_copied"),
            changed.len() as u64 * BLOCK
        );
        assert_eq!(
            number(&copied[g], "zero_blocks_copied"),
            g as u64,
            "{report}"
        );
        assert_eq!(diff(env, target, &copies[g - 1], &copies[g]), changed);
    }
    copies
}

fn restores_identically(env: &Env, location: &str, copies: &[String], generations: &[PathBuf]) {
    for (copy, original) in copies.iter().zip(generations) {
        let restored = env.path(&format!("restored-{copy}"));
        run(
            env,
            location,
            &["restore", copy, restored.to_str().unwrap()],
        );
        assert_same_content(original, &restored);
        std::fs::remove_file(&restored).unwrap();
    }
}

fn serve(env: &Env, dir: &str, extra: &[&str]) -> (ServeProcess, String) {
    let served = ServeProcess::start(
        &env.path(dir),
        env.dir.path(),
        &env.path("serve-xdg"),
        extra,
    );
    let location = format!("ebs+{}", served.url);
    (served, location)
}

#[test]
fn a_local_chain_goes_into_serve_and_back_with_only_the_changed_blocks() {
    let env = Env::new();
    let (image, generations, originals) = three_generations(&env);
    let img = image.to_str().unwrap();
    let (served, remote) = serve(&env, "served", &[]);
    let report = run(
        &env,
        &local(&env),
        &["copy", "--source", img, "--to", &remote],
    );
    let copies = check_chain(&env, &report, &originals, &local(&env), &remote);
    restores_identically(&env, &remote, &copies, &generations);
    let again = run(
        &env,
        &local(&env),
        &["copy", "--source", img, "--to", &remote],
    );
    assert_eq!(again["copied"], Value::Array(vec![]), "{again}");
    assert_eq!(ids_of(&again, "skipped", "to"), copies);
    drop(served);

    // What the server's store holds: each copy wrote exactly what the copy sent, and
    // names its original.
    let served_store = env.path("served").display().to_string();
    for (n, copy) in copies.iter().enumerate() {
        let shown = run(&env, &served_store, &["show", copy]);
        let sent = number(&report["copied"][n], "blocks_copied");
        assert_eq!(number(&shown, "changed_blocks_count"), sent, "{shown}");
        assert_eq!(shown["tags"]["ebsnap:copied-from"], originals[n].as_str());
        assert_eq!(shown["tags"]["ebsnap:source"], img);
        let original = run(&env, &local(&env), &["show", &originals[n]]);
        assert_eq!(shown["description"], original["description"]);
        assert_eq!(
            shown["checksum"], original["checksum"],
            "the same blocks, the same aggregate"
        );
    }

    // And back, from the server into a fresh local store.
    let (_served, remote) = serve(&env, "served", &[]);
    let back = env.path("back").display().to_string();
    let report = run(&env, &remote, &["copy", "--source", img, "--to", &back]);
    let returned = check_chain(&env, &report, &copies, &remote, &back);
    restores_identically(&env, &back, &returned, &generations);
}

#[test]
fn a_chain_whose_first_generation_was_deleted_starts_at_the_oldest_left() {
    let env = Env::new();
    let (_image, generations, originals) = three_generations(&env);
    run(&env, &local(&env), &["delete", &originals[0]]);
    let (_served, remote) = serve(&env, "served", &[]);
    let report = run(
        &env,
        &local(&env),
        &["copy", &originals[2], "--to", &remote],
    );
    assert_eq!(
        ids_of(&report, "copied", "from"),
        &originals[1..],
        "{report}"
    );
    let copies = ids_of(&report, "copied", "to");
    assert_eq!(ids_of(&report, "copied", "parent"), ["-", &copies[0]]);
    // Generation 2 holds 8 data blocks (0, 1, 2, 3, 5, 10, 12, 20), all sent (the zeros
    // it wrote over generation 1's data are not: nothing is under them now);
    // generation 3 only what changed.
    assert_eq!(number(&report["copied"][0], "blocks_copied"), 8, "{report}");
    assert_eq!(number(&report["copied"][0], "zero_blocks_copied"), 0);
    let changed = diff(&env, &local(&env), &originals[1], &originals[2]);
    assert_eq!(
        number(&report["copied"][1], "blocks_copied"),
        changed.len() as u64
    );
    assert_eq!(diff(&env, &remote, &copies[0], &copies[1]), changed);
    restores_identically(&env, &remote, &copies, &generations[1..]);
    // Naming a snapshot copied already copies nothing.
    let again = run(
        &env,
        &local(&env),
        &["copy", &originals[1], "--to", &remote],
    );
    assert_eq!(ids_of(&again, "skipped", "to"), &copies[..1], "{again}");
}

#[test]
fn an_encrypted_copy_writes_every_zero_block_of_its_first_snapshot() {
    let env = Env::new();
    let (image, generations, originals) = three_generations(&env);
    let img = image.to_str().unwrap();
    let (_served, remote) = serve(&env, "served", &[]);
    let report = run(
        &env,
        &local(&env),
        &["copy", "--source", img, "--to", &remote, "--encrypted"],
    );
    let copied = report["copied"].as_array().unwrap();
    // A 1 GiB volume: 2048 blocks, 8 of them data.
    assert_eq!(number(&copied[0], "blocks_copied"), 2048, "{report}");
    assert_eq!(number(&copied[0], "zero_blocks_copied"), 2040);
    let copies = ids_of(&report, "copied", "to");
    for g in 1..3 {
        let changed = diff(&env, &local(&env), &originals[g - 1], &originals[g]);
        assert_eq!(number(&copied[g], "blocks_copied"), changed.len() as u64);
    }
    assert_eq!(run(&env, &remote, &["show", &copies[2]])["encrypted"], true);
    // (The newest alone: each restore of an encrypted copy reads its whole volume.)
    restores_identically(&env, &remote, &copies[2..], &generations[2..]);
}

#[test]
fn a_copy_killed_mid_way_resumes_sending_only_what_is_missing() {
    let env = Env::new();
    let image = env.dense_image("big.img", 160, 5);
    let original = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // About 100 puts a second: the copy takes over a second and a half.
    let (_served, remote) = serve(&env, "served", &["--faults", "latency-ms=40"]);
    let copy_args = ["--workers", "4", "copy", &original, "--to", &remote];
    let mut child = command(&env, &local(&env), &copy_args).spawn().unwrap();
    let uploads = env.path("xdg-state/ebsnap/uploads");
    wait_until("the copy records its first puts", || {
        settled_below(&uploads) > 8
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let report = run(&env, &local(&env), &copy_args);
    let copied = &report["copied"][0];
    assert_eq!(copied["resumed"], true, "{report}");
    let (sent, resumed) = (
        number(copied, "blocks_copied"),
        number(copied, "blocks_resumed"),
    );
    assert!(resumed > 0 && sent < 160, "{report}");
    // Blocks put after the last checkpoint may be put again, never fewer than all.
    assert!(sent + resumed >= 160, "{report}");
    let copy = copied["to"].as_str().unwrap().to_owned();
    let listed = run(&env, &remote, &["snapshots"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        number(
            &run(&env, &remote, &["show", &copy]),
            "changed_blocks_count"
        ),
        160
    );
    restores_identically(&env, &remote, &[copy], std::slice::from_ref(&image));
    let left = journals(&uploads);
    assert!(left.is_empty(), "gone once the copy completed: {left:?}");
    let again = run(&env, &local(&env), &copy_args);
    assert_eq!(again["copied"], Value::Array(vec![]), "{again}");
}

#[test]
fn a_copy_through_a_faulty_server_completes_both_ways() {
    let env = Env::new();
    let (image, generations, originals) = three_generations(&env);
    let img = image.to_str().unwrap();
    let faults = [
        "--faults",
        "throttle=0.2,error=0.05,reset=0.02",
        "--seed",
        "14",
    ];
    let (_served, remote) = serve(&env, "served", &faults);
    let report = run(
        &env,
        &local(&env),
        &["copy", "--source", img, "--to", &remote],
    );
    let copies = check_chain(&env, &report, &originals, &local(&env), &remote);
    restores_identically(&env, &remote, &copies, &generations);
    let back = env.path("back").display().to_string();
    let report = run(&env, &remote, &["copy", "--source", img, "--to", &back]);
    let returned = check_chain(&env, &report, &copies, &remote, &back);
    restores_identically(&env, &back, &returned, &generations);
}

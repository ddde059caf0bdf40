//! `ebsnap forget`, through the binary, on the local store and through `ebsnap serve`:
//! per source, what the policy does not keep goes; other tools' snapshots, pending
//! ones and the newest of each source stay; a forget racing a backup of the same
//! source leaves the backup whole. (The policies over a year of start times are unit
//! tests of the pure policy: real snapshots cannot be made in the past.)

mod common;

use common::server::{ServeProcess, KEY_ID, SECRET};
use common::*;
use ebsnap::engine::{MANAGED_TAG, SOURCE_PATH_TAG};
use ebsnap::store::conformance::snapshot_with;
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{LocalStore, SnapshotId, SnapshotStore, StartSnapshot, Tag};
use serde_json::Value;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `ebsnap --store LOCATION ARGS`, in the test's directory, with its state under
/// `state` (two states: two hosts, which share no lock), buckets in UTC, and the
/// server's credentials.
fn command(env: &Env, location: &str, state: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
    env.aws_client(&mut cmd, (KEY_ID, SECRET))
        .args(["--store", location])
        .args(args)
        .current_dir(env.dir.path())
        .env("TZ", "UTC")
        .env_remove("EBSNAP_STORE")
        .env("XDG_DATA_HOME", env.path("xdg-data"))
        .env("XDG_STATE_HOME", env.path(state))
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_EBS")
        .env_remove("AWS_ENDPOINT_URL_EC2");
    cmd
}

fn run(env: &Env, location: &str, args: &[&str]) -> Value {
    let out = command(
        env,
        location,
        "xdg-state",
        &[&["--json", "-q"], args].concat(),
    )
    .output()
    .unwrap();
    json_of(&out, args)
}

fn json_of(out: &Output, args: &[&str]) -> Value {
    assert!(
        out.status.success(),
        "ebsnap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write_block(image: &Path, index: u64, seed: u64) {
    let mut data = vec![0u8; BLOCK as usize];
    fill_random(&mut data, seed);
    let f = OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(&data, index * BLOCK).unwrap();
}

/// A source `name` backed up `n` times, one block changed before each backup after
/// the first. Returns the image, each generation's content and the snapshots.
fn generations(
    env: &Env,
    location: &str,
    name: &str,
    n: u64,
    seed: u64,
) -> (PathBuf, Vec<PathBuf>, Vec<String>) {
    let image = env.path(name);
    make_image(&image, 8 * BLOCK, &[(0, 4 * BLOCK as usize)], seed);
    let (mut states, mut ids) = (Vec::new(), Vec::new());
    for g in 0..n {
        write_block(&image, g, seed * 100 + g);
        ids.push(backup(env, location, &image, &mut states));
    }
    (image, states, ids)
}

/// Backs up `image`, keeping a copy of what it held in `states`.
fn backup(env: &Env, location: &str, image: &Path, states: &mut Vec<PathBuf>) -> String {
    let state = env.path(&format!("state-{}", states.len()));
    let name = image.file_name().unwrap().to_str().unwrap();
    let state = state.with_extension(name);
    std::fs::copy(image, &state).unwrap();
    states.push(state);
    let report = run(env, location, &["backup", image.to_str().unwrap()]);
    report["snapshot_id"].as_str().unwrap().to_owned()
}

/// Plants, straight into the local store at `root` (no process holding it), what
/// forget must never touch: another tool's completed snapshot that even names the
/// source, and an ebsnap snapshot of it left pending on `parent`.
fn plant(root: &Path, source: &Path, parent: &str) -> (String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = LocalStore::open(root, Access::Write, LockWait::Fail).unwrap();
        let foreign = snapshot_with(&store, None, 1, &[(0, 7)]).await;
        let source_tag = Tag::new(SOURCE_PATH_TAG, source.display().to_string());
        store
            .create_tags(&foreign, std::slice::from_ref(&source_tag))
            .await
            .unwrap();
        let mut request = StartSnapshot::new(1);
        request.parent = Some(parent.parse::<SnapshotId>().unwrap());
        request.tags = vec![source_tag, Tag::new(MANAGED_TAG, "true")];
        let pending = store.start_snapshot(request).await.unwrap().id;
        (foreign.to_string(), pending.to_string())
    })
}

/// The store's snapshots: id and status.
fn listing(env: &Env, location: &str) -> Vec<(String, String)> {
    let all = run(env, location, &["snapshots"]);
    let all = all["snapshots"].as_array().unwrap().clone();
    all.iter()
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap().to_owned();
            (field("snapshot_id"), field("status"))
        })
        .collect()
}

fn ids(report: &Value, key: &str) -> Vec<String> {
    let entries = report[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key}: {report}"));
    entries
        .iter()
        .map(|e| e["snapshot_id"].as_str().unwrap().to_owned())
        .collect()
}

fn entry<'a>(report: &'a Value, id: &str) -> &'a Value {
    let all = report["kept"].as_array().unwrap().iter();
    let all = all.chain(report["removed"].as_array().unwrap());
    all.into_iter()
        .find(|e| e["snapshot_id"] == id)
        .unwrap_or_else(|| panic!("{id} in {report}"))
}

/// Restores `id` and compares it with what it was taken of.
fn restores_as(env: &Env, location: &str, id: &str, state: &Path) {
    let target = env.path(&format!("restored-{id}"));
    run(env, location, &["restore", id, target.to_str().unwrap()]);
    assert_same_content(&target, state);
    std::fs::remove_file(&target).unwrap();
}

#[test]
fn an_empty_policy_is_refused_with_exit_2() {
    let env = Env::new();
    let location = env.store().display().to_string();
    let (_, _, made) = generations(&env, &location, "a.img", 2, 1);
    for args in [
        &["forget"][..],
        &["forget", "--keep-last", "0"],
        &["forget", "--dry-run"],
    ] {
        let out = command(&env, &location, "xdg-state", args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--keep-"), "{stderr}");
    }
    assert_eq!(listing(&env, &location).len(), made.len());
    let mut bad = command(
        &env,
        &location,
        "xdg-state",
        &["forget", "--keep-within", "3w"],
    );
    assert_eq!(bad.output().unwrap().status.code(), Some(2));
}

/// The JSON contract: `kept`, `removed` (entries of `snapshot_id`, `source`,
/// `start_time`, `reasons`) and `dry_run`; removed entries have no reasons.
fn check_shape(report: &Value, env: &Env) {
    let keys: Vec<&String> = report.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dry_run", "kept", "removed"], "{report}");
    for (list, kept) in [("kept", true), ("removed", false)] {
        for e in report[list].as_array().unwrap() {
            let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["reasons", "snapshot_id", "source", "start_time"],
                "{e}"
            );
            let source = e["source"].as_str().unwrap();
            assert!(source.starts_with(env.dir.path().to_str().unwrap()), "{e}");
            let start = e["start_time"].as_str().unwrap();
            humantime::parse_rfc3339(start).unwrap_or_else(|_| panic!("RFC 3339: {e}"));
            let reasons = e["reasons"].as_array().unwrap();
            assert_eq!(!reasons.is_empty(), kept, "{e}");
        }
    }
}

#[test]
fn per_source_the_policy_decides_and_others_snapshots_stay_on_the_local_store() {
    let env = Env::new();
    let location = env.store().display().to_string();
    let (a_image, a_states, a) = generations(&env, &location, "a.img", 4, 1);
    let (_, b_states, b) = generations(&env, &location, "b.img", 2, 2);
    let (foreign, pending) = plant(&env.store(), &a_image, &a[1]);
    let before = listing(&env, &location);

    let dry = run(
        &env,
        &location,
        &["forget", "--keep-last", "1", "--dry-run"],
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        ids(&dry, "removed"),
        [a[0].as_str(), a[2].as_str(), b[0].as_str()]
    );
    assert_eq!(
        listing(&env, &location),
        before,
        "a dry run deletes nothing"
    );
    check_shape(&dry, &env);
    assert_eq!(
        entry(&dry, &a[1])["reasons"],
        serde_json::json!([format!("parent of pending snapshot {pending}")])
    );
    assert_eq!(
        entry(&dry, &a[3])["reasons"],
        serde_json::json!(["last snapshot", "newest of its source"])
    );
    let text = command(
        &env,
        &location,
        "xdg-state",
        &["forget", "--keep-last", "1", "--dry-run"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("would remove  {}", a[0])), "{text}");
    assert!(text.ends_with("kept 3, would remove 3\n"), "{text}");

    // A relative --source names the path as backup recorded it.
    let only_b = run(
        &env,
        &location,
        &["forget", "--keep-last", "1", "--source", "b.img"],
    );
    assert_eq!(ids(&only_b, "removed"), [b[0].as_str()]);
    assert_eq!(ids(&only_b, "kept"), [b[1].as_str()]);
    let all = run(&env, &location, &["forget", "--keep-last", "1"]);
    assert_eq!(all["dry_run"], false);
    assert_eq!(ids(&all, "removed"), [a[0].as_str(), a[2].as_str()]);
    check_shape(&all, &env);
    let left: Vec<String> = listing(&env, &location).into_iter().map(|s| s.0).collect();
    for id in [&a[1], &a[3], &b[1], &foreign, &pending] {
        assert!(left.contains(id), "{id} stays: {left:?}");
    }
    assert_eq!(left.len(), 5, "{left:?}");
    restores_as(&env, &location, &a[3], &a_states[3]);
    restores_as(&env, &location, &a[1], &a_states[1]);
    restores_as(&env, &location, &b[1], &b_states[1]);
    let again = run(&env, &location, &["forget", "--keep-last", "1"]);
    assert!(ids(&again, "removed").is_empty(), "{again}");
}

/// `ebsnap serve` on a local store in `dir`, with `extra` flags; its location.
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
fn through_serve_only_ebsnaps_completed_snapshots_go() {
    let env = Env::new();
    let image = env.path("disk.img");
    make_image(&image, 8 * BLOCK, &[(0, BLOCK as usize)], 3);
    let (foreign, _) = plant(&env.path("served"), &image, &seed_parent(&env));
    let (served, location) = serve(&env, "served", &[]);
    let (_, states, made) = generations(&env, &location, "disk.img", 3, 4);
    let report = run(
        &env,
        &location,
        &["forget", "--keep-last", "2", "--keep-within", "1h"],
    );
    // All three started within the hour: `within` keeps them all.
    assert!(ids(&report, "removed").is_empty(), "{report}");
    assert_eq!(
        entry(&report, &made[0])["reasons"],
        serde_json::json!(["within 1h"])
    );
    let report = run(&env, &location, &["forget", "--keep-last", "2"]);
    assert_eq!(ids(&report, "removed"), [made[0].as_str()]);
    assert_eq!(ids(&report, "kept"), [made[1].as_str(), made[2].as_str()]);
    check_shape(&report, &env);
    restores_as(&env, &location, &made[1], &states[1]);
    restores_as(&env, &location, &made[2], &states[2]);
    drop(served);
    // The other tool's snapshot (and its pending one) are still in the served store.
    let store = LocalStore::open(&env.path("served"), Access::Read, LockWait::Fail).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let left = rt.block_on(store.list_snapshots()).unwrap();
    assert_eq!(left.len(), 2 + 2 + 1, "{left:?}");
    assert!(left.iter().any(|s| s.id.to_string() == foreign));
}

/// A completed snapshot for the planted pending one to be a child of.
fn seed_parent(env: &Env) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = LocalStore::open(&env.path("served"), Access::Write, LockWait::Fail).unwrap();
        snapshot_with(&store, None, 1, &[(1, 9)]).await.to_string()
    })
}

/// Runs `forget --keep-last 2` (with its state under `state`) again and again while
/// a backup of the same source runs, then once more. Every forget succeeds. Returns
/// the backup's snapshot.
fn race(env: &Env, location: &str, image: &Path, states: &mut Vec<PathBuf>, state: &str) -> String {
    write_block(image, 5, 1000 + states.len() as u64);
    let copy = env.path(&format!("state-{}.race", states.len()));
    std::fs::copy(image, &copy).unwrap();
    states.push(copy);
    let args = ["--json", "-q", "backup", image.to_str().unwrap()];
    let backup = command(env, location, "xdg-state", &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let forget = ["--json", "-q", "forget", "--keep-last", "2"];
    let mut rounds = 0;
    let pid = backup.id() as i32;
    // Until the backup exits (a zombie until waited for: /proc says so).
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .contains(") Z")
    {
        json_of(
            &command(env, location, state, &forget).output().unwrap(),
            &forget,
        );
        rounds += 1;
    }
    let made = json_of(&backup.wait_with_output().unwrap(), &args);
    assert!(rounds > 0);
    json_of(
        &command(env, location, state, &forget).output().unwrap(),
        &forget,
    );
    made["snapshot_id"].as_str().unwrap().to_owned()
}

#[test]
fn a_forget_racing_a_backup_of_the_same_source_leaves_the_backup_whole() {
    let env = Env::new();
    // At 100 ms a request, a backup takes a second or so: forgets run meanwhile.
    let (_served, location) = serve(&env, "served", &["--faults", "latency-ms=100"]);
    let (image, mut states, mut made) = generations(&env, &location, "disk.img", 3, 5);
    // Another host's forget: no lock in common, the store alone keeps them apart.
    made.push(race(&env, &location, &image, &mut states, "other-host"));
    // This host's: it waits for the backup's lock.
    made.push(race(&env, &location, &image, &mut states, "xdg-state"));
    let left: Vec<(String, String)> = listing(&env, &location);
    let expected = [
        (made[3].clone(), "completed".to_owned()),
        (made[4].clone(), "completed".to_owned()),
    ];
    assert_eq!(left, expected);
    let shown = run(&env, &location, &["show", &made[4]]);
    assert_eq!(shown["parent_snapshot_id"], made[3].as_str(), "{shown}");
    assert_eq!(shown["tags"][MANAGED_TAG], "true", "{shown}");
    restores_as(&env, &location, &made[3], &states[3]);
    restores_as(&env, &location, &made[4], &states[4]);
}

#[test]
fn on_the_local_store_a_forget_waits_for_a_backup_of_the_source() {
    let env = Env::new();
    let location = env.store().display().to_string();
    let (image, mut states, mut made) = generations(&env, &location, "disk.img", 3, 6);
    made.push(race(&env, &location, &image, &mut states, "xdg-state"));
    let left: Vec<String> = listing(&env, &location).into_iter().map(|s| s.0).collect();
    assert_eq!(left, [made[2].as_str(), made[3].as_str()]);
    restores_as(&env, &location, &made[2], &states[2]);
    restores_as(&env, &location, &made[3], &states[3]);
}

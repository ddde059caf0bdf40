//! ebsnap-run.service's system call filter against the calls ebsnap really makes: a
//! call the filter lacks fails with EPERM under the unit, which no test of the binary
//! alone would notice. So backups (a local store, and the EBS API through `ebsnap
//! serve`), a check, a listing and a delete run under strace, and every call they
//! make must be one the unit's SystemCallFilter= lines allow.

mod common;

use common::recover::have;
use common::server::{ServeProcess, KEY_ID, SECRET};
use common::Env;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ebsnap");
const SERVICE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/systemd/ebsnap-run.service"
);

/// Calls ebsnap makes that may fail: cachestat (Linux 6.5) is unknown to systemd
/// before 255, and ebsnap reads through O_DIRECT when it cannot ask the cache.
const MAY_FAIL: [&str; 2] = ["cachestat", "syscall_0x1c3"];

/// The calls of `group` (`@system-service`), its nested groups expanded.
fn group(name: &str) -> BTreeSet<String> {
    if !name.starts_with('@') {
        return BTreeSet::from([name.to_owned()]);
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "syscall-filter {name}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && *l != name)
        .flat_map(group)
        .collect()
}

/// What the unit allows: its allow-list, less what its `~` lines deny.
fn allowed_by_unit() -> BTreeSet<String> {
    let text = fs::read_to_string(SERVICE).unwrap();
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for value in text
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (set, names) = match value.strip_prefix('~') {
            Some(names) => (&mut denied, names),
            None => (&mut allowed, value),
        };
        set.extend(names.split_whitespace().flat_map(group));
    }
    assert!(allowed.len() > 100, "no allow-list in {SERVICE}");
    allowed.difference(&denied).cloned().collect()
}

/// `ebsnap ARGS` under `strace -f`, expected to succeed; the trace goes to `trace`.
fn traced(env: &Env, trace: &Path, args: &[&str]) {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(trace)
        .arg(BIN)
        .args(args)
        .env_remove("EBSNAP_STORE")
        .env("XDG_DATA_HOME", env.path("xdg-data"))
        .env("XDG_STATE_HOME", env.path("xdg-state"))
        .env("HOME", env.path("home"))
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ebsnap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of the calls in strace's output (`PID name(args) = result` lines).
fn calls_in(trace: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(trace).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(' ').map(|(_pid, rest)| rest.trim_start()))
        .filter_map(|rest| rest.split_once('(').map(|(name, _)| name))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// Backups, incremental ones included, a check, a listing and a delete, on a local
/// store and through the EBS API: what `ebsnap run` (a backup, then its retention)
/// does under the unit.
fn calls_of_a_night(env: &Env) -> BTreeSet<String> {
    let image = env.dense_image("disk.img", 6, 7);
    let img = image.to_str().unwrap();
    let store = env.store();
    let local = store.to_str().unwrap();
    let server = ServeProcess::start(&env.path("served"), env.dir.path(), &env.path("srv"), &[]);
    let remote = format!("ebs+{}", server.url);
    let runs: [&[&str]; 6] = [
        &["--store", local, "-q", "backup", img],
        &["--store", local, "-q", "backup", img, "--full"],
        &["--store", local, "-q", "check", "--read-data"],
        &["--store", &remote, "-q", "backup", img],
        &["--store", &remote, "-q", "backup", img],
        &["--store", &remote, "-q", "--json", "snapshots"],
    ];
    let mut calls = BTreeSet::new();
    for (i, args) in runs.iter().enumerate() {
        let trace = env.path(&format!("trace-{i}"));
        traced(env, &trace, args);
        calls.extend(calls_in(&trace));
    }
    calls.extend(delete_oldest(env, local));
    calls
}

/// Deletes the local store's first snapshot (as retention would), traced.
fn delete_oldest(env: &Env, local: &str) -> BTreeSet<String> {
    let listed = env.json(&["snapshots"]);
    let id = listed["snapshots"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trace = env.path("trace-delete");
    traced(env, &trace, &["--store", local, "-q", "delete", &id]);
    calls_in(&trace)
}

#[test]
fn unit_allows_every_call_ebsnap_makes() {
    let test = "unit_allows_every_call_ebsnap_makes";
    if !(have("strace", test) && have("systemd-analyze", test)) {
        return;
    }
    let allowed = allowed_by_unit();
    let env = Env::new();
    let calls = calls_of_a_night(&env);
    assert!(
        calls.contains("pread64") && calls.contains("connect"),
        "{calls:?}"
    );
    let refused: Vec<&String> = calls
        .iter()
        .filter(|c| !allowed.contains(*c) && !MAY_FAIL.contains(&c.as_str()))
        .collect();
    assert!(
        refused.is_empty(),
        "ebsnap-run.service's SystemCallFilter= refuses {refused:?}"
    );
}

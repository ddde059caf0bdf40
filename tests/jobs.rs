//! `ebsnap run` and the config file: jobs in the file's order, a failed job not
//! stopping the others, the precedence of settings, dry runs, and config errors that
//! name the file, line and key and run nothing.

mod common;

use common::Env;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Writes the config file `text` (with `{dir}` as the test directory).
fn config(env: &Env, text: &str) -> PathBuf {
    let path = env.path("config.toml");
    let dir = env.dir.path().to_str().unwrap();
    std::fs::write(&path, text.replace("{dir}", dir)).unwrap();
    path
}

/// `ebsnap --config CONFIG ARGS...`, without --store.
fn ebsnap(env: &Env, config: &Path, args: &[&str]) -> Output {
    env.bare()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The snapshots in the local store at `store` (none if it was never made).
fn snapshots(env: &Env, store: &Path) -> Vec<Value> {
    if !store.exists() {
        return Vec::new();
    }
    let out = env
        .bare()
        .arg("--store")
        .arg(store)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    json(&out)["snapshots"].as_array().unwrap().clone()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_failed_job_does_not_stop_the_others_and_the_exit_code_is_the_worst() {
    let env = Env::new();
    env.dense_image("good.img", 3, 1);
    let cfg = config(
        &env,
        r#"
[defaults]
store = "{dir}/store"

[jobs.missing]
source = "{dir}/nowhere.img"

[jobs.good]
source = "{dir}/good.img"
description = "the good disk"
tags = { host = "db1" }
keep = { last = 3, daily = 7 }
"#,
    );
    let out = ebsnap(&env, &cfg, &["run", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let jobs = report["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["missing", "good"], "in the file's order");
    let (missing, good) = (&jobs[0], &jobs[1]);
    assert_eq!(missing["ok"], false);
    assert_eq!(missing["exit_code"], 1);
    assert!(missing["backup"].is_null());
    assert!(
        missing["error"].as_str().unwrap().contains("nowhere.img"),
        "{missing}"
    );
    assert_eq!(good["ok"], true);
    assert_eq!(good["exit_code"], 0);
    assert!(good["error"].is_null());
    assert!(good.get("forget").is_some(), "{good}");
    let id = good["backup"]["snapshot_id"].as_str().unwrap();
    assert_eq!(good["backup"]["blocks_written"], 3);
    let all = snapshots(&env, &env.store());
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["snapshot_id"], id);
    assert_eq!(all[0]["description"], "the good disk");
    // One line for each job's start and end, for cron and journald; no bar.
    let log = stderr(&out);
    for line in [
        "job missing: started",
        "job missing: failed (exit 1)",
        "job good: started",
        "job good: done",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} in {log}");
    }
}

#[test]
fn named_jobs_run_alone_and_all_succeeding_exits_zero() {
    let env = Env::new();
    env.dense_image("a.img", 1, 1);
    env.dense_image("b.img", 1, 2);
    let cfg = config(
        &env,
        "[defaults]\nstore = \"{dir}/store\"\n[jobs.a]\nsource = \"{dir}/a.img\"\n[jobs.b]\nsource = \"{dir}/b.img\"\n",
    );
    let out = ebsnap(&env, &cfg, &["run", "b", "--json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = json(&out)["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["name"], "b");
    assert_eq!(snapshots(&env, &env.store()).len(), 1);
}

#[test]
fn the_flag_comes_before_the_job_and_the_job_before_the_defaults() {
    let env = Env::new();
    env.dense_image("a.img", 1, 1);
    env.dense_image("b.img", 1, 2);
    let cfg = config(
        &env,
        r#"
[defaults]
store = "defaults-store"

[jobs.own]
source = "a.img"
store = "{dir}/job-store"

[jobs.plain]
source = "b.img"
"#,
    );
    let out = ebsnap(&env, &cfg, &["run", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A relative store or source is the config file's neighbour.
    assert_eq!(snapshots(&env, &env.path("job-store")).len(), 1);
    assert_eq!(snapshots(&env, &env.path("defaults-store")).len(), 1);
    let flag = env.path("flag-store");
    let out = env
        .bare()
        .arg("--config")
        .arg(&cfg)
        .arg("--store")
        .arg(&flag)
        .args(["run", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshots(&env, &flag).len(), 2, "both jobs into --store");
    // [defaults] apply to every command, not only to run.
    let image = env.path("a.img");
    let out = env
        .bare()
        .arg("--config")
        .arg(&cfg)
        .arg("backup")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshots(&env, &env.path("defaults-store")).len(), 2);
}

#[test]
fn a_dry_run_plans_every_job_and_starts_no_snapshot() {
    let env = Env::new();
    env.dense_image("a.img", 2, 1);
    env.dense_image("b.img", 1, 2);
    let cfg = config(
        &env,
        "[defaults]\nstore = \"{dir}/store\"\n[jobs.a]\nsource = \"a.img\"\nkeep = { last = 1 }\n[jobs.b]\nsource = \"b.img\"\n",
    );
    let out = ebsnap(&env, &cfg, &["run", "--dry-run", "--json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = json(&out)["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["backup"]["dry_run"], true);
    assert_eq!(
        jobs[0]["backup"]["blocks_written"], 2,
        "what it would write"
    );
    assert!(jobs[0]["backup"]["snapshot_id"].is_null());
    assert!(snapshots(&env, &env.store()).is_empty());
}

/// A config error names the file, line and key, exits 2, and runs nothing: not even
/// the good job listed before the bad one.
fn assert_refused(text: &str, run: &[&str], wanted: &[&str]) {
    let env = Env::new();
    env.dense_image("a.img", 1, 1);
    let cfg = config(&env, text);
    let out = ebsnap(&env, &cfg, run);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    let file = cfg.display().to_string();
    assert!(message.contains(&file), "names {file}: {message}");
    for w in wanted {
        assert!(message.contains(w), "{w:?} in {message}");
    }
    assert!(snapshots(&env, &env.store()).is_empty(), "nothing ran");
    assert!(!env.store().exists(), "no store was even made");
}

const GOOD: &str = "[defaults]\nstore = \"{dir}/store\"\n[jobs.good]\nsource = \"{dir}/a.img\"\n";

#[test]
fn an_unknown_key_is_a_config_error() {
    let text = format!("{GOOD}\n[jobs.bad]\nsource = \"{{dir}}/a.img\"\nkepe = {{ last = 1 }}\n");
    assert_refused(&text, &["run"], &[":8:", "jobs.bad.kepe", "unknown field"]);
}

#[test]
fn a_bad_type_is_a_config_error() {
    let text = format!("{GOOD}workers = \"many\"\n");
    assert_refused(
        &text,
        &["run"],
        &[":5:", "jobs.good.workers", "invalid type"],
    );
    let text = format!("{GOOD}keep = {{ daily = -1 }}\n");
    assert_refused(&text, &["run"], &[":5:", "jobs.good.keep.daily"]);
}

#[test]
fn a_job_without_a_source_is_a_config_error() {
    let text = format!("{GOOD}\n[jobs.nosource]\ndescription = \"x\"\n");
    assert_refused(&text, &["run"], &[":6:", "jobs.nosource.source"]);
    // Whatever the command: the file is broken.
    let image = "a.img";
    assert_refused(&text, &["backup", image], &["jobs.nosource.source"]);
}

#[test]
fn an_unknown_job_name_is_a_config_error() {
    assert_refused(
        GOOD,
        &["run", "good", "nosuch"],
        &["no job named \"nosuch\"", "good"],
    );
}

#[test]
fn a_missing_config_named_explicitly_is_an_error_and_no_config_means_no_jobs() {
    let env = Env::new();
    let out = ebsnap(&env, &env.path("absent.toml"), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("absent.toml"), "{}", stderr(&out));
    let out = env
        .bare()
        .env("EBSNAP_CONFIG", env.path("absent.toml"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // No file at the default places: commands run without one, `run` has no jobs.
    let out = env.bare().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no"), "{}", stderr(&out));
    // The user's default file is found.
    env.dense_image("a.img", 1, 1);
    let dir = env.path("xdg-config/ebsnap");
    std::fs::create_dir_all(&dir).unwrap();
    let text = GOOD.replace("{dir}", env.dir.path().to_str().unwrap());
    std::fs::write(dir.join("config.toml"), text).unwrap();
    let out = env.bare().args(["run", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshots(&env, &env.store()).len(), 1);
}

#[test]
fn each_job_s_retention_runs_after_its_backup_and_its_hooks_around_it() {
    let env = Env::new();
    env.dense_image("a.img", 1, 1);
    let cfg = config(
        &env,
        "[defaults]\nstore = \"{dir}/store\"\n[jobs.a]\nsource = \"{dir}/a.img\"\nkeep = { last = 2 }\n\
         pre = \"echo \\\"pre $EBSNAP_JOB\\\" >> {dir}/hooks.log\"\n\
         post = \"echo \\\"post $EBSNAP_JOB $EBSNAP_STATUS\\\" >> {dir}/hooks.log\"\n",
    );
    let mut removed = Vec::new();
    for generation in 0..4u64 {
        env.dense_image("a.img", 1, generation + 10);
        let out = ebsnap(&env, &cfg, &["run", "--json", "-q"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let job = json(&out)["jobs"][0].clone();
        let forget = &job["forget"];
        assert_eq!(forget["dry_run"], false, "{job}");
        assert!(forget["kept"].as_array().unwrap().len() <= 2, "{job}");
        removed.extend(forget["removed"].as_array().unwrap().clone());
    }
    // Four backups, two kept: the two oldest went, one run at a time.
    assert_eq!(removed.len(), 2, "{removed:?}");
    let left = snapshots(&env, &env.store());
    assert_eq!(left.len(), 2, "{left:?}");
    let removed_ids: Vec<&Value> = removed.iter().map(|r| &r["snapshot_id"]).collect();
    assert!(left
        .iter()
        .all(|s| !removed_ids.contains(&&s["snapshot_id"])));
    let log = std::fs::read_to_string(env.path("hooks.log")).unwrap();
    assert_eq!(log.lines().filter(|l| *l == "pre a").count(), 4, "{log}");
    assert_eq!(
        log.lines().filter(|l| *l == "post a ok").count(),
        4,
        "{log}"
    );
}

#[test]
fn a_config_store_over_ebsnap_store_is_said_on_stderr() {
    let env = Env::new();
    let image = env.dense_image("a.img", 1, 1);
    let cfg = config(&env, "[defaults]\nstore = \"{dir}/file-store\"\n");
    let out = env
        .bare()
        .env("EBSNAP_STORE", env.path("env-store"))
        .arg("--config")
        .arg(&cfg)
        .arg("backup")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The documented order holds (the file over the environment), and is told.
    assert_eq!(snapshots(&env, &env.path("file-store")).len(), 1);
    assert!(!env.path("env-store").exists());
    let said = stderr(&out);
    assert!(said.contains("before $EBSNAP_STORE"), "{said}");
    assert!(said.contains("config.toml"), "{said}");
}

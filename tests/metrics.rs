//! `--metrics-file`: the Prometheus text file that backup, restore and run leave for
//! node_exporter, read back by a real parser (Python's prometheus_client, installed
//! into .venv by scripts/test).

mod common;

use common::{venv_python, Env};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every sample in the file, as prometheus_client's text parser reads it: name,
/// labels, value. A file it cannot parse fails the test.
fn parse(file: &Path) -> Vec<Value> {
    let python = venv_python();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
out = []
for family in text_string_to_metric_families(text):
    assert family.type == "gauge", family
    assert family.documentation, family
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of series `name` for job `job`.
fn value(samples: &[Value], name: &str, job: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"]["job"] == job)
        .map(|s| s["value"].as_f64().unwrap())
}

fn labels(samples: &[Value], job: &str) -> Value {
    let sample = samples.iter().find(|s| s["labels"]["job"] == job).unwrap();
    sample["labels"].clone()
}

fn config(env: &Env, metrics: &Path) -> PathBuf {
    let path = env.path("config.toml");
    let text = format!(
        "[defaults]\nstore = {:?}\nmetrics_file = {:?}\n\n[jobs.db]\nsource = \"db.img\"\n\n[jobs.web]\nsource = \"web.img\"\n",
        env.store(),
        metrics
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(env: &Env, config: &Path) -> std::process::Output {
    env.bare()
        .arg("--config")
        .arg(config)
        .args(["run", "-q"])
        .output()
        .unwrap()
}

const SERIES: [&str; 7] = [
    "ebsnap_last_run_timestamp_seconds",
    "ebsnap_last_success_timestamp_seconds",
    "ebsnap_last_run_exit_code",
    "ebsnap_last_run_duration_seconds",
    "ebsnap_last_run_bytes_written",
    "ebsnap_last_run_blocks_written",
    "ebsnap_snapshots",
];

#[test]
fn backup_and_run_share_one_file_and_a_failure_keeps_the_last_success() {
    let env = Env::new();
    // A umask of 022 or 077 alike: the collector (another user) must read the file.
    let metrics_dir = env.path("textfile");
    std::fs::create_dir(&metrics_dir).unwrap();
    let metrics = metrics_dir.join("ebsnap.prom");
    let odd = env.dense_image("odd \"name\" \\.img", 2, 9);
    let metrics_flag = ["--metrics-file", metrics.to_str().unwrap()];
    let mut backup = env.process(&[&metrics_flag[..], &["backup", odd.to_str().unwrap()]].concat());
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        backup.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let out = backup.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = parse(&metrics);
    let odd_job = odd.to_str().unwrap();
    for name in SERIES {
        assert!(
            value(&samples, name, odd_job).is_some(),
            "{name} of the backup"
        );
    }
    assert_eq!(
        value(&samples, "ebsnap_last_run_blocks_written", odd_job),
        Some(2.0)
    );
    assert_eq!(value(&samples, "ebsnap_snapshots", odd_job), Some(1.0));
    let l = labels(&samples, odd_job);
    assert_eq!(l["source"], odd_job);
    assert_eq!(l["store"], env.store().to_str().unwrap());

    env.dense_image("db.img", 3, 1);
    env.dense_image("web.img", 1, 2);
    let cfg = config(&env, &metrics);
    let out = run(&env, &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = parse(&metrics);
    assert!(
        value(&first, "ebsnap_snapshots", odd_job).is_some(),
        "the backup's series are kept"
    );
    assert_eq!(
        value(&first, "ebsnap_last_run_blocks_written", "db"),
        Some(3.0)
    );
    assert_eq!(value(&first, "ebsnap_last_run_exit_code", "web"), Some(0.0));
    let db_success = value(&first, "ebsnap_last_success_timestamp_seconds", "db").unwrap();
    assert_eq!(
        value(&first, "ebsnap_last_run_timestamp_seconds", "db"),
        Some(db_success)
    );
    assert_eq!(
        labels(&first, "db")["source"],
        env.path("db.img").to_str().unwrap()
    );

    // The db disk is gone: its run fails, and says so; web's second run succeeds.
    std::fs::remove_file(env.path("db.img")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run(&env, &cfg);
    assert_eq!(out.status.code(), Some(1));
    let second = parse(&metrics);
    assert_eq!(value(&second, "ebsnap_last_run_exit_code", "db"), Some(1.0));
    assert_eq!(
        value(&second, "ebsnap_last_success_timestamp_seconds", "db"),
        Some(db_success)
    );
    assert!(value(&second, "ebsnap_last_run_timestamp_seconds", "db").unwrap() > db_success);
    assert_eq!(
        value(&second, "ebsnap_last_run_blocks_written", "db"),
        Some(0.0)
    );
    assert_eq!(value(&second, "ebsnap_snapshots", "db"), Some(1.0));
    assert_eq!(value(&second, "ebsnap_snapshots", "web"), Some(2.0));
    assert!(value(&second, "ebsnap_snapshots", odd_job).is_some());

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&metrics), 0o644, "readable by node_exporter");
    assert_eq!(mode(&metrics_dir.join("ebsnap.prom.lock")), 0o600);
    assert!(!metrics_dir.join("ebsnap.prom.tmp").exists());
}

#[test]
fn a_restore_is_recorded_apart_from_the_backups_and_a_dry_run_not_at_all() {
    let env = Env::new();
    let metrics = env.path("ebsnap.prom");
    let m = metrics.to_str().unwrap();
    let image = env.dense_image("disk.img", 2, 3);
    let out = env
        .ebsnap(&[
            "--metrics-file",
            m,
            "backup",
            "--dry-run",
            image.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!metrics.exists(), "a dry run records nothing");
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = env.path("restored.img");
    let out = env
        .ebsnap(&[
            "--metrics-file",
            m,
            "restore",
            &id,
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = parse(&metrics);
    let job = format!("restore:{}", target.display());
    assert_eq!(
        value(&samples, "ebsnap_last_run_exit_code", &job),
        Some(0.0)
    );
    assert_eq!(labels(&samples, &job)["source"], image.to_str().unwrap());
    // A restore that fails (no such snapshot) records its failure under the same job.
    let out = env
        .ebsnap(&[
            "--metrics-file",
            m,
            "restore",
            "snap-0123456789abcdef0",
            target.to_str().unwrap(),
            "--force",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let samples = parse(&metrics);
    assert!(value(&samples, "ebsnap_last_run_exit_code", &job).unwrap() > 0.0);
}

#[test]
fn concurrent_writers_keep_each_others_series() {
    let env = Env::new();
    let metrics = env.path("ebsnap.prom");
    let m = metrics.to_str().unwrap().to_owned();
    let images: Vec<PathBuf> = (0..6)
        .map(|n| env.dense_image(&format!("d{n}.img"), 1, n))
        .collect();
    // Separate stores: the backups themselves do not wait for each other.
    let children: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(n, image)| {
            let store = env.path(&format!("store{n}"));
            env.bare()
                .args([
                    "--metrics-file",
                    &m,
                    "--store",
                    store.to_str().unwrap(),
                    "-q",
                    "backup",
                ])
                .arg(image)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let samples = parse(&metrics);
    for image in &images {
        assert_eq!(
            value(
                &samples,
                "ebsnap_last_run_exit_code",
                image.to_str().unwrap()
            ),
            Some(0.0)
        );
    }
}

#[test]
fn a_backup_that_cannot_record_itself_fails_after_its_report() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 1, 4);
    let metrics = env.path("no-such-dir/ebsnap.prom");
    let m = metrics.to_str().unwrap();
    let out = env
        .ebsnap(&[
            "--metrics-file",
            m,
            "--json",
            "-q",
            "backup",
            image.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("not recorded") && message.contains("no-such-dir"),
        "{message}"
    );
    // The backup itself was made, and its report is the one JSON object.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["snapshot_id"].is_string(), "{report}");
}

#[test]
fn a_forget_records_itself_and_the_count_its_source_s_backups_now_have() {
    let env = Env::new();
    let metrics = env.path("ebsnap.prom");
    let metrics_flag = ["--metrics-file", metrics.to_str().unwrap()];
    let image = env.path("disk.img");
    let source = image.to_str().unwrap();
    for seed in 1..=3 {
        env.dense_image("disk.img", 1, seed);
        let out = env
            .process(&[&metrics_flag[..], &["backup", source]].concat())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        value(&parse(&metrics), "ebsnap_snapshots", source),
        Some(3.0)
    );
    let forget = ["forget", "--keep-last", "1"];
    let out = env
        .process(&[&metrics_flag[..], &forget].concat())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = parse(&metrics);
    let job = format!("forget:{source}");
    assert_eq!(
        value(&samples, "ebsnap_last_run_exit_code", &job),
        Some(0.0)
    );
    assert_eq!(value(&samples, "ebsnap_snapshots", &job), Some(1.0));
    // The backup's own series now tell the count after retention.
    assert_eq!(value(&samples, "ebsnap_snapshots", source), Some(1.0));
    assert_eq!(labels(&samples, &job)["source"], source);
}

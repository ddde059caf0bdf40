//! `--limit-upload` and `--limit-download` on the command line: units, and a backup and
//! restore that go through the limit. (The rate itself is measured by the accounting's
//! tests, `store::bandwidth`, and by `benches/bandwidth.rs`, not timed here.)

mod common;

use common::{assert_same_content, Env};

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

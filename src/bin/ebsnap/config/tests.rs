use super::*;

fn error(text: &str) -> String {
    parse(Path::new("/etc/ebsnap/config.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn the_example_reads_in_file_order_with_jobs_over_defaults() {
    let text = r#"
[defaults]
store = "/srv/ebsnap"
metrics_file = "/var/lib/node_exporter/textfile/ebsnap.prom"
workers = 32

[jobs.zeta]
source = "/dev/vg0/data"
description = "db1 data disk"
tags = { host = "db1", tier = "gold" }
store = "ebs"
keep = { last = 3, daily = 7, weekly = 4, monthly = 12, within = "30d", tags = ["keep=yes"] }
limit_upload = "50MiB"

[jobs.alpha]
source = "disk.img"
"#;
    let config = parse(Path::new("/etc/ebsnap/config.toml"), text).unwrap();
    let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    let zeta = &config.jobs[0];
    assert_eq!(
        zeta.settings.store,
        Some(StoreLocation::Ebs { region: None })
    );
    assert_eq!(zeta.settings.limit_upload.map(|b| b.0), Some(50 << 20));
    assert_eq!(zeta.keep().unwrap().daily, Some(7));
    assert_eq!(zeta.keys.tags.as_ref().unwrap()["tier"], "gold");
    assert_eq!(config.defaults.workers, Some(32));
    // Relative paths are the config file's neighbours.
    assert_eq!(config.jobs[1].source, Path::new("/etc/ebsnap/disk.img"));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let message = error("[jobs.db]\nsource = \"/dev/sdb\"\nsourec = \"x\"\n");
    assert!(message.contains("/etc/ebsnap/config.toml:3:"), "{message}");
    assert!(message.contains("jobs.db.sourec"), "{message}");
    let message = error("[defaults]\nstroe = \"x\"\n");
    assert!(message.contains(":2: defaults.stroe:"), "{message}");
}

#[test]
fn a_bad_type_or_value_is_named_with_its_line() {
    let message = error("[defaults]\n\nworkers = \"many\"\n");
    assert!(message.contains(":3: defaults.workers:"), "{message}");
    let message =
        error("[jobs.db]\nsource = \"/dev/sdb\"\nkeep = { daily = 7, within = \"soon\" }\n");
    assert!(message.contains(":3: jobs.db.keep.within:"), "{message}");
    let message = error("[defaults]\nstore = \"ebs:nowhere!\"\n");
    assert!(message.contains(":2: defaults.store:"), "{message}");
}

#[test]
fn a_job_without_a_source_or_with_an_empty_policy_is_refused() {
    let message = error("[jobs.a]\nsource = \"/dev/sda\"\n\n[jobs.b]\ndescription = \"x\"\n");
    assert!(message.contains(":4: jobs.b.source:"), "{message}");
    let message = error("[jobs.a]\nsource = \"/dev/sda\"\nkeep = {}\n");
    assert!(message.contains("jobs.a.keep:"), "{message}");
}

#[test]
fn an_unknown_job_name_is_refused() {
    let config = parse(Path::new("/c.toml"), "[jobs.a]\nsource = \"/x\"\n").unwrap();
    let message = config.select(&["b".to_owned()]).unwrap_err().to_string();
    assert!(
        message.contains("/c.toml: no job named \"b\" (its jobs: a)"),
        "{message}"
    );
    assert_eq!(config.select(&[]).unwrap().len(), 1);
}

#[test]
fn the_packaged_example_reads() {
    let text = include_str!("../../../../contrib/config.toml");
    let config = parse(Path::new("/etc/ebsnap/config.toml"), text).unwrap();
    assert!(!config.jobs.is_empty());
}

#[test]
fn a_job_s_consistency_keys_become_the_backup_s() {
    let text = "[jobs.db]\nsource = \"/dev/sdb\"\npre = \"lvcreate\"\npost = \"lvremove\"\n\
                hook_timeout = \"5m\"\nread_from = \"snap\"\nfreeze = [\"/srv\"]\n\
                freeze_timeout = 90\nspool_max = \"1G\"\n";
    let config = parse(Path::new("/etc/ebsnap/config.toml"), text).unwrap();
    let c = config.jobs[0].live.consistency("db", "ebs".into());
    assert_eq!(c.pre_hook.as_deref(), Some("lvcreate"));
    assert_eq!(c.post_hook.as_deref(), Some("lvremove"));
    assert_eq!(c.hook_timeout, std::time::Duration::from_secs(300));
    assert_eq!(c.read_from.as_deref(), Some(Path::new("/etc/ebsnap/snap")));
    assert_eq!(c.freeze, [PathBuf::from("/srv")]);
    assert_eq!(c.freeze_timeout, std::time::Duration::from_secs(90));
    assert_eq!(c.spool_max, 1 << 30);
    assert_eq!(c.job.as_deref(), Some("db"));
    let message = error("[jobs.db]\nsource = \"/dev/sdb\"\nhook_timeout = \"soon\"\n");
    assert!(message.contains(":3: jobs.db.hook_timeout:"), "{message}");
}

#[test]
fn a_config_that_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[jobs.a]\nsource = \"/dev/null\"\n").unwrap();
    for mode in [0o666, 0o664, 0o646] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("writable by its group or by others"),
            "{error}"
        );
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(load(Some(&path)).unwrap().unwrap().jobs.len(), 1);
    // Another user's file: refused, unless that user is root.
    assert!(untrusted(1000, 0o644, 0).is_some());
    assert!(untrusted(0, 0o600, 1000).is_none());
    assert!(untrusted(1000, 0o600, 1000).is_none());
}

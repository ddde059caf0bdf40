//! Everything ebsnap creates is private whatever the umask (files 0600, directories
//! 0700), a restore never writes through a link planted at its partial file, and a
//! restored file keeps the mode of the one it replaces. Run under umask 022, as most
//! hosts are.

mod common;

use common::{assert_same_content, Env};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn umask_022() {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o022) };
}

/// Every path under `dir` (itself included), with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut all = vec![(
        dir.to_owned(),
        std::fs::symlink_metadata(dir).unwrap().mode(),
    )];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            all.extend(modes(&path));
        } else {
            all.push((
                path.clone(),
                std::fs::symlink_metadata(&path).unwrap().mode(),
            ));
        }
    }
    all
}

fn assert_private(dir: &Path) {
    let all = modes(dir);
    assert!(
        all.len() > 3,
        "{} holds what the commands made",
        dir.display()
    );
    for (path, mode) in all {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode & 0o777,
            expected,
            "{} is {:o}",
            path.display(),
            mode & 0o777
        );
    }
}

#[test]
fn store_state_and_restored_files_are_private_under_umask_022() {
    umask_022();
    let env = Env::new();
    let image = env.dense_image("secret.img", 3, 1);
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o600)).unwrap();
    let first = env.backup(&image);
    std::fs::write(&image, vec![7u8; 3 * common::BLOCK as usize]).unwrap();
    env.backup(&image); // an incremental: manifests, journals and maps again
    let restored = env.path("restored.img");
    env.restore(first["snapshot_id"].as_str().unwrap(), &restored);
    env.json(&["verify", first["snapshot_id"].as_str().unwrap()]);
    assert_private(&env.store());
    assert_private(&env.path("xdg-state"));
    let mode = std::fs::metadata(&restored).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new restored file is 0600, not {mode:o}");
}

#[test]
fn a_file_replaced_under_force_keeps_its_mode() {
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 2);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = env.path("existing.img");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    env.json(&["restore", &id, target.to_str().unwrap(), "--force"]);
    assert_same_content(&image, &target);
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o640);
}

#[test]
fn a_link_planted_at_the_partial_file_is_not_followed() {
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 3);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = env.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let target = env.path("restored.img");
    let partial = env.path("restored.img.ebsnap-partial");
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    env.json(&["restore", &id, target.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the victim is untouched"
    );
    assert_same_content(&image, &target);
    assert!(
        std::fs::symlink_metadata(&partial).is_err(),
        "no partial file is left"
    );
}

#[test]
fn a_planted_partial_file_of_the_right_size_is_not_resumed_into() {
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 4);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = env.path("restored.img");
    // Someone who can write to the directory leaves a readable file there, of the
    // restore's size: the restore must not fill it (and rename it into place) for them.
    let partial = env.path("restored.img.ebsnap-partial");
    std::fs::write(&partial, vec![0u8; 2 * common::BLOCK as usize]).unwrap();
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644)).unwrap();
    let planted = std::fs::File::open(&partial).unwrap();
    env.json(&["restore", &id, target.to_str().unwrap()]);
    assert_same_content(&image, &target);
    let mut seen = Vec::new();
    std::io::Read::read_to_end(&mut &planted, &mut seen).unwrap();
    assert!(
        seen.iter().all(|&b| b == 0),
        "the restore wrote into the planted file"
    );
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn check_names_a_store_that_others_can_read() {
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 1, 5);
    env.backup(&image);
    let clean = env.json(&["check"]);
    assert_eq!(clean["readable_by_others"], serde_json::json!([]));
    std::fs::set_permissions(env.store(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.ebsnap(&["check", "--json"]).output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = report["readable_by_others"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].as_str().unwrap().contains("mode 755"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can be read by other users"), "{stderr}");
    // The next writer makes it private again.
    env.backup(&image);
    assert_eq!(
        env.json(&["check"])["readable_by_others"],
        serde_json::json!([])
    );
}

/// Anyone allowed CreateTags can change `ebsnap:source-bytes`. A snapshot whose blocks
/// hold data past the size it records is inconsistent: restore and verify refuse it
/// (exit 3, naming the tag) instead of cutting the data short and saying OK.
#[test]
fn a_shrunken_source_bytes_tag_is_refused_not_obeyed() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 6, 6);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    set_source_bytes(&env, &id, &common::BLOCK.to_string());
    let target = env.path("restored.img");
    assert_refused_for_its_size(&env, &id, &target);
    assert!(!target.exists(), "no cut-short restore is left in place");
}

/// The uid that files planted by "another user" get in these tests (nobody).
const OTHER_UID: u32 = 65534;

fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: needs root, to plant files owned by another user");
    }
    root
}

#[test]
fn a_link_at_the_target_that_another_user_owns_is_not_followed() {
    if !running_as_root() {
        return;
    }
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 7);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = env.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let target = env.path("planted.img");
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    std::os::unix::fs::lchown(&target, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let out = env
        .ebsnap(&["restore", &id, target.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_replaced_file_of_another_user_lends_the_restore_no_mode() {
    if !running_as_root() {
        return;
    }
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 2, 8);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = env.path("out.img");
    std::fs::write(&target, b"planted").unwrap();
    std::os::unix::fs::chown(&target, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o4755)).unwrap();
    env.json(&["restore", &id, target.to_str().unwrap(), "--force"]);
    assert_same_content(&image, &target);
    let mode = std::fs::metadata(&target).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600, "not the planted file's {mode:o}");
}

#[test]
fn a_store_directory_that_others_own_or_may_write_is_refused() {
    if !running_as_root() {
        return;
    }
    umask_022();
    let env = Env::new();
    let image = env.dense_image("disk.img", 1, 9);
    std::fs::create_dir(env.store()).unwrap();
    std::os::unix::fs::chown(env.store(), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    std::fs::set_permissions(env.store(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env
        .ebsnap(&["backup", image.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a private directory"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(env.store()).unwrap().count(),
        0,
        "nothing written there"
    );
}

#[test]
fn a_source_bytes_tag_past_the_volume_is_refused() {
    let env = Env::new();
    let image = env.dense_image("disk.img", 6, 10);
    let id = env.backup(&image)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    set_source_bytes(&env, &id, "5000000000000");
    let target = env.path("restored.img");
    assert_refused_for_its_size(&env, &id, &target);
    assert!(!target.exists());
}

/// Sets the snapshot's `ebsnap:source-bytes` tag, as anyone allowed CreateTags can.
fn set_source_bytes(env: &Env, id: &str, value: &str) {
    use ebsnap::store::local::{Access, LockWait};
    use ebsnap::store::{LocalStore, SnapshotId, SnapshotStore, Tag};
    let store = LocalStore::open(&env.store(), Access::Write, LockWait::Fail).unwrap();
    let tag = Tag {
        key: "ebsnap:source-bytes".into(),
        value: value.into(),
    };
    let snapshot: SnapshotId = id.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.create_tags(&snapshot, &[tag])).unwrap();
}

/// Restore (to `target`) and verify both refuse the snapshot with exit 3, naming the tag.
fn assert_refused_for_its_size(env: &Env, id: &str, target: &Path) {
    for args in [
        vec!["restore", id, target.to_str().unwrap()],
        vec!["verify", id],
    ] {
        let out = env.ebsnap(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains("ebsnap:source-bytes"), "{stderr}");
    }
}

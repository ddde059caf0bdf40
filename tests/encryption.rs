//! Encrypted snapshots in the local store, through the binary: blocks at rest hold no
//! plaintext, the key file is made private, reading needs the key (and says so when
//! it is missing or wrong), damage is a checksum failure, and dedup never crosses keys.
//! Run under umask 022, as most hosts have it.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Written into the image at an odd offset: a plaintext copy anywhere is found.
const PATTERN: &[u8] = b"EBSNAP-CRYPT-TEST-PATTERN: this line must never be stored in clear.";
const BLOCKS: u64 = 8;

fn umask_022() {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o022) };
}

/// A dense random image with the pattern in it.
fn image(env: &Env, name: &str) -> PathBuf {
    let image = env.dense_image(name, BLOCKS, 0xC0FFEE);
    let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
    f.write_all_at(PATTERN, 3 * BLOCK + 1001).unwrap();
    image
}

fn default_key_file(env: &Env) -> PathBuf {
    env.path("xdg-state/ebsnap/keys.toml")
}

fn backup(env: &Env, image: &Path, extra: &[&str]) -> String {
    let mut args = vec!["backup", image.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.json(&args)["snapshot_id"].as_str().unwrap().to_owned()
}

/// Every file under the store, with its bytes.
fn store_files(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![env.store()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(dir).unwrap().flatten() {
            match e.file_type().unwrap().is_dir() {
                true => dirs.push(e.path()),
                false => out.push((e.path(), fs::read(e.path()).unwrap())),
            }
        }
    }
    out
}

/// Whether any store file holds the pattern, or any 4 KiB window of the image at a
/// 4 KiB offset (where a plain slot would hold it).
fn store_holds_plaintext(env: &Env, image: &Path) -> bool {
    let data = fs::read(image).unwrap();
    let windows: HashSet<&[u8]> = data.chunks(4096).collect();
    store_files(env).iter().any(|(_, bytes)| {
        bytes.windows(PATTERN.len()).any(|w| w == PATTERN)
            || bytes.chunks(4096).any(|c| windows.contains(c))
    })
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn failed_restore(env: &Env, id: &str, extra: &[&str]) -> (Option<i32>, String, PathBuf) {
    let target = env.path("target-refused");
    let mut args = vec!["restore", id, target.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.ebsnap(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, target)
}

/// Nothing in the test directory is named after the target.
fn nothing_at(env: &Env, target: &Path) {
    let name = target.file_name().unwrap().to_str().unwrap();
    let left: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(name))
        .collect();
    assert!(left.is_empty(), "left at the target: {left:?}");
}

#[test]
fn an_encrypted_backup_stores_no_plaintext_and_reads_back_only_with_its_key() {
    umask_022();
    let env = Env::new();
    let image = image(&env, "image");
    let id = backup(&env, &image, &["--encrypted"]);
    let key_file = default_key_file(&env);
    assert_eq!(mode(&key_file), 0o600, "the key file is private");
    assert_eq!(mode(key_file.parent().unwrap()), 0o700);
    assert!(
        !store_holds_plaintext(&env, &image),
        "a pack holds plaintext"
    );
    let meta = fs::read_to_string(env.store().join(format!("snapshots/{id}.json"))).unwrap();
    assert!(
        meta.contains("\"key_id\""),
        "the snapshot names its key: {meta}"
    );
    assert!(!meta.contains(
        fs::read_to_string(&key_file)
            .unwrap()
            .split('"')
            .nth(3)
            .unwrap()
    ));

    let restored = env.path("restored");
    env.restore(&id, &restored);
    assert_same_content(&image, &restored);
    assert_eq!(env.json(&["verify", &id])["ok"], true);

    let missing = env.path("no-such-keys.toml");
    let (code, err, target) = failed_restore(&env, &id, &["--key-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&id) && err.contains("does not exist") && err.contains("--key-file"),
        "names the snapshot, the missing file, the flag: {err}"
    );
    nothing_at(&env, &target);

    // Another key file: made by an encrypted backup into another store.
    let other = env.path("other-keys.toml");
    let other_store = env.path("other-store");
    env.bare()
        .args([
            "--store",
            other_store.to_str().unwrap(),
            "--key-file",
            other.to_str().unwrap(),
        ])
        .args(["backup", image.to_str().unwrap(), "--encrypted", "-q"])
        .status()
        .unwrap();
    assert!(other.exists());
    let (code, err, target) = failed_restore(&env, &id, &["--key-file", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the key in {} is not the one snapshot {id}",
            other.display()
        )),
        "says the key is the wrong one: {err}"
    );
    nothing_at(&env, &target);
}

/// Flips a byte of slot `slot`'s data in the store's one pack.
fn flip(env: &Env, slot: u64) {
    let packs: Vec<_> = fs::read_dir(env.store().join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert_eq!(packs.len(), 1);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&packs[0])
        .unwrap();
    let mut byte = [0u8; 1];
    let at = slot * BLOCK + 4321;
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
}

#[test]
fn a_tampered_encrypted_block_fails_as_a_checksum_failure_naming_the_block() {
    umask_022();
    let env = Env::new();
    let image = image(&env, "image");
    let id = backup(&env, &image, &["--encrypted"]);
    flip(&env, 2);
    let out = env.ebsnap(&["verify", &id, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a checksum failure's exit code");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad = v["bad_blocks"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "exactly one block is damaged: {v}");
    let bad = bad[0].as_u64().unwrap();

    let target = env.path("target");
    let out = env
        .ebsnap(&["restore", &id, target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&id)
            && err.contains(&format!("block {bad}:"))
            && err.contains("does not match its checksum"),
        "names snapshot and block {bad}: {err}"
    );

    let out = env
        .ebsnap(&["check", "--read-data", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["damaged"][0]["block"].as_u64(), Some(bad), "{c}");
    assert!(c["damaged"][0]["problem"]
        .as_str()
        .unwrap()
        .contains("authentication tag"));

    // Without the key, check still checks the structure, and says what it left.
    let missing = env.path("none.toml");
    let out = env
        .ebsnap(&[
            "check",
            "--read-data",
            "--key-file",
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("data not read: {id}")), "{text}");
}

/// Slots holding data in the store's pack indexes.
fn stored_slots(env: &Env) -> usize {
    let mut n = 0;
    for (path, raw) in store_files(env) {
        if path.extension().is_some_and(|e| e == "idx") {
            n += raw[16..]
                .chunks(32)
                .filter(|d| d.iter().any(|&b| b != 0))
                .count();
        }
    }
    n
}

#[test]
fn the_same_image_under_two_keys_and_in_plain_is_stored_three_times() {
    umask_022();
    let env = Env::new();
    let image = image(&env, "image");
    let k2 = env.path("k2.toml");
    backup(&env, &image, &["--encrypted", "--full"]);
    assert_eq!(stored_slots(&env), BLOCKS as usize);
    backup(&env, &image, &["--encrypted", "--full"]);
    assert_eq!(stored_slots(&env), BLOCKS as usize, "one key: deduplicated");
    backup(
        &env,
        &image,
        &["--encrypted", "--full", "--key-file", k2.to_str().unwrap()],
    );
    assert_eq!(
        stored_slots(&env),
        2 * BLOCKS as usize,
        "another key: stored again"
    );
    let plain = backup(&env, &image, &["--full"]);
    assert_eq!(
        stored_slots(&env),
        3 * BLOCKS as usize,
        "plain: stored again"
    );
    // Every copy reads back, the plain one with no key at all.
    let restored = env.path("restored");
    let none = env.path("none.toml");
    env.ebsnap(&["restore", &plain, restored.to_str().unwrap(), "--key-file"])
        .arg(&none)
        .assert()
        .success();
    assert_same_content(&image, &restored);
}

#[test]
fn a_key_file_from_the_config_is_relative_to_it_and_kms_key_arn_selects_a_named_key() {
    umask_022();
    let env = Env::new();
    let image = image(&env, "image");
    let conf_dir = env.path("conf");
    fs::create_dir(&conf_dir).unwrap();
    let secret = |b: u8| base64_of(&[b; 32]);
    let keys = format!(
        "[[key]]\nname = \"first\"\nsecret = \"{}\"\n[[key]]\nname = \"second\"\nsecret = \"{}\"\n",
        secret(1),
        secret(2)
    );
    fs::write(conf_dir.join("keys.toml"), keys).unwrap();
    fs::set_permissions(
        conf_dir.join("keys.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let config = conf_dir.join("config.toml");
    fs::write(&config, "[defaults]\nkey_file = \"keys.toml\"\n").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let conf = config.to_str().unwrap();
    let arn = "arn:aws:kms:us-east-1:111122223333:key/second";
    let id = backup(&env, &image, &["--config", conf, "--kms-key-id", arn]);
    let meta = fs::read_to_string(env.store().join(format!("snapshots/{id}.json"))).unwrap();
    assert!(meta.contains("\"key_name\": \"second\""), "{meta}");
    assert!(
        !default_key_file(&env).exists(),
        "the config's key file was used"
    );
    let restored = env.path("restored");
    env.json(&["--config", conf, "restore", &id, restored.to_str().unwrap()]);
    assert_same_content(&image, &restored);
    let out = env
        .ebsnap(&[
            "--config",
            conf,
            "backup",
            image.to_str().unwrap(),
            "--full",
        ])
        .args([
            "--kms-key-id",
            "arn:aws:kms:us-east-1:111122223333:key/third",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("names no key") && err.contains("INVALID_CUSTOMER_KEY"),
        "{err}"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `key_id` recorded in a local store's metadata of snapshot `id`.
fn recorded_key_id(store: &Path, id: &str) -> String {
    let meta = fs::read(store.join(format!("snapshots/{id}.json"))).unwrap();
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    meta["key_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_key_file_made_by_another_process_after_opening_is_used_not_an_error() {
    // A long-running `serve` opened its store before the key file existed; then a
    // backup into another store, sharing the default key file, made it. The server's
    // first encrypted start used to fail (500, "File exists") until it was restarted.
    use ebsnap::store::local::{Access, LockWait};
    use ebsnap::store::{LocalStore, SnapshotStore, StartSnapshot};
    umask_022();
    let env = Env::new();
    let key_file = default_key_file(&env);
    let open = |name: &str| {
        let store = LocalStore::open(&env.path(name), Access::Write, LockWait::Fail).unwrap();
        store.set_key_file(&key_file).unwrap();
        store
    };
    let (served, other) = (open("served"), open("other"));
    let encrypted = StartSnapshot {
        encrypted: true,
        ..StartSnapshot::new(1)
    };
    let first = other.start_snapshot(encrypted.clone()).await.unwrap();
    assert!(key_file.exists());
    let second = served
        .start_snapshot(encrypted)
        .await
        .expect("the key file another process made is used");
    assert_eq!(
        recorded_key_id(&env.path("served"), second.id.as_str()),
        recorded_key_id(&env.path("other"), first.id.as_str()),
        "one key file, one key"
    );
    assert_eq!(mode(&key_file), 0o600);
}

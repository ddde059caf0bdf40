use super::*;

const GOOD: &str = r#"
[[key]]
access_key_id = "AKIAHOSTDB1EXAMPLE01"
secret_access_key = "s3cret-db1"
role = "backup"
owner = "111122223333"

[[key]]
access_key_id = "AKIAREADER"
secret_access_key = "s3cret-reader"
role = "read"
owner = "444455556666"
"#;

fn parse(text: &str) -> Result<KeySet, String> {
    KeySet::parse(Path::new("/etc/ebsnap/keys.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn a_keys_file_is_read_with_roles_and_owners() {
    let set = parse(GOOD).unwrap();
    assert_eq!(set.len(), 2);
    let key = set.get("AKIAHOSTDB1EXAMPLE01").unwrap();
    assert_eq!(key.role, Role::Backup);
    assert_eq!(key.owner, "111122223333");
    assert_eq!(key.credentials.secret_access_key, "s3cret-db1");
    assert_eq!(set.get("AKIAREADER").unwrap().role, Role::Read);
}

#[test]
fn errors_name_the_file_the_line_and_the_key() {
    let bad_owner = GOOD.replace("\"444455556666\"", "\"4444\"");
    let e = parse(&bad_owner).unwrap_err();
    assert!(
        e.starts_with("keys file /etc/ebsnap/keys.toml:12: key[1].owner:"),
        "{e}"
    );
    let bad_role = GOOD.replace("\"read\"", "\"root\"");
    let e = parse(&bad_role).unwrap_err();
    assert!(e.contains(":11: key[1].role"), "{e}");
    let unknown = GOOD.replace("role = \"read\"", "role = \"read\"\nrol = \"admin\"");
    let e = parse(&unknown).unwrap_err();
    assert!(e.contains("key[1]") && e.contains("rol"), "{e}");
    let twice = GOOD.replace("AKIAREADER", "AKIAHOSTDB1EXAMPLE01");
    let e = parse(&twice).unwrap_err();
    assert!(
        e.contains("key[1].access_key_id") && e.contains("twice"),
        "{e}"
    );
    let empty = GOOD.replace("\"s3cret-reader\"", "\"\"");
    assert!(parse(&empty)
        .unwrap_err()
        .contains("key[1].secret_access_key"));
    let missing = GOOD.replace("owner = \"444455556666\"", "");
    assert!(parse(&missing).unwrap_err().contains("owner"));
    let syntax = parse("[[key]\n").unwrap_err();
    assert!(
        syntax.starts_with("keys file /etc/ebsnap/keys.toml:1:"),
        "{syntax}"
    );
}

#[test]
fn secrets_stay_out_of_errors_and_debug() {
    let set = parse(GOOD).unwrap();
    let shown = format!("{set:?}");
    assert!(shown.contains("AKIAREADER"));
    assert!(!shown.contains("s3cret"), "{shown}");
    // A secret on a line the parser cannot read is not quoted back.
    let e = parse(&GOOD.replace("\"s3cret-db1\"", "\"s3cret-db1")).unwrap_err();
    assert!(!e.contains("s3cret"), "{e}");
    let e = parse(&GOOD.replace("\"s3cret-db1\"", "s3cret-db1")).unwrap_err();
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn only_a_private_file_of_this_user_or_root_is_trusted() {
    assert_eq!(exposed(1000, 0o100600, 1000), None);
    assert_eq!(exposed(0, 0o100400, 1000), None);
    assert!(exposed(1000, 0o100644, 1000).unwrap().contains("644"));
    assert!(exposed(1000, 0o100640, 1000).is_some());
    assert!(exposed(1000, 0o100602, 1000).is_some());
    assert!(exposed(1001, 0o100600, 1000).unwrap().contains("uid 1001"));
}

#[test]
fn the_environment_key_joins_the_file_and_may_not_clash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, GOOD).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let admin = Key::admin(Credentials {
        access_key_id: "AKIDENV".into(),
        secret_access_key: "env-secret".into(),
    });
    let keys = Keys::load(Some(path.clone()), Some(admin)).unwrap();
    assert_eq!(keys.current().len(), 3);
    assert_eq!(keys.current().get("AKIDENV").unwrap().owner, OWNER_ID);
    let clash = Key::admin(Credentials {
        access_key_id: "AKIAREADER".into(),
        secret_access_key: "x".into(),
    });
    let e = Keys::load(Some(path.clone()), Some(clash)).unwrap_err();
    assert!(e.to_string().contains("EBSNAP_ACCESS_KEY_ID"), "{e}");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let e = keys.reload().unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("644"),
        "{e}"
    );
    assert_eq!(keys.current().len(), 3, "a failed reload keeps the keys");
}

/// The keys_file fuzz target's seeds (fuzz/corpus/keys_file/seed-*), and every prefix
/// of each, through the target's entry point: a cheap replay in the ordinary test run
/// of what the fuzzer starts from (the entry point asserts that no key's Debug shows
/// its secret, and that errors name the file).
#[test]
fn the_fuzz_seeds_and_their_prefixes_parse_or_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/keys_file");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seed-")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let _ = crate::server::fuzzing::keys_file(&text[..end]);
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "the seeds are in {}", dir.display());
    assert_eq!(
        crate::server::fuzzing::keys_file(
            &std::fs::read_to_string(dir.join("seed-roles")).unwrap()
        ),
        Ok(3)
    );
}

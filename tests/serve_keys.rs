//! `ebsnap serve --keys FILE`: per-client keys with roles and owners, reloaded on
//! SIGHUP. The real binary serves; ebsnap itself (`--store ebs`) and boto3 (the
//! project's .venv, made by scripts/test) are its clients.

mod common;

use common::server::{ServeProcess, KEY_ID as ADMIN_ID, SECRET as ADMIN_SECRET};
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A client key: id, secret, role, owner.
struct Keyed(&'static str, &'static str, &'static str, &'static str);

const A_BACKUP: Keyed = Keyed(
    "AKIAOWNERABACKUP0001",
    "a-backup-secret-7f3kq9",
    "backup",
    "111122223333",
);
const A_READ: Keyed = Keyed(
    "AKIAOWNERAREAD000001",
    "a-read-secret-9q2mz4",
    "read",
    "111122223333",
);
const B_BACKUP: Keyed = Keyed(
    "AKIAOWNERBBACKUP0001",
    "b-backup-secret-4z8wx1",
    "backup",
    "444455556666",
);
const B_ADMIN: Keyed = Keyed(
    "AKIAOWNERBADMIN00001",
    "b-admin-secret-2p6yv3",
    "admin",
    "444455556666",
);
const ADMIN: Keyed = Keyed(ADMIN_ID, ADMIN_SECRET, "admin", "000000000000");
const SECRETS: [&str; 5] = [A_BACKUP.1, A_READ.1, B_BACKUP.1, B_ADMIN.1, ADMIN_SECRET];

fn keys_toml(keys: &[&Keyed]) -> String {
    keys.iter()
        .map(|Keyed(id, secret, role, owner)| {
            format!("[[key]]\naccess_key_id = \"{id}\"\nsecret_access_key = \"{secret}\"\nrole = \"{role}\"\nowner = \"{owner}\"\n\n")
        })
        .collect()
}

fn write_private(path: &Path, text: &str) {
    // Written aside and renamed, as an operator's editor would: a reload never reads
    // half a file.
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A server on a fresh store with the environment's admin key and `keys` in its file.
struct Setup {
    env: Env,
    serve: ServeProcess,
    keys_file: PathBuf,
}

impl Setup {
    fn start(keys: &[&Keyed]) -> Setup {
        let env = Env::new();
        let keys_file = env.path("keys.toml");
        write_private(&keys_file, &keys_toml(keys));
        let extra = ["--keys", keys_file.to_str().unwrap()];
        let serve = ServeProcess::start(
            &env.path("served"),
            env.dir.path(),
            &env.path("xdg"),
            &extra,
        );
        Setup {
            env,
            serve,
            keys_file,
        }
    }

    /// `ebsnap --store ebs --endpoint-url URL ARGS --json -q`, signed with `key`.
    fn ebsnap(&self, key: &Keyed, args: &[&str]) -> Output {
        let mut command = self.env.bare();
        command
            .args([
                "--store",
                "ebs",
                "--endpoint-url",
                &self.serve.url,
                "--region",
                "us-east-1",
            ])
            .args(["--json", "-q"])
            .args(args);
        self.env.aws_client(&mut command, (key.0, key.1));
        command.output().unwrap()
    }

    fn backup(&self, key: &Keyed, image: &Path) -> String {
        let out = ok_json(self.ebsnap(key, &["backup", image.to_str().unwrap()]));
        out["snapshot_id"].as_str().unwrap().to_owned()
    }

    /// One boto3 call signed with `key`: {"ok": ...} or {"error": CODE, "status": N}.
    fn boto3(&self, key: &Keyed, service: &str, operation: &str, params: Value) -> Value {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = venv_python();
        let out = Command::new(python)
            .arg(root.join("tests/python/keys_client.py"))
            .args([
                &self.serve.url,
                key.0,
                key.1,
                service,
                operation,
                &params.to_string(),
            ])
            .output()
            .unwrap();
        ok_json(out)
    }

    /// The ids of the snapshots `key` is shown by DescribeSnapshots, with their owners.
    fn described(&self, key: &Keyed) -> Vec<(String, String)> {
        let out = self.boto3(key, "ec2", "describe_snapshots", json!({}));
        let snapshots = out["ok"]["Snapshots"]
            .as_array()
            .unwrap_or_else(|| panic!("{out}"));
        for s in snapshots {
            let tags = s["Tags"].to_string();
            assert!(
                !tags.contains("ebsnap-serve:"),
                "the owner tag is hidden: {tags}"
            );
        }
        snapshots
            .iter()
            .map(|s| {
                (
                    s["SnapshotId"].as_str().unwrap().to_owned(),
                    s["OwnerId"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn hang_up(&self) {
        // SAFETY: kill only sends a signal, to the server this test started.
        assert_eq!(
            unsafe { libc::kill(self.serve.pid() as i32, libc::SIGHUP) },
            0
        );
    }

    /// The server's stderr, which must never hold a secret.
    fn stderr(&self) -> String {
        let log = self.serve.stderr();
        for secret in SECRETS {
            assert!(!log.contains(secret), "a secret in serve's stderr:\n{log}");
        }
        log
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_error(out: &Value, code: &str, status: u64) {
    assert_eq!(out["error"], code, "{out}");
    assert_eq!(out["status"], status, "{out}");
}

#[test]
fn a_backup_key_backs_up_and_restores_but_cannot_delete_or_untag() {
    let s = Setup::start(&[&A_BACKUP]);
    let image = s.env.dense_image("image", 4, 1);
    let first = s.backup(&A_BACKUP, &image);
    make_image(&s.env.path("image2"), 4 * BLOCK, &[(0, BLOCK as usize)], 2);
    std::fs::copy(s.env.path("image2"), &image).unwrap();
    let second = s.backup(&A_BACKUP, &image);
    let restored = s.env.path("restored");
    ok_json(s.ebsnap(&A_BACKUP, &["restore", &second, restored.to_str().unwrap()]));
    assert_same_content(&image, &restored);

    let out = s.ebsnap(&A_BACKUP, &["forget", "--keep-last", "1"]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(
        e.contains("DeleteSnapshot")
            && e.contains("access denied")
            && e.contains("UnauthorizedOperation"),
        "{e}"
    );
    // Refused once: an error that retrying cannot help is not retried.
    let refusals = s.stderr().matches("refused ec2:DeleteSnapshot").count();
    assert_eq!(refusals, 1, "{}", s.stderr());
    let out = s.ebsnap(&A_BACKUP, &["delete", &first]);
    assert!(!out.status.success() && stderr_of(&out).contains("UnauthorizedOperation"));
    let deleted = s.boto3(
        &A_BACKUP,
        "ec2",
        "delete_snapshot",
        json!({"SnapshotId": first}),
    );
    assert_error(&deleted, "UnauthorizedOperation", 403);

    let untag = json!({"Resources": [first], "Tags": [{"Key": "ebsnap:managed"}]});
    assert_error(
        &s.boto3(&A_BACKUP, "ec2", "delete_tags", untag),
        "UnauthorizedOperation",
        403,
    );
    let retag =
        json!({"Resources": [first], "Tags": [{"Key": "ebsnap:source", "Value": "/elsewhere"}]});
    assert_error(
        &s.boto3(&A_BACKUP, "ec2", "create_tags", retag),
        "UnauthorizedOperation",
        403,
    );
    let owner = json!({"Resources": [first], "Tags": [{"Key": "ebsnap-serve:owner", "Value": "444455556666"}]});
    assert_error(
        &s.boto3(&A_BACKUP, "ec2", "create_tags", owner.clone()),
        "InvalidParameterValue",
        400,
    );
    assert_error(
        &s.boto3(&ADMIN, "ec2", "create_tags", owner),
        "InvalidParameterValue",
        400,
    );
    let add = json!({"Resources": [first], "Tags": [{"Key": "team", "Value": "db"}]});
    assert!(s.boto3(&A_BACKUP, "ec2", "create_tags", add)["ok"].is_object());

    // Nothing was removed: both snapshots, each with its ebsnap tags, and the new tag.
    let shown = ok_json(s.ebsnap(&A_BACKUP, &["snapshots"]));
    let snaps = shown["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{shown}");
    let source = image.canonicalize().unwrap();
    for snap in snaps {
        assert_eq!(
            snap["tags"]["ebsnap:source"].as_str(),
            source.to_str(),
            "{snap}"
        );
    }
    let tagged = s.boto3(
        &ADMIN,
        "ec2",
        "describe_snapshots",
        json!({"SnapshotIds": [first]}),
    );
    let tags = tagged["ok"]["Snapshots"][0]["Tags"].to_string();
    assert!(
        tags.contains("ebsnap:managed") && tags.contains("\"db\""),
        "{tags}"
    );
    s.stderr();
}

#[test]
fn a_read_key_restores_but_cannot_start_a_snapshot() {
    let s = Setup::start(&[&A_BACKUP, &A_READ]);
    let image = s.env.dense_image("image", 3, 3);
    let id = s.backup(&A_BACKUP, &image);
    let restored = s.env.path("restored");
    ok_json(s.ebsnap(&A_READ, &["restore", &id, restored.to_str().unwrap()]));
    assert_same_content(&image, &restored);
    assert_eq!(ok_json(s.ebsnap(&A_READ, &["verify", &id]))["ok"], true);

    let out = s.ebsnap(&A_READ, &["backup", image.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(
        e.contains("StartSnapshot") && e.contains("AccessDeniedException"),
        "{e}"
    );
    let start = s.boto3(&A_READ, "ebs", "start_snapshot", json!({"VolumeSize": 1}));
    assert_error(&start, "AccessDeniedException", 403);
    let tag = json!({"Resources": [id], "Tags": [{"Key": "k", "Value": "v"}]});
    assert_error(
        &s.boto3(&A_READ, "ec2", "create_tags", tag),
        "UnauthorizedOperation",
        403,
    );
    assert_eq!(
        s.described(&ADMIN).len(),
        1,
        "the refused calls made nothing"
    );
    s.stderr();
}

#[test]
fn an_owner_sees_only_its_snapshots_and_an_admin_sees_all() {
    let s = Setup::start(&[&A_BACKUP, &B_BACKUP, &B_ADMIN]);
    let image = s.env.dense_image("image", 2, 4);
    let a = s.backup(&A_BACKUP, &image);
    let by_env = s.backup(&ADMIN, &image);

    let out = s.ebsnap(&B_BACKUP, &["show", &a]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("not found"),
        "{}",
        stderr_of(&out)
    );
    let out = s.ebsnap(
        &B_BACKUP,
        &["restore", &a, s.env.path("r").to_str().unwrap()],
    );
    assert!(!out.status.success() && stderr_of(&out).contains("not found"));
    let by_id = s.boto3(
        &B_BACKUP,
        "ec2",
        "describe_snapshots",
        json!({"SnapshotIds": [a]}),
    );
    assert_error(&by_id, "InvalidSnapshot.NotFound", 400);
    let blocks = s.boto3(
        &B_BACKUP,
        "ebs",
        "list_snapshot_blocks",
        json!({"SnapshotId": a}),
    );
    assert_error(&blocks, "ResourceNotFoundException", 404);
    let child = json!({"VolumeSize": 1, "ParentSnapshotId": a});
    assert_error(
        &s.boto3(&B_BACKUP, "ebs", "start_snapshot", child),
        "ResourceNotFoundException",
        404,
    );
    let tag = json!({"Resources": [a], "Tags": [{"Key": "k", "Value": "v"}]});
    assert_error(
        &s.boto3(&B_BACKUP, "ec2", "create_tags", tag),
        "InvalidSnapshot.NotFound",
        400,
    );
    assert!(
        s.described(&B_BACKUP).is_empty(),
        "none of A's, none of the environment's"
    );
    assert!(ok_json(s.ebsnap(&B_BACKUP, &["snapshots"]))["snapshots"]
        .as_array()
        .unwrap()
        .is_empty());

    let b = s.backup(&B_BACKUP, &image);
    assert_eq!(
        s.described(&B_BACKUP),
        vec![(b.clone(), "444455556666".to_owned())]
    );
    let mut all = s.described(&B_ADMIN);
    all.sort();
    let mut expected = vec![
        (a.clone(), "111122223333".to_owned()),
        (by_env, "000000000000".to_owned()),
        (b, "444455556666".to_owned()),
    ];
    expected.sort();
    assert_eq!(all, expected, "an admin of any owner sees every snapshot");
    let own = s.boto3(
        &A_BACKUP,
        "ec2",
        "describe_snapshots",
        json!({"OwnerIds": ["self"]}),
    );
    assert_eq!(own["ok"]["Snapshots"].as_array().unwrap().len(), 1, "{own}");
    s.stderr();
}

/// Polls the server's stderr for `text`.
fn wait_for_log(s: &Setup, text: &str) {
    wait_until(&format!("serve logs {text:?}"), || {
        s.serve.stderr().contains(text)
    });
}

#[test]
fn sighup_reloads_the_keys_and_an_invalid_file_keeps_them() {
    let s = Setup::start(&[&A_BACKUP]);
    assert!(s.ebsnap(&A_BACKUP, &["snapshots"]).status.success());
    let out = s.ebsnap(&B_BACKUP, &["snapshots"]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("AuthFailure"),
        "{}",
        stderr_of(&out)
    );

    write_private(&s.keys_file, &keys_toml(&[&B_BACKUP]));
    s.hang_up();
    wait_for_log(&s, "2 keys");
    assert!(s
        .stderr()
        .contains(&format!("reloaded {}: 2 keys", s.keys_file.display())));
    let out = s.ebsnap(&A_BACKUP, &["snapshots"]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("AuthFailure"),
        "revoked"
    );
    assert!(
        s.ebsnap(&B_BACKUP, &["snapshots"]).status.success(),
        "added"
    );
    assert!(
        s.ebsnap(&ADMIN, &["snapshots"]).status.success(),
        "the environment's key stays"
    );

    // A broken line holding a secret: not reloaded, and the secret is not quoted.
    let broken = keys_toml(&[&A_BACKUP]).replace(&format!("{}\"", A_BACKUP.1), A_BACKUP.1);
    write_private(&s.keys_file, &broken);
    s.hang_up();
    wait_for_log(&s, "not reloaded");
    std::fs::set_permissions(&s.keys_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.hang_up();
    wait_for_log(&s, "mode 644");
    let log = s.stderr();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("not reloaded")).collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(
        refusals
            .iter()
            .all(|l| l.contains(&s.keys_file.display().to_string())),
        "{log}"
    );
    assert!(
        s.ebsnap(&B_BACKUP, &["snapshots"]).status.success(),
        "the old keys stay"
    );
    assert!(!s.ebsnap(&A_BACKUP, &["snapshots"]).status.success());
}

/// `serve --keys FILE` with the environment's key, expected to refuse to start.
fn refused_start(env: &Env, keys_file: &Path) -> String {
    let out = env
        .bare()
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(env.path("served"))
        .arg("--keys")
        .arg(keys_file)
        .env("EBSNAP_ACCESS_KEY_ID", ADMIN_ID)
        .env("EBSNAP_SECRET_ACCESS_KEY", ADMIN_SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    let e = stderr_of(&out);
    assert!(
        e.contains(&format!("keys file {}", keys_file.display())),
        "{e}"
    );
    assert!(SECRETS.iter().all(|secret| !e.contains(secret)), "{e}");
    e
}

#[test]
fn a_keys_file_others_can_read_or_another_user_owns_is_refused() {
    let env = Env::new();
    let file = env.path("keys.toml");
    std::fs::write(&file, keys_toml(&[&A_BACKUP])).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(refused_start(&env, &file).contains("mode 644"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(refused_start(&env, &file).contains("mode 640"));
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        assert!(refused_start(&env, &file).contains("uid 4242"));
    } else {
        eprintln!("SKIPPED: a keys file of another user needs root to make");
    }
    write_private(
        &file,
        &keys_toml(&[&A_BACKUP]).replace("111122223333", "1234"),
    );
    let e = refused_start(&env, &file);
    assert!(e.contains(":5: key[0].owner"), "{e}");
}

#[test]
fn a_client_token_is_scoped_to_its_owner() {
    // EBS scopes idempotency tokens to the account: another owner who reuses a token
    // (guessed, or seen in a log) gets a snapshot of its own, neither a conflict that
    // names the first owner's snapshot nor that snapshot.
    let s = Setup::start(&[&A_BACKUP, &B_BACKUP]);
    let start = json!({"VolumeSize": 1, "ClientToken": "shared-token-1"});
    let a = s.boto3(&A_BACKUP, "ebs", "start_snapshot", start.clone());
    let a_id = a["ok"]["SnapshotId"]
        .as_str()
        .unwrap_or_else(|| panic!("{a}"));
    let again = s.boto3(&A_BACKUP, "ebs", "start_snapshot", start.clone());
    assert_eq!(
        again["ok"]["SnapshotId"], a_id,
        "the owner's retry replays: {again}"
    );

    let b = s.boto3(&B_BACKUP, "ebs", "start_snapshot", start);
    assert!(!b.to_string().contains(a_id), "A's id leaks to B: {b}");
    let b_id = b["ok"]["SnapshotId"]
        .as_str()
        .unwrap_or_else(|| panic!("{b}"));
    assert_ne!(b_id, a_id);
    assert_eq!(b["ok"]["OwnerId"], B_BACKUP.3, "{b}");
    let spaced = json!({"VolumeSize": 1, "ClientToken": "111122223333 shared-token-1"});
    let forged = s.boto3(&B_BACKUP, "ebs", "start_snapshot", spaced);
    assert!(
        !forged.to_string().contains(a_id),
        "A's id leaks to B: {forged}"
    );
    s.stderr();
}

/// Another owner's backup key tags snapshots of its own as backups of B's source: B's
/// admin's retention (which lists with `Owner=self`) judges B's backups only, so those
/// snapshots cannot push B's real ones out.
#[test]
fn an_admins_retention_judges_its_owners_backups_only() {
    let s = Setup::start(&[&A_BACKUP, &B_BACKUP, &B_ADMIN]);
    let image = s.env.dense_image("image", 2, 6);
    let real = [s.backup(&B_BACKUP, &image), s.backup(&B_BACKUP, &image)];
    // Same host, same path: A's snapshots carry B's `ebsnap:source`.
    s.backup(&A_BACKUP, &image);
    s.backup(&A_BACKUP, &image);
    let args = ["forget", "--keep-last", "2", "--dry-run"];
    let plan = ok_json(s.ebsnap(&B_ADMIN, &args));
    let ids = |key: &str| -> Vec<String> {
        let mut ids: Vec<String> = plan[key]
            .as_array()
            .unwrap_or_else(|| panic!("{plan}"))
            .iter()
            .map(|k| k["snapshot_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut expected = real.to_vec();
    expected.sort();
    assert_eq!(ids("kept"), expected, "{plan}");
    assert!(ids("removed").is_empty(), "{plan}");
}

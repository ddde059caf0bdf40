//! `--store LOCATION`, through the binary: a directory (`./ebs` is one), Amazon EBS
//! (`ebs`, `ebs:REGION`), and any EBS-compatible endpoint (`ebs+http://HOST:PORT`),
//! here a real `ebsnap serve`.

mod common;

use common::server::{ServeProcess, KEY_ID, SECRET};
use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// `ebsnap --store LOCATION ARGS --json -q` from `cwd`, isolated from the machine's AWS
/// setup and store variables.
fn ebsnap_at(env: &Env, cwd: &Path, location: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
    env.aws_client(&mut cmd, (KEY_ID, SECRET))
        .args(["--store", location, "--json", "-q"])
        .args(args)
        .current_dir(cwd)
        .env_remove("EBSNAP_STORE")
        .env("XDG_DATA_HOME", env.path("xdg-data"))
        .env("XDG_STATE_HOME", env.path("xdg-state"))
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_EBS")
        .env_remove("AWS_ENDPOINT_URL_EC2")
        .output()
        .unwrap()
}

#[test]
fn dot_slash_ebs_is_a_local_store_in_a_folder_named_ebs() {
    let env = Env::new();
    let image = env.dense_image("image", 3, 21);
    let img = image.to_str().unwrap();
    let backup = ok_json(ebsnap_at(&env, env.dir.path(), "./ebs", &["backup", img]));
    let id = backup["snapshot_id"].as_str().unwrap();
    assert!(
        env.path("ebs/ebsnap-store.json").exists(),
        "the store is the folder ./ebs"
    );
    let list = ok_json(ebsnap_at(&env, env.dir.path(), "./ebs", &["snapshots"]));
    assert_eq!(list["snapshots"][0]["snapshot_id"], id);
    let check = ok_json(ebsnap_at(&env, env.dir.path(), "./ebs", &["check"]));
    assert_eq!(check["ok"], true);
}

#[test]
fn malformed_ebs_forms_are_usage_errors() {
    let env = Env::new();
    for location in [
        "ebs:US EAST",
        "ebs:",
        "ebs+ftp://host",
        "ebs+127.0.0.1:9000",
    ] {
        let out = ebsnap_at(&env, env.dir.path(), location, &["snapshots"]);
        assert_eq!(out.status.code(), Some(2), "{location}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--store"),
            "{location}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        std::fs::read_dir(env.dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("ebs")),
        "no directory is made of a malformed location"
    );
}

#[test]
fn check_and_serve_refuse_a_store_that_is_not_local() {
    let env = Env::new();
    for location in ["ebs", "ebs:eu-west-1", "ebs+http://127.0.0.1:9"] {
        let out = ebsnap_at(&env, env.dir.path(), location, &["check"]);
        assert_eq!(out.status.code(), Some(2), "{location}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("check works on a local store"));
        let out = ebsnap_at(&env, env.dir.path(), location, &["serve", "--no-auth"]);
        assert_eq!(out.status.code(), Some(2), "{location}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("serve needs a local store"));
    }
}

#[test]
fn ebs_plus_http_reaches_an_ebsnap_serve() {
    let env = Env::new();
    let served = ServeProcess::start(&env.store(), env.dir.path(), &env.path("serve-xdg"), &[]);
    let location = format!("ebs+{}", served.url);
    let image = env.path("image");
    make_image(
        &image,
        9 * BLOCK + 7,
        &[(0, 2 * BLOCK as usize), (8 * BLOCK, 1000)],
        22,
    );
    let img = image.to_str().unwrap();
    let run = |args: &[&str]| ok_json(ebsnap_at(&env, env.dir.path(), &location, args));

    let b = run(&["backup", img]);
    let id = b["snapshot_id"].as_str().unwrap().to_owned();
    assert_eq!(b["blocks_written"], 3);
    assert_eq!(run(&["snapshots"])["snapshots"][0]["snapshot_id"], id);
    let restored = env.path("restored");
    run(&["restore", &id, restored.to_str().unwrap()]);
    assert_same_content(&image, &restored);
    assert_eq!(run(&["verify", &id, "--against", img])["ok"], true);
    assert_eq!(run(&["show", &id])["status"], "completed");
    // A verify with the debug log, under `proxy` (with 127.0.0.1 exempt) if given.
    let verify_logged = |proxy: Option<&str>| {
        let mut verify = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
        env.aws_client(&mut verify, (KEY_ID, SECRET))
            .args(["--store", &location, "verify", &id, "--json"])
            .env("EBSNAP_LOG", "ebsnap=debug");
        if let Some(proxy) = proxy {
            verify
                .env("https_proxy", proxy)
                .env("NO_PROXY", "127.0.0.1");
        }
        verify.output().unwrap()
    };
    // An endpoint that is not Amazon's has no default cap on block requests.
    let logged = verify_logged(None);
    let stderr = String::from_utf8_lossy(&logged.stderr);
    assert!(stderr.contains("no cap on block requests"), "{stderr}");
    // EBS requests go through ebsnap's own client (small read buffers), the block
    // calls without the SDK, unless a proxy is set: then all go through the SDK's
    // client, which follows it.
    assert!(stderr.contains("EBS requests: ebsnap's client"), "{stderr}");
    assert!(
        stderr.contains("block calls: signed and sent by ebsnap"),
        "{stderr}"
    );
    let logged = verify_logged(Some("http://127.0.0.1:9"));
    let stderr = String::from_utf8_lossy(&logged.stderr);
    assert!(logged.status.success(), "{stderr}");
    assert!(
        stderr.contains("EBS requests go through the SDK's client"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a proxy is set: block calls go through the SDK"),
        "{stderr}"
    );
    assert!(!stderr.contains("signed and sent by ebsnap"), "{stderr}");
    // The same endpoint through `--store ebs --endpoint-url` is the same store: the next
    // backup is incremental on top of the first.
    let second = ok_json(ebsnap_at(
        &env,
        env.dir.path(),
        "ebs",
        &["--endpoint-url", &served.url, "backup", img],
    ));
    assert_eq!(second["parent_snapshot_id"].as_str(), Some(id.as_str()));
    assert_eq!(second["blocks_written"], 0);
}

#[test]
fn a_location_and_a_flag_that_disagree_are_refused() {
    let env = Env::new();
    let cwd = env.dir.path();
    for (location, flag) in [
        ("ebs:eu-west-1", ["--region", "us-east-1"]),
        (
            "ebs+http://127.0.0.1:9",
            ["--endpoint-url", "http://127.0.0.1:8"],
        ),
    ] {
        let out = ebsnap_at(&env, cwd, location, &[&flag[..], &["snapshots"]].concat());
        assert_eq!(out.status.code(), Some(2), "{location} {flag:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("disagree"));
    }
}

#[test]
fn ebsnap_store_takes_the_same_syntax() {
    let env = Env::new();
    let ebsnap = |value: &str| {
        Command::new(assert_cmd::cargo::cargo_bin("ebsnap"))
            .args(["check", "--json", "-q"])
            .current_dir(env.dir.path())
            .env("EBSNAP_STORE", value)
            .output()
            .unwrap()
    };
    let out = ebsnap("ebs:NOT A REGION");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("EBSNAP_STORE"));
    assert_eq!(
        ebsnap("ebs").status.code(),
        Some(2),
        "check needs a local store"
    );
    let image = env.dense_image("image", 1, 23);
    let out = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"))
        .args(["backup", image.to_str().unwrap(), "--json", "-q"])
        .current_dir(env.dir.path())
        .env("EBSNAP_STORE", "./ebs")
        .env("XDG_STATE_HOME", env.path("xdg-state"))
        .output()
        .unwrap();
    ok_json(out);
    assert!(env.path("ebs/ebsnap-store.json").exists());
    assert_eq!(ok_json(ebsnap("./ebs"))["ok"], true);
}

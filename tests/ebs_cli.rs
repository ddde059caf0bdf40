//! End to end through the binary: `ebsnap serve` in one process, `ebsnap --store ebs
//! --endpoint-url ...` in others, real files, SigV4 on every request.

mod common;

use common::journals::settled_below;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const KEY_ID: &str = "AKIDEBSNAPCLI";
const SECRET: &str = "cli-test-secret/abcdefghijklmnopqrstuvwxyz";

/// `ebsnap serve` on 127.0.0.1:0; killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(store: &std::path::Path) -> Served {
        Served::start_with(store, &[])
    }

    fn start_with(store: &std::path::Path, extra: &[&str]) -> Served {
        Served::start_on(store, "127.0.0.1:0", extra)
    }

    fn start_on(store: &std::path::Path, listen: &str, extra: &[&str]) -> Served {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"))
            .args(["serve", "--listen", listen, "--store"])
            .arg(store)
            .args(extra)
            .env("EBSNAP_ACCESS_KEY_ID", KEY_ID)
            .env("EBSNAP_SECRET_ACCESS_KEY", SECRET)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("the first line names the URL")
            .to_owned();
        Served { child, url }
    }
}

impl Served {
    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ebsnap --store ebs --endpoint-url URL ARGS --json -q`, isolated from any AWS setup
/// of the machine it runs on.
fn ebs(served: &Served, env: &Env, args: &[&str]) -> std::process::Output {
    ebs_command(served, env, args).output().unwrap()
}

fn ebs_command(served: &Served, env: &Env, args: &[&str]) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
    command
        .args([
            "--store",
            "ebs",
            "--endpoint-url",
            &served.url,
            "--region",
            "us-east-1",
            "--json",
            "-q",
        ])
        .args(args)
        .env("XDG_STATE_HOME", env.path("xdg-state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    env.aws_client(&mut command, (KEY_ID, SECRET));
    command
}

#[test]
fn every_command_works_through_the_server() {
    let env = Env::new();
    let served = Served::start(&env.store());
    let image = env.path("image");
    let size = 40 * BLOCK + 1234;
    make_image(
        &image,
        size,
        &[
            (0, 3 * BLOCK as usize),
            (20 * BLOCK, 5 * BLOCK as usize),
            (size - 100, 100),
        ],
        11,
    );
    let img = image.to_str().unwrap();

    let b = ok_json(ebs(&served, &env, &["backup", img, "--tag", "host=db1"]));
    let first = b["snapshot_id"].as_str().unwrap().to_owned();
    assert_eq!(b["source_bytes"], size);
    assert_eq!(b["blocks_written"], 9);

    let restored = env.path("restored");
    let r = ok_json(ebs(
        &served,
        &env,
        &["restore", &first, restored.to_str().unwrap()],
    ));
    assert_eq!(r["blocks_written"], 9);
    assert_same_content(&image, &restored);

    let v = ok_json(ebs(&served, &env, &["verify", &first, "--against", img]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["aggregate_ok"], true);

    let list = ok_json(ebs(&served, &env, &["snapshots"]));
    let snaps = list["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["tags"]["host"], "db1");
    assert_eq!(snaps[0]["source_bytes"], size);
    let show = ok_json(ebs(&served, &env, &["show", &first]));
    assert_eq!(show["status"], "completed");
    assert_eq!(show["checksum"], b["checksum"]);

    let second = ok_json(ebs(&served, &env, &["backup", img, "--full"]))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = ebs(&served, &env, &["diff", &first, &second]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a --full backup starts a separate lineage"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNRELATED_SNAPSHOTS"));
    let third = ok_json(ebs(&served, &env, &["backup", img]));
    assert_eq!(third["parent_snapshot_id"].as_str(), Some(second.as_str()));
    assert_eq!(third["blocks_written"], 0, "nothing changed");
    let third = third["snapshot_id"].as_str().unwrap().to_owned();
    let same = ok_json(ebs(&served, &env, &["diff", &first, &first]));
    assert_eq!(same["changed_blocks"], 0);

    let d = ok_json(ebs(&served, &env, &["delete", &first, &third, &second]));
    assert_eq!(d["deleted"].as_array().unwrap().len(), 3);
    assert!(ok_json(ebs(&served, &env, &["snapshots"]))["snapshots"]
        .as_array()
        .unwrap()
        .is_empty());
    let out = ebs(&served, &env, &["show", &first]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_wrong_secret_is_refused() {
    let env = Env::new();
    let served = Served::start(&env.store());
    let out = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"))
        .args([
            "--store",
            "ebs",
            "--endpoint-url",
            &served.url,
            "--region",
            "us-east-1",
            "snapshots",
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .env("AWS_CONFIG_FILE", env.path("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", env.path("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("access denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_to_start_without_a_key_pair() {
    let env = Env::new();
    let out = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(env.store())
        .env_remove("EBSNAP_ACCESS_KEY_ID")
        .env_remove("EBSNAP_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-auth"));
}

#[test]
fn encrypted_backups_write_every_block_and_endpoints_come_from_the_environment() {
    let env = Env::new();
    let served = Served::start(&env.store());
    let image = env.path("image");
    make_image(&image, 6 * BLOCK, &[(2 * BLOCK, 1000)], 12);
    let b = ok_json(ebs(
        &served,
        &env,
        &["backup", image.to_str().unwrap(), "--encrypted"],
    ));
    assert_eq!(b["blocks_total"], 6);
    assert_eq!(
        b["blocks_written"], 2048,
        "absent blocks of an encrypted snapshot are not zeros: the whole 1 GiB volume is written"
    );
    assert_eq!(b["blocks_zero"], 5);
    let id = b["snapshot_id"].as_str().unwrap();
    assert_eq!(
        ok_json(ebs(&served, &env, &["show", id]))["encrypted"],
        true
    );

    // No --endpoint-url: the service-specific variables point each client at the server.
    let out = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"))
        .args([
            "--store",
            "ebs",
            "--region",
            "us-east-1",
            "--json",
            "-q",
            "restore",
            id,
        ])
        .arg(env.path("restored"))
        .env("AWS_ENDPOINT_URL_EBS", &served.url)
        .env("AWS_ENDPOINT_URL_EC2", &served.url)
        .env("XDG_STATE_HOME", env.path("xdg-state"))
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_CONFIG_FILE", env.path("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", env.path("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    ok_json(out);
    assert_same_content(&image, &env.path("restored"));
}

#[test]
fn backup_and_restore_survive_a_faulty_server() {
    let env = Env::new();
    let faults = "throttle=0.2,error=0.05,reset=0.02,latency-ms=1";
    let served = Served::start_with(&env.store(), &["--faults", faults, "--seed", "7"]);
    let image = env.path("image");
    let size = 256 << 20;
    make_image(&image, size, &[(0, size as usize)], 13);
    let workers = ["--workers", "32"];
    let b = ok_json(ebs(
        &served,
        &env,
        &[&["backup", image.to_str().unwrap()][..], &workers].concat(),
    ));
    assert_eq!(b["blocks_written"], 512);
    let restored = env.path("restored");
    let id = b["snapshot_id"].as_str().unwrap();
    let r = ok_json(ebs(
        &served,
        &env,
        &[&["restore", id, restored.to_str().unwrap()][..], &workers].concat(),
    ));
    assert_same_content(&image, &restored);
    let started = std::time::Instant::now();
    let v = ok_json(ebs(
        &served,
        &env,
        &[
            &["verify", id, "--against", image.to_str().unwrap()][..],
            &workers,
        ]
        .concat(),
    ));
    assert_eq!(v["ok"], true, "{v}");
    eprintln!(
        "under {faults}: backup {} s, restore {} s, verify {:.1} s",
        b["seconds"],
        r["seconds"],
        started.elapsed().as_secs_f64()
    );
}

/// `kill -9` of the server in the middle of an upload: restarted on the same store and
/// port, it opens intact, and the client either rides through on retries (when only
/// the server died) or, killed too, resumes its pending snapshot when run again.
#[test]
fn a_killed_server_restarts_on_an_intact_store_and_the_backup_resumes() {
    let env = Env::new();
    let blocks = 512;
    let image = env.dense_image("image", blocks, 14);
    let img = image.to_str().unwrap();
    // Paced, so that the upload takes about a second and the kills land within it.
    let backup = ["backup", img, "--max-rate", "500"];
    let mut served = Served::start(&env.store());
    let port = served.url.rsplit(':').next().unwrap().to_owned();
    let listen = format!("127.0.0.1:{port}");
    let journal_dir = env.path("xdg-state/ebsnap/uploads");
    // Both die: the server mid-upload, the client with it.
    let mut client = ebs_command(&served, &env, &backup).spawn().unwrap();
    wait_until("the backup never made a checkpoint", || {
        settled_below(&journal_dir) > 0
    });
    served.kill();
    let _ = client.kill();
    let _ = client.wait();
    served = Served::start_on(&env.store(), &listen, &[]);
    let report = ok_json(ebs(&served, &env, &backup));
    assert_eq!(report["resumed"], true, "{report}");
    let resumed = report["blocks_resumed"].as_u64().unwrap();
    assert!(resumed > 0, "{report}");
    assert_eq!(
        report["blocks_written"].as_u64().unwrap() + resumed,
        blocks,
        "{report}"
    );
    let id = report["snapshot_id"].as_str().unwrap().to_owned();
    let restored = env.path("restored");
    ok_json(ebs(
        &served,
        &env,
        &["restore", &id, restored.to_str().unwrap()],
    ));
    assert_same_content(&image, &restored);
    assert_eq!(ok_json(ebs(&served, &env, &["verify", &id]))["ok"], true);

    // Only the server dies, and comes back on the same port: the client's retries
    // carry the backup through.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    let mut data = vec![0u8; (blocks * BLOCK) as usize];
    fill_random(&mut data, 15);
    std::os::unix::fs::FileExt::write_all_at(&f, &data, 0).unwrap();
    drop(f);
    let client = ebs_command(&served, &env, &backup).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    served.kill();
    served = Served::start_on(&env.store(), &listen, &[]);
    let out = client.wait_with_output().unwrap();
    let report = ok_json(out);
    let id = report["snapshot_id"].as_str().unwrap().to_owned();
    std::fs::remove_file(&restored).unwrap();
    ok_json(ebs(
        &served,
        &env,
        &["restore", &id, restored.to_str().unwrap()],
    ));
    assert_same_content(&image, &restored);
}

//! Throughput through `ebsnap serve` on loopback: a dense image backed up with the EBS
//! store (aws-sdk-ebs, SigV4 on every request) into the server, and restored from it,
//! beside a backup of the same image into the local store directly. Prints MB/s,
//! PutSnapshotBlock and GetSnapshotBlock requests/s, and the server's peak memory.
//!
//! `cargo bench --bench server` (builds the release binary first). The client and the
//! server share the machine's cores, as the issue asks.

use std::io::{BufRead, BufReader};
mod common;

use common::{build_release, run, vm_hwm, write_random, MIB};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const BLOCK: u64 = 524_288;
const KEY_ID: &str = "AKIDBENCH";
const SECRET: &str = "bench-secret";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let size_mib: u64 = std::env::var("EBSNAP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bin = build_release();
    // Manifests and restore records of the benchmark stay in its own directory.
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("XDG_STATE_HOME", state.path());
    let dir =
        tempfile::tempdir_in(std::env::var_os("EBSNAP_BENCH_DIR").unwrap_or_else(|| ".".into()))
            .unwrap();
    let image = dir.path().join("dense.img");
    write_random(&image, size_mib * MIB, 0, size_mib * MIB);
    let blocks = size_mib * MIB / BLOCK;
    println!(
        "image: {size_mib} MiB dense ({blocks} blocks); {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let t = Instant::now();
    run(Command::new(&bin)
        .arg("--store")
        .arg(dir.path().join("local"))
        .args(["backup", "-q"])
        .arg(&image));
    let local = t.elapsed().as_secs_f64();
    println!(
        "reference, local store backup: {local:.2} s, {:.0} MB/s",
        mb(size_mib) / local
    );

    let mut server = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("served"))
        .env("EBSNAP_ACCESS_KEY_ID", KEY_ID)
        .env("EBSNAP_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let watcher = PeakRss::watch(server.id());

    for workers in [16, 64] {
        let t = Instant::now();
        let out = ebs(&bin, &url, dir.path())
            .args([
                "--workers",
                &workers.to_string(),
                "backup",
                "--full",
                "--json",
                "-q",
            ])
            .arg(&image)
            .output()
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        println!(
            "backup through the server, {workers} workers: {secs:.2} s, {:.0} MB/s, {:.0} PutSnapshotBlock/s ({:.0}% of the local store's speed)",
            mb(size_mib) / secs,
            blocks as f64 / secs,
            100.0 * local / secs
        );
        let target = dir.path().join(format!("restored-{workers}.img"));
        let t = Instant::now();
        run(ebs(&bin, &url, dir.path())
            .args(["--workers", &workers.to_string(), "restore", "-q", &id])
            .arg(&target));
        let secs = t.elapsed().as_secs_f64();
        println!("restore through the server, {workers} workers: {secs:.2} s, {:.0} MB/s, {:.0} GetSnapshotBlock/s", mb(size_mib) / secs, blocks as f64 / secs);
        std::fs::remove_file(&target).unwrap();
    }
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "server peak RSS: {:.1} MiB",
        watcher.stop() as f64 / MIB as f64
    );
}

fn mb(mib: u64) -> f64 {
    (mib * MIB) as f64 / 1e6
}

fn ebs(bin: &Path, url: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--store",
        "ebs",
        "--endpoint-url",
        url,
        "--region",
        "us-east-1",
        // The server's capacity is measured, not EBS's 1000 requests/s per snapshot
        // that the client keeps to by default.
        "--max-rate",
        "1000000",
    ])
    .env("AWS_ACCESS_KEY_ID", KEY_ID)
    .env("AWS_SECRET_ACCESS_KEY", SECRET)
    .env("AWS_CONFIG_FILE", dir.join("none"))
    .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
    .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// Samples a process's VmHWM (peak RSS) until stopped.
struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = vm_hwm(pid).unwrap_or(0).max(peak);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        });
        PeakRss { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

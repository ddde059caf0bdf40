//! `--limit-upload` and `--limit-download` through `ebsnap serve` at the field's 100 ms
//! a request: the rate reached over the transfer, as a share of the limit. It must lie
//! within 5% of it (issue 12).
//!
//! A dense image (256 MiB; `EBSNAP_BENCH_MIB` to change) is backed up in full with the
//! EBS store into `ebsnap serve --faults latency-ms=100`, then restored, under limits of
//! 4, 20 and 64 MiB/s; `--max-rate 1000` stands in for AWS's pace as in the server
//! bench. Each row: the limit, the bytes moved over the transfer's own seconds (first
//! request to last answer), that as a share of the limit, the whole command's rate,
//! and the client's peak RSS (what the flow keeps in flight while the bucket holds
//! requests back). The server's store is in memory (`/dev/shm`). The transfer's
//! seconds run to the last answer, one latency (0.1 s) past the last request sent: in
//! a transfer of 4 s (64 MiB/s) that tail alone is 2.5% of the time.
//!
//! `cargo bench --bench bandwidth` (builds the release binary first), or with any
//! binary: `EBSNAP_BENCH_BIN=target/debug/ebsnap cargo test --bench bandwidth -- --run`
//! (a rate limit is not a CPU figure: a debug build measures it as well).

mod common;

use common::{measure, Measured, Spawned, KEY_ID, MIB, SECRET};
use std::path::{Path, PathBuf};
use std::process::Command;

const LATENCY_MS: u32 = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs every bench: this one only when asked (`--run`).
    if args.iter().any(|a| a == "--list") || (!args.iter().any(|a| a == "--bench" || a == "--run"))
    {
        return;
    }
    let bin = binary();
    let bench = common::DenseImage::new(256);
    let (size_mib, image, dir) = (bench.size_mib, bench.image.clone(), &bench.dir);
    let served = std::env::var_os("EBSNAP_BENCH_SERVED").unwrap_or_else(|| "/dev/shm".into());
    let served = tempfile::tempdir_in(served).unwrap();
    println!("image: {size_mib} MiB dense; server latency {LATENCY_MS} ms; --max-rate 1000");
    println!("| direction | limit MiB/s | MiB/s over the transfer | % of the limit | MiB/s, whole command | transfer s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for limit_mib in [4, 20, 64] {
        let store = served.path().join(format!("served-{limit_mib}"));
        let server = Spawned::serve(&bin, &store, LATENCY_MS);
        let client = Client {
            bin: &bin,
            url: server.first_word("http://"),
            dir: dir.path(),
            limit: format!("{limit_mib}MiB"),
        };
        let backup = client.run("--limit-upload", |c| {
            c.args(["backup", "--full"]).arg(&image);
        });
        row("backup", limit_mib, size_mib, &backup);
        let report: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
        let id = report["snapshot_id"].as_str().unwrap().to_owned();
        let target = dir.path().join("restored.img");
        let restore = client.run("--limit-download", |c| {
            c.args(["restore", &id]).arg(&target);
        });
        row("restore", limit_mib, size_mib, &restore);
        std::fs::remove_file(&target).unwrap();
        drop(server);
        std::fs::remove_dir_all(&store).unwrap();
    }
}

/// `EBSNAP_BENCH_BIN`, else the release binary, built first.
fn binary() -> PathBuf {
    match std::env::var_os("EBSNAP_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => common::build_release(),
    }
}

fn row(direction: &str, limit_mib: u64, size_mib: u64, m: &Measured) {
    let report: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    let transfer = report["transfer_seconds"].as_f64().unwrap_or(f64::NAN);
    // Every block of a dense image moves: the image's size is the data moved.
    let rate = size_mib as f64 / transfer;
    println!(
        "| {direction} | {limit_mib} | {rate:.2} | {:.1}% | {:.2} | {transfer:.2} | {:.1} |",
        100.0 * rate / limit_mib as f64,
        size_mib as f64 / m.seconds,
        m.peak_rss as f64 / MIB as f64,
    );
}

/// The EBS store pointed at the server, paced as AWS is, with one limit.
struct Client<'a> {
    bin: &'a Path,
    url: &'a str,
    dir: &'a Path,
    limit: String,
}

impl Client<'_> {
    fn run(&self, flag: &str, command: impl FnOnce(&mut Command)) -> Measured {
        let mut cmd = Command::new(self.bin);
        cmd.args(["--store", "ebs", "--endpoint-url", self.url])
            .args([
                "--region",
                "us-east-1",
                "--json",
                "-q",
                "--max-rate",
                "1000",
            ])
            .args([flag, &self.limit])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_CONFIG_FILE", self.dir.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        command(&mut cmd);
        measure(&mut cmd)
    }
}

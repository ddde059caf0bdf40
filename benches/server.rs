//! Backup and restore through `ebsnap serve` at the latencies users see: one table.
//!
//! A dense image (1 GiB; `EBSNAP_BENCH_MIB` to change) is backed up in full with the
//! EBS store (aws-sdk-ebs, SigV4 on every request) into `ebsnap serve --faults
//! latency-ms=L`, and restored from it, for L = 0, 20, 100 and 300 ms, each with
//! `--max-rate 1000` to stand in for AWS's 1000 requests/s per snapshot, and default
//! flags otherwise (the flow finds the concurrency). One more row at 0 ms is unpaced,
//! as ebsnap runs against any endpoint that is not Amazon's: the server's capacity and
//! the client's CPU per GiB. The server's store is in memory (`/dev/shm`): it stands in
//! for AWS, whose own disks are not the client's cost. Each row: MiB/s for the whole command (start and
//! completion included), block requests/s over the transfer, that as a share of
//! `--max-rate`, the client's peak RSS and its CPU-s per GiB (user + system); restore
//! rows add the final fsync's share of the restore. Last, the server's CPU per GiB over
//! the same command, and how many of the machine's cores the two kept busy together:
//! where that nears the core count, the machine, not the flow or the link, sets the
//! pace (the server stands in for AWS, whose CPU is not the client's). The image is
//! read cold (dropped from the page cache before each backup), as a disk is in the
//! field; each restore runs twice, with O_DIRECT writes (the default) and through the page cache
//! (`--no-direct-io`, writeback started as blocks land), the two ways of making it
//! durable. Beside them, the machine's
//! references from the same run: `openssl speed -evp sha256` and `dd conv=fdatasync`.
//! Under the table, the client's CPU per GiB unpaced, the least, median and most of
//! five runs of each direction.
//!
//! `cargo bench --bench server` (builds the release binary first). The client and the
//! server share the machine's cores.

mod common;

use common::{
    build_release, dd_fdatasync_seconds, measure, openssl_sha256_mbps, Measured, Spawned, KEY_ID,
    MIB, SECRET,
};
use std::path::Path;
use std::process::Command;

const BLOCK: u64 = 524_288;
const MAX_RATE: u32 = 1000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = build_release();
    let bench = common::DenseImage::new(1024);
    let (size_mib, image, dir) = (bench.size_mib, bench.image.clone(), &bench.dir);
    // The image's own writeback must not land in the figures that follow.
    common::run(&mut Command::new("sync"));
    references(&image, dir.path(), size_mib);
    // The server stands in for AWS: its store lives in memory (EBSNAP_BENCH_SERVED to
    // change), so that its own disk writes are not counted against the client.
    let served = std::env::var_os("EBSNAP_BENCH_SERVED").unwrap_or_else(|| "/dev/shm".into());
    let served = tempfile::tempdir_in(served).unwrap();
    println!(
        "image: {size_mib} MiB dense ({} blocks); {} cores",
        size_mib * MIB / BLOCK,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| latency | direction | MiB/s | requests/s | % of --max-rate | peak RSS MiB | CPU-s/GiB | seconds | transfer s | fsync % | server CPU-s/GiB | cores busy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu_lines = Vec::new();
    for (latency, rate) in [
        (0, None),
        (0, Some(MAX_RATE)),
        (20, Some(MAX_RATE)),
        (100, Some(MAX_RATE)),
        (300, Some(MAX_RATE)),
    ] {
        let store = served.path().join(format!("served-{latency}"));
        let server = Spawned::serve(&bin, &store, latency);
        let label = match rate {
            Some(_) => format!("{latency} ms"),
            None => format!("{latency} ms, unpaced"),
        };
        let client = Client {
            bin: &bin,
            server: &server,
            dir: dir.path(),
            rate,
        };
        let (backup, id) = client.backup(&image);
        row(&label, "backup", size_mib, &backup, rate);
        let target = dir.path().join("restored.img");
        // Both ways of making a restore durable: O_DIRECT writes (the default), and
        // the page cache with writeback started as blocks land, then the final fsync.
        for (direction, extra) in [
            ("restore", None),
            ("restore, page cache", Some("--no-direct-io")),
        ] {
            let restore = client.restore(&id, &target, extra);
            row(&label, direction, size_mib, &restore, rate);
            std::fs::remove_file(&target).unwrap();
        }
        if rate.is_none() {
            cpu_lines = cpu_repeated(&client, &image, &target, size_mib);
        }
        drop(server);
        std::fs::remove_dir_all(&store).unwrap();
    }
    for line in cpu_lines {
        println!("{line}");
    }
}

/// Runs of each direction in [`cpu_repeated`].
const CPU_RUNS: usize = 5;

/// The client's CPU per GiB, unpaced on loopback, over several runs of each direction
/// taken in turn: one row's figure moves by a third when another guest uses the host,
/// and the least of five is what the work itself costs. Returns a line a direction.
fn cpu_repeated(client: &Client, image: &Path, target: &Path, size_mib: u64) -> Vec<String> {
    let gib = size_mib as f64 / 1024.0;
    let (mut backups, mut restores) = (Vec::new(), Vec::new());
    for _ in 0..CPU_RUNS {
        let (backup, id) = client.backup(image);
        backups.push(backup.client.cpu_seconds / gib);
        restores.push(client.restore(&id, target, None).client.cpu_seconds / gib);
        std::fs::remove_file(target).unwrap();
    }
    let mut lines = Vec::new();
    for (direction, figures) in [("backup", &mut backups), ("restore", &mut restores)] {
        figures.sort_by(f64::total_cmp);
        lines.push(format!(
            "client CPU, 0 ms unpaced, {direction}, {CPU_RUNS} runs: least {:.2}, median {:.2}, most {:.2} CPU-s/GiB",
            figures[0],
            figures[CPU_RUNS / 2],
            figures[CPU_RUNS - 1]
        ));
    }
    lines
}

/// The machine's own figures, from this run.
fn references(image: &Path, dir: &Path, size_mib: u64) {
    match openssl_sha256_mbps(3) {
        Some(mbps) => println!(
            "reference: openssl speed -evp sha256 (512 KiB, one core): {mbps:.0} MB/s = {:.2} CPU-s per GiB",
            (1 << 30) as f64 / 1e6 / mbps
        ),
        None => println!("reference: openssl speed did not run"),
    }
    let secs = dd_fdatasync_seconds(image, dir);
    println!(
        "reference: dd bs=8M conv=fdatasync of the image: {secs:.2} s, {:.0} MiB/s",
        size_mib as f64 / secs
    );
}

fn row(label: &str, direction: &str, size_mib: u64, run: &Run, rate: Option<u32>) {
    let m = &run.client;
    let report: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    let blocks = size_mib * MIB / BLOCK;
    let transfer = report["transfer_seconds"].as_f64().unwrap_or(f64::NAN);
    let per_second = blocks as f64 / transfer;
    let share = rate.map_or("-".to_owned(), |r| {
        format!("{:.0}%", 100.0 * per_second / f64::from(r))
    });
    let fsync = report["sync_seconds"].as_f64().map_or("-".to_owned(), |s| {
        format!("{:.1}%", 100.0 * s / report["seconds"].as_f64().unwrap())
    });
    let gib = size_mib as f64 / 1024.0;
    println!(
        "| {label} | {direction} | {:.0} | {per_second:.0} | {share} | {:.1} | {:.2} | {:.2} | {transfer:.2} | {fsync} | {:.2} | {:.2} |",
        size_mib as f64 / m.seconds,
        m.peak_rss as f64 / MIB as f64,
        m.cpu_seconds / gib,
        m.seconds,
        run.server_cpu_seconds / gib,
        (m.cpu_seconds + run.server_cpu_seconds) / m.seconds,
    );
}

/// One client command, measured, and the server's CPU time over it.
struct Run {
    client: Measured,
    server_cpu_seconds: f64,
}

/// The EBS store pointed at the server, with default flags but the pace.
struct Client<'a> {
    bin: &'a Path,
    server: &'a Spawned,
    dir: &'a Path,
    rate: Option<u32>,
}

impl Client<'_> {
    fn command(&self) -> Command {
        let url = self.server.first_word("http://");
        let mut cmd = Command::new(self.bin);
        cmd.args(["--store", "ebs", "--endpoint-url", url])
            .args(["--region", "us-east-1", "--json", "-q"])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_CONFIG_FILE", self.dir.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        if let Some(rate) = self.rate {
            cmd.args(["--max-rate", &rate.to_string()]);
        }
        cmd
    }

    /// A full backup of `image`, read cold from the disk, as a device is in the field.
    fn backup(&self, image: &Path) -> (Run, String) {
        common::evict(image);
        let run = self.run(self.command().args(["backup", "--full"]).arg(image));
        let report: serde_json::Value = serde_json::from_slice(&run.client.stdout).unwrap();
        let id = report["snapshot_id"].as_str().unwrap().to_owned();
        (run, id)
    }

    fn restore(&self, id: &str, target: &Path, extra: Option<&str>) -> Run {
        self.run(self.command().args(["restore", id]).arg(target).args(extra))
    }

    /// Measures `cmd`, and the server's CPU time while it ran.
    fn run(&self, cmd: &mut Command) -> Run {
        let before = self.server.cpu_seconds();
        let client = measure(cmd);
        Run {
            server_cpu_seconds: self.server.cpu_seconds() - before,
            client,
        }
    }
}

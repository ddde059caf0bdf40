//! Recovery without a restore: sequential read throughput of a snapshot through
//! `ebsnap nbd` (nbdcopy) and `ebsnap mount` (dd from DIR/disk.img), against a full
//! restore of the same snapshot, in the same run: one table.
//!
//! A dense image (512 MiB; `EBSNAP_BENCH_MIB` to change) is backed up into `ebsnap
//! serve --faults latency-ms=L` through the EBS store, for L = 0 and 100 ms (what
//! users see from AWS), with `--max-rate 1000` (AWS's per-snapshot limit). Then, on
//! each, the snapshot is restored in full, copied whole over NBD with nbdcopy, and
//! read whole with `dd bs=1M` from the FUSE mount; on a fresh mount, random 64 KiB
//! reads from four threads (reads/s: read-ahead must not slow them). Each row: seconds, MiB/s, and the
//! time as a multiple of the full restore's. FUSE rows need root and /dev/fuse; NBD
//! rows need nbdcopy (libnbd-bin): missing ones are skipped, saying so.
//!
//! `cargo bench --bench recover` (builds the release binary first).

mod common;

use common::{build_release, measure, Spawned, KEY_ID, SECRET};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BLOCK: u64 = 524_288;
/// Random reads of the random-read row, in all, and the threads making them.
const RANDOM_READS: u64 = 128;
const RANDOM_READERS: u64 = 4;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = build_release();
    let bench = common::DenseImage::new(512);
    let (size_mib, image, dir) = (bench.size_mib, bench.image.clone(), &bench.dir);
    common::run(&mut Command::new("sync"));
    println!("image: {size_mib} MiB dense; `--max-rate 1000`; cache 256 MiB (the default)");
    println!("| latency | read | seconds | MiB/s | x full restore |");
    println!("|---|---|---|---|---|");
    for latency in [0, 100] {
        let served = tempfile::tempdir_in("/dev/shm").unwrap();
        let server = Spawned::serve(&bin, &served.path().join("store"), latency);
        let client = Client {
            bin: &bin,
            url: server.first_word("http://"),
            dir: dir.path(),
        };
        let id = client.backup(&image);
        let restore = client.restore(&id, &dir.path().join("restored.img"));
        let row = |what: &str, seconds: f64| {
            println!(
                "| {latency} ms | {what} | {seconds:.2} | {:.0} | {:.2} |",
                size_mib as f64 / seconds,
                seconds / restore
            )
        };
        row("full restore", restore);
        match client.nbd_copy(&id, &dir.path().join("nbd.img")) {
            Some(seconds) => row("NBD (nbdcopy)", seconds),
            None => println!("| {latency} ms | NBD | skipped: no nbdcopy | | |"),
        }
        match client.fuse_read(&id, &dir.path().join("mnt")) {
            Some(seconds) => row("FUSE (dd bs=1M)", seconds),
            None => println!("| {latency} ms | FUSE | skipped: needs root and /dev/fuse | | |"),
        }
        let mnt = dir.path().join("mnt");
        if let Some(seconds) = client.fuse_random(&id, &mnt, size_mib * common::MIB) {
            println!(
                "| {latency} ms | FUSE random 64 KiB x {RANDOM_READS}, {RANDOM_READERS} readers | {seconds:.2} | {:.0} reads/s | |",
                RANDOM_READS as f64 / seconds
            );
        }
    }
}

struct Client<'a> {
    bin: &'a Path,
    url: &'a str,
    dir: &'a Path,
}

impl Client<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.args(["--store", &format!("ebs+{}", self.url)])
            .args(["--region", "us-east-1", "--max-rate", "1000", "-q"])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_CONFIG_FILE", self.dir.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    fn backup(&self, image: &Path) -> String {
        let m = measure(
            self.command()
                .args(["--json", "backup", "--full"])
                .arg(image),
        );
        let report: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
        report["snapshot_id"].as_str().unwrap().to_owned()
    }

    /// Seconds of a full restore.
    fn restore(&self, id: &str, target: &Path) -> f64 {
        let m = measure(self.command().args(["--json", "restore", id]).arg(target));
        std::fs::remove_file(target).unwrap();
        m.seconds
    }

    /// Seconds of `nbdcopy` of the whole export, once the server listens.
    fn nbd_copy(&self, id: &str, out: &Path) -> Option<f64> {
        let found = Command::new("nbdcopy").arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            return None;
        }
        let mut cmd = self.command();
        cmd.args(["nbd", id, "--listen", "127.0.0.1:0"]);
        let server = Spawned::start(cmd);
        let started = Instant::now();
        let uri = server.first_word("nbd://").to_owned();
        common::run(Command::new("nbdcopy").arg(&uri).arg(out));
        let seconds = started.elapsed().as_secs_f64();
        server.stop();
        std::fs::remove_file(out).unwrap();
        Some(seconds)
    }

    /// Seconds of `dd bs=1M` of DIR/disk.img, once mounted.
    fn fuse_read(&self, id: &str, dir: &Path) -> Option<f64> {
        self.mounted(id, dir, |image| {
            let started = Instant::now();
            common::run(
                Command::new("dd")
                    .arg(format!("if={}", image.display()))
                    .args(["of=/dev/null", "bs=1M", "status=none"]),
            );
            started.elapsed().as_secs_f64()
        })
    }

    /// Seconds of [`RANDOM_READS`] reads of 64 KiB, each in a block of its own, at
    /// random, from [`RANDOM_READERS`] threads at once, on a fresh mount (cold cache).
    fn fuse_random(&self, id: &str, dir: &Path, size: u64) -> Option<f64> {
        self.mounted(id, dir, |image| {
            let blocks = size / BLOCK;
            let started = Instant::now();
            std::thread::scope(|s| {
                for reader in 0..RANDOM_READERS {
                    s.spawn(move || random_reads(image, blocks, reader));
                }
            });
            started.elapsed().as_secs_f64()
        })
    }

    /// Runs `read` on DIR/disk.img of snapshot `id` mounted at `dir`, then unmounts.
    fn mounted(&self, id: &str, dir: &Path, read: impl FnOnce(&Path) -> f64) -> Option<f64> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = self.command();
        cmd.arg("mount").arg(id).arg(dir).stdout(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let image = dir.join("disk.img");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !image.exists() {
            assert!(Instant::now() < deadline, "the mount did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
        let seconds = read(&image);
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        Some(seconds)
    }
}

/// This reader's share of the random reads: 64 KiB in pseudo-random blocks, the same
/// ones each run.
fn random_reads(image: &Path, blocks: u64, reader: u64) {
    let file = std::fs::File::open(image).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ reader;
    for _ in 0..RANDOM_READS / RANDOM_READERS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % blocks) * BLOCK + (x >> 40) % 8 * 65536;
        file.read_exact_at(&mut buf, offset).unwrap();
    }
}

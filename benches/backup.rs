//! Full backup of a dense 1 GiB image into the local store, and of a 64 GiB sparse image
//! holding 100 MiB of data, against the machine's SHA-256 limit measured in the same run
//! (cores x `openssl speed -evp sha256` at 512 KiB). Prints figures and ratios, and the
//! peak memory (VmHWM) of each backup process.
//!
//! Runs the release binary, so a backup is measured as a user runs it:
//! `cargo bench --bench backup` (builds it first).

mod common;

use common::{
    build_release, cache, cores, dd_fdatasync_seconds, evict, measure, openssl_aes_gcm_mbps,
    openssl_sha256_mbps, run, vm_hwm, write_random, Measured, MIB,
};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here
    }
    let bin = build_release();
    // Manifests and restore records of the benchmark stay in its own directory.
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("XDG_STATE_HOME", state.path());
    let dir =
        tempfile::tempdir_in(std::env::var_os("EBSNAP_BENCH_DIR").unwrap_or_else(|| ".".into()))
            .unwrap();
    let limit = sha256_limit_mbps();
    println!(
        "machine: {} cores; SHA-256 limit {limit:.0} MB/s (openssl, 512 KiB blocks, all cores)",
        cores()
    );

    let dense = dir.path().join("dense-1g.img");
    write_random(&dense, 1024 * MIB, 0, 1024 * MIB);
    sync();
    let (secs, rss) = backup(&bin, dir.path(), &dense, "dense");
    let mbps = 1024.0 * MIB as f64 / 1e6 / secs;
    println!("dense 1 GiB backup: {secs:.2} s, {mbps:.0} MB/s = {:.0}% of the SHA-256 limit; peak RSS {:.1} MiB", 100.0 * mbps / limit, rss as f64 / MIB as f64);
    against_dd(&bin, dir.path(), &dense);

    let sparse = dir.path().join("sparse-64g.img");
    write_random(&sparse, 64 * 1024 * MIB, 17 * 1024 * MIB, 100 * MIB);
    let small = dir.path().join("data-100m.img");
    write_random(&small, 100 * MIB, 0, 100 * MIB);
    sync();
    let (sparse_secs, sparse_rss) = backup(&bin, dir.path(), &sparse, "sparse");
    let (small_secs, _) = backup(&bin, dir.path(), &small, "small");
    println!(
        "sparse 64 GiB (100 MiB data) backup: {sparse_secs:.2} s; dense 100 MiB backup: {small_secs:.2} s; ratio {:.2}; peak RSS {:.1} MiB",
        sparse_secs / small_secs,
        sparse_rss as f64 / MIB as f64
    );
    let restore_out = dir.path().join("restored.img");
    let id = last_snapshot(&bin, &dir.path().join("store-dense"));
    let t = Instant::now();
    run(Command::new(&bin)
        .args(["--store"])
        .arg(dir.path().join("store-dense"))
        .args(["restore", &id])
        .arg(&restore_out)
        .arg("-q"));
    let rsecs = t.elapsed().as_secs_f64();
    println!(
        "dense 1 GiB restore: {rsecs:.2} s, {:.0} MB/s",
        1024.0 * MIB as f64 / 1e6 / rsecs
    );
    std::fs::remove_file(&restore_out).unwrap();
    encrypted(&bin, dir.path());
    incremental(&bin, dir.path());
    huge_sparse(&bin, dir.path());
}

/// A dense 256 MiB image backed up in full, plain and `--encrypted` (AES-256-GCM at
/// rest), each into a fresh store, best of three: the cost of encryption, beside
/// openssl's AES-256-GCM speed on one core.
fn encrypted(bin: &Path, dir: &Path) {
    let image = dir.join("dense-256m.img");
    write_random(&image, 256 * MIB, 0, 256 * MIB);
    let keys = dir.join("bench-keys.toml");
    let best = |extra: &[&str]| {
        (0..3)
            .map(|n| {
                let store = dir.join(format!("store-crypt-{}-{n}", extra.len()));
                let t = Instant::now();
                run(Command::new(bin)
                    .arg("--store")
                    .arg(&store)
                    .arg("--key-file")
                    .arg(&keys)
                    .args(["backup", "-q", "--full"])
                    .arg(&image)
                    .args(extra));
                let secs = t.elapsed().as_secs_f64();
                let _ = std::fs::remove_dir_all(&store);
                secs
            })
            .fold(f64::MAX, f64::min)
    };
    let (plain, enc) = (best(&[]), best(&["--encrypted"]));
    let mbps = |s: f64| 256.0 * MIB as f64 / 1e6 / s;
    println!(
        "dense 256 MiB backup: plain {plain:.2} s ({:.0} MB/s), encrypted {enc:.2} s ({:.0} MB/s), ratio {:.2}; openssl AES-256-GCM {:.0} MB/s per core",
        mbps(plain),
        mbps(enc),
        enc / plain,
        openssl_aes_gcm_mbps(2).unwrap_or(f64::NAN)
    );
    std::fs::remove_file(&image).unwrap();
}

/// A 15 TiB sparse image (ext4's limit is 16 TiB) holding 40 MiB, backed up in full,
/// then 4 MiB of it changed and backed up again: the incremental's cost should follow
/// the data, not the 31 million blocks of the volume (its manifest is a 961 MiB
/// sparse file, nearly all holes).
fn huge_sparse(bin: &Path, dir: &Path) {
    use std::os::unix::fs::FileExt;
    let image = dir.join("sparse-15t.img");
    let size = 15 << 40;
    if std::fs::File::create(&image)
        .and_then(|f| f.set_len(size))
        .is_err()
    {
        println!("15 TiB sparse image: this filesystem cannot hold one; skipped");
        return;
    }
    write_random(&image, size, 0, 20 * MIB);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    let mut chunk = vec![7u8; 20 * MIB as usize];
    f.write_all_at(&chunk, 7 << 40).unwrap();
    let store = dir.join("store-15t");
    let backup = || {
        common::measure(
            Command::new(bin)
                .arg("--store")
                .arg(&store)
                .args(["backup", "-q", "--json"])
                .arg(&image),
        )
    };
    let full = backup();
    chunk.truncate(4 * MIB as usize);
    chunk.fill(9);
    f.write_all_at(&chunk, (7 << 40) + 8 * MIB).unwrap();
    drop(f);
    let inc = backup();
    let v: serde_json::Value = serde_json::from_slice(&inc.stdout).unwrap();
    println!(
        "15 TiB sparse (40 MiB data): full backup {:.2} s; after a 4 MiB change, incremental {:.2} s ({} blocks written), {:.2} CPU-s, peak RSS {:.1} MiB",
        full.seconds,
        inc.seconds,
        v["blocks_written"],
        inc.cpu_seconds,
        inc.peak_rss as f64 / MIB as f64
    );
    std::fs::remove_file(&image).unwrap();
}

/// A dense 4 GiB image backed up in full, then 1% of its blocks changed and backed up
/// again: the incremental run should take under half the time of the full one.
fn incremental(bin: &Path, dir: &Path) {
    let image = dir.join("dense-4g.img");
    write_random(&image, 4096 * MIB, 0, 4096 * MIB);
    sync();
    let store = dir.join("store-incremental");
    let timed = |what: &str| {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--store")
            .arg(&store)
            .args(["backup", "-q", "--json"])
            .arg(&image)
            .output()
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (secs, v["blocks_written"].as_u64().unwrap())
    };
    let (full, full_blocks) = timed("full");
    // Change 1% of the 8192 blocks, spread over the image.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    let blocks = 4096 * MIB / 524_288;
    let changed = blocks / 100;
    for n in 0..changed {
        let block = (n * 7919) % blocks;
        f.write_all_at(&n.to_le_bytes(), block * 524_288 + 100)
            .unwrap();
    }
    drop(f);
    sync();
    let (inc, inc_blocks) = timed("incremental");
    println!(
        "dense 4 GiB full backup: {full:.2} s ({full_blocks} blocks); after changing {changed} blocks (1%), incremental: {inc:.2} s ({inc_blocks} blocks), {:.0}% of the full time",
        100.0 * inc / full
    );
    std::fs::remove_file(&image).unwrap();
}

/// The local store's write path against the machine's durable-write figure, each
/// from the same state of the image: cold (as a disk is in the field), then in the
/// page cache (as a file just written). `dd bs=8M conv=fdatasync` of the image, then
/// full backups into a store on the same disk, three runs each (the fastest counts:
/// this VM's disk is shared). Then a store in tmpfs against
/// `--dry-run`, which hashes without writing: what the write path itself costs.
fn against_dd(bin: &Path, dir: &Path, image: &Path) {
    let best = |f: &mut dyn FnMut() -> Measured| {
        (0..3)
            .map(|_| f())
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .unwrap()
    };
    // The source as a disk is in the field (read from the device, which the writes
    // share), and as a file just written (in the page cache: only the writes meet
    // the disk).
    let read_from = |cold: bool| match cold {
        true => evict(image),
        false => cache(image),
    };
    let dd = |cold: bool| {
        best(&mut || {
            read_from(cold);
            Measured {
                seconds: dd_fdatasync_seconds(image, dir),
                cpu_seconds: 0.0,
                peak_rss: 0,
                stdout: Vec::new(),
            }
        })
    };
    let mut n = 0;
    let mut into = |store_dir: &Path, extra: &[&str], cold: bool| {
        n += 1;
        let store = store_dir.join(format!("store-vs-dd-{n}"));
        read_from(cold);
        let m = measure(
            Command::new(bin)
                .arg("--store")
                .arg(&store)
                .args(["backup", "-q", "--full"])
                .args(extra)
                .arg(image),
        );
        let _ = std::fs::remove_dir_all(&store);
        m
    };
    for (cold, state) in [(true, "cold"), (false, "in the page cache")] {
        let dd = dd(cold);
        let disk = best(&mut || into(dir, &[], cold));
        println!(
            "local store on this disk, 1 GiB {state}: ebsnap backup {:.2} s ({:.2} CPU-s); dd conv=fdatasync {:.2} s; ebsnap/dd speed {:.2}",
            disk.seconds, disk.cpu_seconds, dd.seconds, dd.seconds / disk.seconds
        );
    }
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let tmpfs = best(&mut || into(shm.path(), &[], true));
    let dry = best(&mut || into(shm.path(), &["--dry-run"], true));
    println!(
        "local store in tmpfs, 1 GiB cold: ebsnap backup {:.2} s ({:.2} CPU-s); --dry-run {:.2} s ({:.2} CPU-s)",
        tmpfs.seconds, tmpfs.cpu_seconds, dry.seconds, dry.cpu_seconds
    );
}

/// cores x openssl's single-core SHA-256 rate at 512 KiB, in MB/s.
fn sha256_limit_mbps() -> f64 {
    let per_core = openssl_sha256_mbps(3).expect("openssl speed runs");
    println!("openssl speed -evp sha256 (512 KiB): {per_core:.0} MB/s per core");
    per_core * cores() as f64
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// Backs `image` up into a fresh store; returns seconds and peak RSS in bytes.
fn backup(bin: &Path, dir: &Path, image: &Path, name: &str) -> (f64, u64) {
    let store = dir.join(format!("store-{name}"));
    let t = Instant::now();
    let out = Command::new("/usr/bin/env")
        .arg(bin)
        .arg("--store")
        .arg(&store)
        .args(["backup", "-q", "--json"])
        .arg(image)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Memory is measured on a second backup into a fresh store (so it writes too).
    (
        secs,
        peak_rss(bin, &dir.join(format!("store-{name}-rss")), image),
    )
}

/// Peak RSS of one more backup run, read from /proc (VmHWM) by a watcher thread.
fn peak_rss(bin: &Path, store: &Path, image: &Path) -> u64 {
    let mut child = Command::new(bin)
        .arg("--store")
        .arg(store)
        .args(["backup", "-q"])
        .arg(image)
        .spawn()
        .unwrap();
    let mut peak = 0;
    loop {
        peak = vm_hwm(child.id()).unwrap_or(0).max(peak);
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn last_snapshot(bin: &Path, store: &Path) -> String {
    let out = Command::new(bin)
        .arg("--store")
        .arg(store)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshots"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

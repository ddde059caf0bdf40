//! Block hashing throughput: SHA-256 of 512 KiB blocks on one core and on all cores
//! (rayon), and zero detection, beside `openssl speed -evp sha256` from the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ebsnap::block::{is_zero, Digest, BLOCK_SIZE};
use rayon::prelude::*;

fn openssl_reference() {
    // The machine's reference, printed with the criterion figures.
    let out = std::process::Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "524288", "-seconds", "2",
        ])
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            if let Some(line) = text.lines().find(|l| l.starts_with("sha256")) {
                let kbps: f64 = line
                    .split_whitespace()
                    .last()
                    .and_then(|v| v.trim_end_matches('k').parse().ok())
                    .unwrap_or(0.0);
                let mbps = kbps * 1000.0 / 1e6;
                eprintln!("reference: openssl sha256 at 512 KiB: {mbps:.0} MB/s per core; {} cores: {:.0} MB/s", num_cpus(), mbps * num_cpus() as f64);
            }
        }
        Err(e) => eprintln!("reference: openssl not available: {e}"),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn hashing(c: &mut Criterion) {
    openssl_reference();
    let blocks: Vec<Vec<u8>> = (0..16u8)
        .map(|i| (0..BLOCK_SIZE).map(|j| (j as u8) ^ i).collect())
        .collect();
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    group.bench_function("sha256 one block, one core", |b| {
        b.iter(|| Digest::of(&blocks[0]))
    });
    group.bench_function("zero check one block", |b| {
        let zeros = vec![0u8; BLOCK_SIZE];
        b.iter(|| is_zero(&zeros))
    });
    group.throughput(Throughput::Bytes(16 * BLOCK_SIZE as u64));
    group.bench_function("sha256 16 blocks, all cores", |b| {
        b.iter(|| blocks.par_iter().map(|d| Digest::of(d)).collect::<Vec<_>>())
    });
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);

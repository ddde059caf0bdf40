//! Block hashing throughput: SHA-256 of 512 KiB blocks on one core and on all cores
//! (rayon), and zero detection, beside `openssl speed -evp sha256` from the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ebsnap::block::{is_zero, Digest, BLOCK_SIZE};
use rayon::prelude::*;

mod common;

use common::{cores, openssl_sha256_mbps};

fn openssl_reference() {
    // The machine's reference, printed with the criterion figures.
    match openssl_sha256_mbps(2) {
        Some(mbps) => eprintln!(
            "reference: openssl sha256 at 512 KiB: {mbps:.0} MB/s per core; {} cores: {:.0} MB/s",
            cores(),
            mbps * cores() as f64
        ),
        None => eprintln!("reference: openssl speed did not run"),
    }
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

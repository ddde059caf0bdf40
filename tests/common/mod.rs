//! Helpers shared by the integration tests: images, the binary, sparse-aware comparison.
#![allow(dead_code)]

pub mod journals;
pub mod live;
pub mod recover;
pub mod rigged;
pub mod server;
pub mod tls;

use assert_cmd::Command;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub const BLOCK: u64 = 524_288;

/// A test directory with a store in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// An image `name` of `blocks` blocks of random data from `seed`, all of it data.
    pub fn dense_image(&self, name: &str, blocks: u64, seed: u64) -> PathBuf {
        let image = self.path(name);
        let size = blocks * BLOCK;
        make_image(&image, size, &[(0, size as usize)], seed);
        image
    }

    /// `ebsnap --store STORE ARGS...`, with no inherited store variables.
    pub fn ebsnap(&self, args: &[&str]) -> Command {
        Command::from_std(self.process(args))
    }

    /// The same, as a plain process (to spawn, wait for, or kill).
    pub fn process(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.bare();
        cmd.arg("--store").arg(self.store()).args(args);
        cmd
    }

    /// `ebsnap` with no arguments yet, and no inherited store or config variables: no
    /// config file of the user's is read.
    pub fn bare(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
        cmd.env_remove("EBSNAP_STORE")
            .env_remove("EBSNAP_CONFIG")
            .env_remove("EBSNAP_KEY_FILE")
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env("XDG_DATA_HOME", self.path("xdg-data"))
            .env("XDG_STATE_HOME", self.path("xdg-state"));
        cmd
    }

    /// Gives an AWS client (ebsnap, boto3) the key pair `key` and nothing of the
    /// host's AWS setup: no config or credentials file, no instance metadata, no
    /// profile or session token, no proxy (the tests' servers are on 127.0.0.1).
    pub fn aws_client<'c>(
        &self,
        cmd: &'c mut std::process::Command,
        key: (&str, &str),
    ) -> &'c mut std::process::Command {
        for proxy in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY"] {
            cmd.env_remove(proxy).env_remove(proxy.to_lowercase());
        }
        cmd.env("AWS_ACCESS_KEY_ID", key.0)
            .env("AWS_SECRET_ACCESS_KEY", key.1)
            .env("AWS_CONFIG_FILE", self.path("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.path("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
    }

    /// The snapshots in the store, of every status.
    pub fn snapshot_count(&self) -> usize {
        self.json(&["snapshots"])["snapshots"]
            .as_array()
            .expect("a snapshots list")
            .len()
    }

    /// Runs the command, expects success, returns its JSON output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ebsnap(args).arg("--json").arg("-q").output().unwrap();
        assert!(
            out.status.success(),
            "ebsnap {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not one JSON object ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Backs up `image`; returns the backup's JSON report.
    pub fn backup(&self, image: &Path) -> serde_json::Value {
        self.json(&["backup", image.to_str().unwrap()])
    }

    pub fn restore(&self, id: &str, target: &Path) -> serde_json::Value {
        self.json(&["restore", id, target.to_str().unwrap()])
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03).max(1);
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Polls `ready` until it holds; fails with `what` after a minute.
/// A command's output, which must be a success: its one JSON object.
pub fn ok_json(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The project's Python (boto3, prometheus_client), which `scripts/test` makes.
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test makes it (python3 -m venv .venv; .venv/bin/pip install -r tests/python/requirements.txt)",
        python.display()
    );
    python
}

pub fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Writes an image of `size` bytes: a sparse file with `regions` (offset, length) of
/// random data.
pub fn make_image(path: &Path, size: u64, regions: &[(u64, usize)], seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (n, &(offset, len)) in regions.iter().enumerate() {
        let mut data = vec![0u8; len];
        fill_random(&mut data, seed + n as u64);
        f.write_all_at(&data, offset).unwrap();
    }
    f.sync_all().unwrap();
}

/// Data extents of a file by SEEK_DATA/SEEK_HOLE (independent of ebsnap's own code).
pub fn extents(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            break;
        }
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        out.push((start as u64, end as u64));
        pos = end;
    }
    out
}

/// Asserts two files have the same size and the same bytes, reading only where either
/// holds data (everything else is a hole on both sides and reads as zeros).
pub fn assert_same_content(a: &Path, b: &Path) {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let size = fa.metadata().unwrap().len();
    assert_eq!(
        size,
        fb.metadata().unwrap().len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    let mut ranges: Vec<(u64, u64)> = extents(a).into_iter().chain(extents(b)).collect();
    ranges.sort();
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut checked_to = 0;
    for (start, end) in ranges {
        let mut pos = start.max(checked_to);
        while pos < end.min(size) {
            let n = ((end.min(size) - pos) as usize).min(x.len());
            fa.read_exact_at(&mut x[..n], pos).unwrap();
            fb.read_exact_at(&mut y[..n], pos).unwrap();
            assert!(
                x[..n] == y[..n],
                "{} and {} differ within bytes {pos}..{}",
                a.display(),
                b.display(),
                pos + n as u64
            );
            pos += n as u64;
        }
        checked_to = checked_to.max(end);
    }
}

/// Bytes a file occupies on disk.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

//! What the benchmarks share: the release binary, the machine's SHA-256 reference,
//! test images, and peak-memory readings.
#![allow(dead_code)]

mod spawned;

#[allow(unused_imports)] // not every bench starts a server
pub use spawned::{Spawned, KEY_ID, SECRET};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;

/// Builds the release binary and returns its path: backups are measured as users run them.
/// `EBSNAP_BENCH_BIN` names another binary instead (an earlier build, to compare with).
pub fn build_release() -> PathBuf {
    if let Some(bin) = std::env::var_os("EBSNAP_BENCH_BIN") {
        return PathBuf::from(bin);
    }
    run(Command::new(env!("CARGO")).args(["build", "--release", "--bin", "ebsnap", "--quiet"]));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release/ebsnap")
}

pub fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?} failed");
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine's reference: `openssl speed -evp sha256` at 512 KiB on one core, MB/s.
pub fn openssl_sha256_mbps(seconds: u32) -> Option<f64> {
    openssl_mbps("sha256", "sha256", seconds)
}

/// `openssl speed -evp aes-256-gcm` at 512 KiB on one core, MB/s: what encrypting a
/// block costs at best, beside which an encrypted backup's cost is read.
pub fn openssl_aes_gcm_mbps(seconds: u32) -> Option<f64> {
    openssl_mbps("aes-256-gcm", "AES-256-GCM", seconds)
}

fn openssl_mbps(evp: &str, label: &str, seconds: u32) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            evp,
            "-bytes",
            "524288",
            "-seconds",
            &seconds.to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with(label))?;
    let kbps: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kbps / 1000.0)
}

/// A file of `size` bytes with `len` pseudo-random bytes at `offset` (the rest a hole).
pub fn write_random(path: &Path, size: u64, offset: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut buf = vec![0u8; 8 * MIB as usize];
    let mut x = 0x2545_F491_4F6C_DD1Du64 ^ offset;
    let mut pos = 0;
    while pos < len {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = (len - pos).min(buf.len() as u64) as usize;
        f.write_all_at(&buf[..n], offset + pos).unwrap();
        pos += n as u64;
    }
}

/// A process's peak resident memory so far (VmHWM), in bytes.
pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// What one run of a command cost: wall time, CPU (user + system) and peak RSS,
/// read from the kernel's accounting of the child (wait4), and its stdout.
pub struct Measured {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
    pub stdout: Vec<u8>,
}

/// Runs `cmd` to the end (stdout captured) and measures it; panics if it fails.
pub fn measure(cmd: &mut Command) -> Measured {
    use std::io::Read;
    let started = std::time::Instant::now();
    // Reaped by wait4 below, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child; the kernel fills `status` and `usage`.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_rss: usage.ru_maxrss as u64 * 1024,
        stdout,
    }
}

/// The machine's durable-write reference: `dd if=IMAGE of=FILE bs=8M conv=fdatasync`
/// into `dir`, in seconds.
pub fn dd_fdatasync_seconds(image: &Path, dir: &Path) -> f64 {
    let out = dir.join("dd.out");
    let t = std::time::Instant::now();
    run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=8M", "conv=fdatasync", "status=none"]));
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(out).unwrap();
    secs
}

/// Writes `path`'s pages back and drops them from the page cache, so that the next
/// reader reads the disk: the state of a disk that a backup finds in the field.
pub fn evict(path: &Path) {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a hint on our own descriptor.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise on {}", path.display());
}

/// Reads `path` whole, so that the next reader finds it in the page cache.
pub fn cache(path: &Path) {
    std::io::copy(
        &mut std::fs::File::open(path).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
}

/// A dense random image of `EBSNAP_BENCH_MIB` MiB (else `default_mib`), in a temporary
/// directory under `EBSNAP_BENCH_DIR` (else `.`); the bench's manifests and restore
/// records stay in a state directory of its own for as long as this lives.
pub struct DenseImage {
    pub size_mib: u64,
    pub image: PathBuf,
    pub dir: tempfile::TempDir,
    _state: tempfile::TempDir,
}

impl DenseImage {
    pub fn new(default_mib: u64) -> DenseImage {
        let size_mib: u64 = std::env::var("EBSNAP_BENCH_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_mib);
        let state = tempfile::tempdir().unwrap();
        std::env::set_var("XDG_STATE_HOME", state.path());
        let under = std::env::var_os("EBSNAP_BENCH_DIR").unwrap_or_else(|| ".".into());
        let dir = tempfile::tempdir_in(under).unwrap();
        let image = dir.path().join("dense.img");
        write_random(&image, size_mib * MIB, 0, size_mib * MIB);
        DenseImage {
            size_mib,
            image,
            dir,
            _state: state,
        }
    }
}

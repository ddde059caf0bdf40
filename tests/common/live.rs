#![allow(dead_code)]
//! A live filesystem for the freeze tests: ext4 on a loop device, mounted, with a
//! writer appending checksummed records to it. Needs root and loop devices: without
//! them [`LiveFs::new`] says loudly that the test is skipped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One record the writer appends: its number, a payload made from it, a checksum.
pub const RECORD: usize = 512;

/// ext4 on a loop device, mounted at `mnt`; thawed, unmounted and detached when dropped.
pub struct LiveFs {
    pub device: String,
    pub mnt: PathBuf,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl LiveFs {
    /// A `mib` MiB ext4 filesystem in `dir`, or `None` (and a SKIPPED line) where
    /// root or loop devices are missing.
    pub fn new(dir: &Path, mib: u64, test: &str) -> Option<LiveFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED {test}: --freeze needs root (FIFREEZE, loop devices)");
            return None;
        }
        let image = dir.join("live.img");
        File::create(&image).unwrap().set_len(mib << 20).unwrap();
        let device = match run("losetup", &["-f", "--show", image.to_str().unwrap()]) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("SKIPPED {test}: no loop device here: {e}");
                return None;
            }
        };
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let live = LiveFs { device, mnt };
        run("mkfs.ext4", &["-q", &live.device]).unwrap();
        run("mount", &[&live.device, live.mnt.to_str().unwrap()]).unwrap();
        Some(live)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// Whether a write to the filesystem finishes within `within` (it does not while
    /// the filesystem is frozen; the probe then finishes after the thaw).
    pub fn writable_within(&self, within: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = self.path("probe");
        std::thread::spawn(move || {
            let wrote = std::fs::write(&probe, b"probe")
                .and_then(|()| File::open(&probe).and_then(|f| f.sync_all()));
            let _ = tx.send(wrote.is_ok());
        });
        rx.recv_timeout(within).unwrap_or(false)
    }

    /// Waits (a minute at most) until a write to the filesystem blocks: it is frozen.
    pub fn wait_until_frozen(&self, running: &mut std::process::Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.writable_within(Duration::from_millis(150)) {
            assert!(
                running.try_wait().unwrap().is_none(),
                "ebsnap exited before freezing"
            );
            assert!(Instant::now() < deadline, "never frozen");
        }
    }
}

impl Drop for LiveFs {
    fn drop(&mut self) {
        let mnt = self.mnt.to_str().unwrap();
        let _ = run("fsfreeze", &["-u", mnt]);
        for _ in 0..50 {
            if run("umount", &[mnt]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run("losetup", &["-d", &self.device]);
    }
}

/// The record numbered `seq`.
pub fn record(seq: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    super::fill_random(&mut r[8..RECORD - 8], seq);
    let sum = checksum(&r[..RECORD - 8]);
    r[RECORD - 8..].copy_from_slice(&sum.to_le_bytes());
    r
}

/// FNV-1a, 64 bits: enough to tell a torn record.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How many whole records `bytes` hold from 0 on: panics on a torn or missing one.
pub fn check_records(bytes: &[u8]) -> u64 {
    assert_eq!(bytes.len() % RECORD, 0, "a torn record at the end");
    for (seq, r) in bytes.chunks(RECORD).enumerate() {
        assert_eq!(r, record(seq as u64), "record {seq} is torn or missing");
    }
    (bytes.len() / RECORD) as u64
}

/// A writer appending a record every `every`, and how long its writes blocked.
pub struct RecordWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub written: Arc<std::sync::atomic::AtomicU64>,
    /// The longest a single write took.
    pub longest: Arc<Mutex<Duration>>,
}

impl RecordWriter {
    pub fn start(path: &Path, every: Duration) -> RecordWriter {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let longest = Arc::new(Mutex::new(Duration::ZERO));
        let (s, w, l) = (stop.clone(), written.clone(), longest.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = 0;
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                file.write_all(&record(seq)).unwrap();
                let took = started.elapsed();
                seq += 1;
                w.store(seq, Ordering::SeqCst);
                let mut longest = l.lock().unwrap();
                *longest = (*longest).max(took);
                drop(longest);
                std::thread::sleep(every);
            }
        });
        RecordWriter {
            stop,
            thread: Some(thread),
            written,
            longest,
        }
    }

    pub fn count(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Stops the writer; returns how many records it wrote and its longest write.
    pub fn stop(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (self.count(), *self.longest.lock().unwrap())
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#![allow(dead_code)]
//! Helpers for the recovery tests: `ebsnap nbd` and `ebsnap mount` as processes, the
//! Debian clients they are tested with, and skipping loudly where those are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Whether `tool` runs here; if not, says loudly that `test` is skipped.
pub fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED {test}: `{tool}` is not installed (scripts/test installs it as root)");
    }
    found
}

/// Whether FUSE can be mounted here (root, /dev/fuse, fusermount3).
pub fn have_fuse(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED {test}: FUSE needs root and /dev/fuse here");
        return false;
    }
    have("fusermount3", test) && have("mountpoint", test)
}

/// Runs a command, which must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `dir` is a mount point (`mountpoint -q`).
pub fn is_mounted(dir: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(dir)
        .status()
        .unwrap()
        .success()
}

/// A running `ebsnap` command (nbd or mount); SIGKILLed if dropped running.
pub struct Running {
    pub child: Child,
    pub log: tempfile::NamedTempFile,
    /// The first line on stdout.
    pub first_line: String,
}

impl Running {
    /// Starts `command` with stdout piped and stderr in a file; with `first_line`,
    /// waits for the first line on stdout.
    pub fn start(mut command: Command, first_line: bool) -> Running {
        let log = tempfile::NamedTempFile::new().unwrap();
        command.stdout(Stdio::piped()).stderr(log.reopen().unwrap());
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        if first_line {
            let stdout = child.stdout.as_mut().unwrap();
            BufReader::new(stdout).read_line(&mut line).unwrap();
        }
        Running {
            child,
            log,
            first_line: line,
        }
    }

    /// `nbd://127.0.0.1:PORT`, from an `ebsnap nbd` first line.
    pub fn nbd_uri(&self) -> String {
        self.first_line
            .split_whitespace()
            .find(|w| w.starts_with("nbd://"))
            .unwrap_or_else(|| panic!("no nbd:// URI in {:?}: {}", self.first_line, self.stderr()))
            .to_owned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGTERM, then waits (a minute at most) for the exit; returns the output.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.wait();
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
        }
        (status, stdout)
    }

    /// Waits a minute at most for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether the process has exited.
    pub fn gone(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits until `ready` holds (a minute at most), failing if the process exits.
    pub fn wait_for(&mut self, what: &str, ready: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ready() {
            assert!(!self.gone(), "exited before {what}: {}", self.stderr());
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory mounted on with `mount -o loop,ro`; unmounted when dropped.
pub struct LoopMount(pub PathBuf);

impl LoopMount {
    pub fn new(image: &Path, dir: &Path) -> Option<LoopMount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(image)
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIPPED loop mount: mount -o loop,ro failed (no loop devices here?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(LoopMount(dir.to_owned()))
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The blocks of `image` that hold data, by SEEK_DATA (what a backup stores).
pub fn data_blocks(image: &Path) -> Vec<u64> {
    let mut blocks: Vec<u64> = super::extents(image)
        .into_iter()
        .flat_map(|(start, end)| start / super::BLOCK..end.div_ceil(super::BLOCK))
        .collect();
    blocks.dedup();
    blocks
}

/// Output of a finished command, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Where the recovery commands find the store: the local directory, or `ebsnap serve`
/// on it through the EBS store (`--store ebs+http://...`).
pub struct Location {
    pub store: String,
    pub served: Option<super::server::ServeProcess>,
}

impl Location {
    pub fn local(env: &super::Env) -> Location {
        Location {
            store: env.store().to_str().unwrap().to_owned(),
            served: None,
        }
    }

    /// `ebsnap serve` on a store of its own, reached through the EBS store, 20 ms
    /// away (every request waits that long: latency as users see it, a little).
    pub fn served(env: &super::Env) -> Location {
        let (root, xdg) = (env.path("served-store"), env.path("serve-xdg"));
        let faults = ["--faults", "latency-ms=20"];
        let served = super::server::ServeProcess::start(&root, env.dir.path(), &xdg, &faults);
        Location {
            store: format!("ebs+{}", served.url),
            served: Some(served),
        }
    }

    /// `ebsnap --store LOCATION ARGS`, isolated from the machine's AWS setup.
    pub fn command(&self, env: &super::Env, args: &[&str]) -> Command {
        use super::server::{KEY_ID, SECRET};
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
        env.aws_client(&mut command, (KEY_ID, SECRET))
            .args(["--store", &self.store])
            .args(args)
            .env_remove("EBSNAP_STORE")
            .env("XDG_DATA_HOME", env.path("xdg-data"))
            .env("XDG_STATE_HOME", env.path("xdg-state"))
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL");
        command
    }

    /// Backs `image` up here; returns the snapshot id.
    pub fn backup(&self, env: &super::Env, image: &Path) -> String {
        let out = self
            .command(env, &["--json", "-q", "backup", image.to_str().unwrap()])
            .output()
            .unwrap();
        super::ok_json(out)["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `ebsnap nbd ID --listen 127.0.0.1:0 EXTRA...`, once it listens.
    pub fn nbd(&self, env: &super::Env, id: &str, extra: &[&str]) -> Running {
        let args = [&["nbd", id, "--listen", "127.0.0.1:0"][..], extra].concat();
        let mut command = self.command(env, &args);
        command.env("EBSNAP_LOG", "ebsnap=info");
        Running::start(command, true)
    }
}

/// Flips one byte of the block in slot `slot` of the store's one pack file.
pub fn damage(store: &Path, slot: u64) {
    let pack = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("a pack file");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .unwrap();
    let mut byte = [0u8; 1];
    let at = slot * super::BLOCK + 777;
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte[0] ^ 0xff], at).unwrap();
}

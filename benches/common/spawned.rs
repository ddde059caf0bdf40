//! Child processes of the benches: `ebsnap serve` and the like.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The key pair the benches' servers accept and their clients sign with.
pub const KEY_ID: &str = "AKIDBENCH";
pub const SECRET: &str = "bench-secret";

/// A child process killed when dropped, with its first line on stdout (where `ebsnap
/// serve` and `ebsnap nbd` say where they listen).
pub struct Spawned {
    child: Child,
    line: String,
}

impl Spawned {
    pub fn start(mut cmd: Command) -> Spawned {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Spawned { child, line }
    }

    pub fn serve(bin: &Path, store: &Path, latency_ms: u32) -> Spawned {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .env("EBSNAP_ACCESS_KEY_ID", KEY_ID)
            .env("EBSNAP_SECRET_ACCESS_KEY", SECRET);
        if latency_ms > 0 {
            cmd.args(["--faults", &format!("latency-ms={latency_ms}")]);
        }
        Spawned::start(cmd)
    }

    pub fn first_word(&self, prefix: &str) -> &str {
        let word = self.line.split_whitespace().find(|w| w.starts_with(prefix));
        word.unwrap_or_else(|| panic!("no {prefix} in {:?}", self.line))
    }

    /// SIGTERM, and the exit.
    pub fn stop(mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    /// The CPU time (user + system, all its threads) the child has used so far, from
    /// `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The command name (field 2) may hold spaces: count fields after its `)`.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime, fields 14 and 15 of the whole line, in clock ticks.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf reads a constant of the system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ticks as f64 / per_second as f64
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

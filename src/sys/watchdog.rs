//! The freeze watchdog: a process of its own that thaws the frozen filesystems if
//! ebsnap dies while they are frozen (`kill -9`, an abort, the OOM killer), or if
//! the freeze outlasts its timeout.
//!
//! It is this very program, run again with a hidden command (`/proc/self/exe`: no
//! `fork` in a process whose runtime has started threads), before the first freeze.
//! ebsnap holds the write end of the watchdog's stdin: when ebsnap dies, however it
//! dies, the kernel closes it and the watchdog's `poll` wakes at once (no polling
//! loop). After its own thaw ebsnap writes one byte, "thawed", and the watchdog exits
//! without touching anything (the filesystem may be someone else's to freeze by then).

use super::freeze::{FreezeError, Mount};
use std::ffi::OsString;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The hidden command of the `ebsnap` binary that runs [`run_watchdog`].
pub const WATCHDOG_COMMAND: &str = "__freeze-watchdog";
/// What ebsnap writes to say it has thawed everything itself.
const DISMISSED: u8 = b'T';
/// What the watchdog writes once it holds the mountpoints and waits.
const READY: &str = "ready";

/// How the running program starts its watchdog: itself, with the hidden command.
pub fn self_command() -> Vec<OsString> {
    vec!["/proc/self/exe".into(), WATCHDOG_COMMAND.into()]
}

/// ebsnap's side of a running watchdog.
pub(crate) struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts `command` for `mounts` and waits until it says it is ready.
    pub fn start(
        command: &[OsString],
        mounts: &[PathBuf],
        timeout: Duration,
    ) -> io::Result<Watchdog> {
        let (program, args) = command.split_first().expect("a watchdog command");
        let mut child = Command::new(program)
            .args(args)
            .arg(timeout.as_millis().to_string())
            .args(mounts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal is ebsnap's to handle,
            // and must not take the watchdog with it.
            .process_group(0)
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        io::BufReader::new(stdout).read_line(&mut line)?;
        let pipe = child.stdin.take();
        let watchdog = Watchdog { child, pipe };
        if line.trim() != READY {
            return Err(io::Error::other(format!(
                "it did not start (it said {line:?})"
            )));
        }
        Ok(watchdog)
    }

    /// Whether the watchdog has died (killed, say): a `kill -9` of ebsnap would then
    /// leave the filesystems frozen. Looks without reaping it (`WNOWAIT`).
    pub fn gone(&self) -> bool {
        // SAFETY: an all-zero siginfo_t is valid for waitid to fill in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: our own child's pid, and a siginfo_t valid for the call.
        let r = unsafe { libc::waitid(libc::P_PID, self.child.id(), &mut info, flags) };
        // SAFETY: waitid filled in (or zeroed) the fields si_pid reads.
        r == 0 && unsafe { info.si_pid() } != 0
    }

    /// Tells the watchdog that everything is thawed, and reaps it.
    pub fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(&[DISMISSED]);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Without the dismissal the watchdog sees the pipe close, and thaws.
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// Why the watchdog stopped waiting.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Dismissed,
    ParentGone,
    TimedOut,
    Terminated,
}

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

/// The watchdog process: `args` are the timeout in milliseconds and the mountpoints.
/// Returns the exit code.
pub fn run_watchdog(args: &[OsString]) -> i32 {
    let Some((timeout, paths)) = parse_args(args) else {
        eprintln!("ebsnap {WATCHDOG_COMMAND}: usage: MILLISECONDS MOUNTPOINT...");
        return 2;
    };
    ignore_signals();
    let mounts = match paths
        .iter()
        .map(|p| Mount::open(p))
        .collect::<io::Result<Vec<_>>>()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ebsnap freeze watchdog: {e}");
            return 1;
        }
    };
    println!("{READY}");
    let _ = io::stdout().flush();
    match wait_for_parent(timeout) {
        Woken::Dismissed => 0,
        why => thaw_for(why, &mounts, timeout),
    }
}

fn parse_args(args: &[OsString]) -> Option<(Duration, Vec<PathBuf>)> {
    let (ms, paths) = args.split_first()?;
    let ms: u64 = ms.to_str()?.parse().ok()?;
    Some((
        Duration::from_millis(ms),
        paths.iter().map(PathBuf::from).collect(),
    ))
}

/// A Ctrl-C or a hangup is ebsnap's to handle (it thaws, then dismisses us). A
/// SIGTERM (a service stopped: every process of its group gets one) thaws at once.
fn ignore_signals() {
    // SAFETY: installing handlers; the SIGTERM one only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Waits on stdin until ebsnap dismisses us, dies, or the timeout passes.
fn wait_for_parent(timeout: Duration) -> Woken {
    let deadline = Instant::now() + timeout;
    let stdin = io::stdin();
    loop {
        if TERMINATED.load(Ordering::SeqCst) {
            return Woken::Terminated;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Woken::TimedOut;
        }
        let mut fd = libc::pollfd {
            fd: stdin.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one pollfd, valid for the call. EINTR (a signal) loops.
        let r = unsafe { libc::poll(&mut fd, 1, ms.max(1)) };
        if r > 0 {
            let mut byte = [0u8; 1];
            return match stdin.lock().read(&mut byte) {
                Ok(1) if byte[0] == DISMISSED => Woken::Dismissed,
                _ => Woken::ParentGone,
            };
        }
    }
}

/// Thaws every mountpoint still frozen, then says why on stderr: only once all are
/// thawed, since stderr may be a file on any of them (a write there would wait for a
/// thaw only we can do) or a pipe nobody reads any more (a write must not panic).
fn thaw_for(why: Woken, mounts: &[Mount], timeout: Duration) -> i32 {
    let reason = match why {
        Woken::TimedOut => format!("the freeze passed its timeout ({}s)", timeout.as_secs()),
        Woken::Terminated => "the watchdog got SIGTERM".into(),
        _ => "ebsnap ended while it was frozen".into(),
    };
    let thawed: Vec<_> = mounts.iter().rev().map(|m| (m, m.thaw())).collect();
    let mut code = 0;
    let mut stderr = io::stderr();
    for (mount, result) in thawed {
        let _ = match result {
            Ok(()) => writeln!(
                stderr,
                "ebsnap freeze watchdog: thawed {}: {reason}",
                mount.path().display()
            ),
            Err(FreezeError::ThawedEarly(_)) => Ok(()),
            Err(e) => {
                code = 1;
                writeln!(stderr, "ebsnap freeze watchdog: {e}")
            }
        };
    }
    code
}

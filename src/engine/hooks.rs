//! Running a user's hook: `sh -c COMMAND` with ebsnap's variables, its output into
//! ebsnap's log (prefixed), bounded by a timeout.
//!
//! A hook runs in a process group of its own: a Ctrl-C at the terminal is ebsnap's to
//! handle (it then still runs the post-hook), and a hook past its timeout is killed
//! with everything it started.

use super::Stop;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long a hook's output is still read after it exited (a background process it
/// left may hold its stdout open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// One hook to run.
pub(crate) struct Hook<'a> {
    /// `pre-hook` or `post-hook`: the prefix of its log lines, and its name in errors.
    pub name: &'static str,
    pub command: &'a str,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
}

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HookEnd {
    Exited(i32),
    /// Killed by a signal (not ours).
    Signaled(i32),
    TimedOut,
    /// Stopped because ebsnap was asked to stop.
    Stopped,
    NotStarted(String),
}

impl HookEnd {
    /// The exit code a shell would report: 128 + the signal of a killed hook, 127
    /// for one that could not start.
    pub fn code(&self) -> i32 {
        match self {
            HookEnd::Exited(c) => *c,
            HookEnd::Signaled(s) => 128 + s,
            HookEnd::TimedOut => 128 + libc::SIGKILL,
            HookEnd::Stopped => 128 + libc::SIGTERM,
            HookEnd::NotStarted(_) => 127,
        }
    }

    pub fn succeeded(&self) -> bool {
        *self == HookEnd::Exited(0)
    }

    /// Why it did not succeed, for messages.
    pub fn describe(&self, timeout: Duration) -> String {
        match self {
            HookEnd::Exited(c) => format!("exited with {c}"),
            HookEnd::Signaled(s) => format!("was killed by {}", super::signal_name(*s)),
            HookEnd::TimedOut => format!(
                "did not finish within its timeout ({}s) and was killed",
                timeout.as_secs()
            ),
            HookEnd::Stopped => "was stopped (ebsnap was asked to stop)".into(),
            HookEnd::NotStarted(e) => format!("could not start: {e}"),
        }
    }
}

impl Hook<'_> {
    /// Runs the hook to its end. With `stop`, a stop asked while it runs sends the
    /// hook's group SIGTERM (and SIGKILL at the timeout).
    pub async fn run(&self, stop: Option<&Stop>) -> HookEnd {
        let mut child = match self.spawn() {
            Ok(c) => c,
            Err(e) => return HookEnd::NotStarted(e.to_string()),
        };
        let readers = [
            child.stdout.take().map(|o| self.log_lines(o, false)),
            child.stderr.take().map(|e| self.log_lines(e, true)),
        ];
        let end = self.wait(&mut child, stop).await;
        for reader in readers.into_iter().flatten() {
            let _ = tokio::time::timeout(OUTPUT_GRACE, reader).await;
        }
        end
    }

    fn spawn(&self) -> std::io::Result<Child> {
        tracing::info!("{}: running {}", self.name, self.command);
        Command::new("sh")
            .arg("-c")
            .arg(self.command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
    }

    async fn wait(&self, child: &mut Child, stop: Option<&Stop>) -> HookEnd {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let stopped = async {
            match stop {
                Some(s) => s.wait().await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            status = child.wait() => return ended(status),
            () = tokio::time::sleep_until(deadline) => HookEnd::TimedOut,
            () = stopped => HookEnd::Stopped,
        };
        if first == HookEnd::Stopped {
            kill_group(child, libc::SIGTERM);
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_ok()
            {
                return first;
            }
        }
        kill_group(child, libc::SIGKILL);
        let _ = child.wait().await;
        first
    }

    /// Logs each line of a hook's stdout (info) or stderr (warn), prefixed.
    fn log_lines(
        &self,
        out: impl AsyncRead + Unpin + Send + 'static,
        stderr: bool,
    ) -> tokio::task::JoinHandle<()> {
        let name = self.name;
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if stderr {
                    tracing::warn!("{name}: {line}");
                } else {
                    tracing::info!("{name}: {line}");
                }
            }
        })
    }
}

fn ended(status: std::io::Result<std::process::ExitStatus>) -> HookEnd {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => HookEnd::Exited(c),
            (None, Some(sig)) => HookEnd::Signaled(sig),
            (None, None) => HookEnd::Exited(1),
        },
        Err(e) => HookEnd::NotStarted(e.to_string()),
    }
}

/// Signals the hook's process group (the shell and whatever it started).
fn kill_group(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: a signal to the group we made for this hook (its pgid is its pid).
        unsafe { libc::kill(-(pid as i32), signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(command: &str, timeout_ms: u64, stop: Option<&Stop>) -> HookEnd {
        let env = [("EBSNAP_TEST".to_owned(), "7".to_owned())];
        let hook = Hook {
            name: "test-hook",
            command,
            env: &env,
            timeout: Duration::from_millis(timeout_ms),
        };
        hook.run(stop).await
    }

    #[tokio::test]
    async fn a_hook_ends_as_the_shell_says() {
        assert!(run("true", 5000, None).await.succeeded());
        assert_eq!(
            run("exit $EBSNAP_TEST", 5000, None).await,
            HookEnd::Exited(7)
        );
        let killed = run("kill -9 $$", 5000, None).await;
        assert_eq!(killed, HookEnd::Signaled(libc::SIGKILL));
        assert_eq!(killed.code(), 137);
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let started = std::time::Instant::now();
        let end = run("sleep 30 & sleep 30; wait", 200, None).await;
        assert_eq!(end, HookEnd::TimedOut);
        // Its background child was killed too: the output pipe closed at once.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_stop_sends_the_hook_sigterm() {
        let stop = Stop::default();
        let asker = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            asker.request(libc::SIGINT);
        });
        let end = run("sleep 30", 10_000, Some(&stop)).await;
        assert_eq!(end, HookEnd::Stopped);
    }
}

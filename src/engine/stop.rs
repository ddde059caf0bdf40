//! Stopping early: a signal handler (in the binary) asks, the engine stops issuing
//! requests at the next block, lets those in flight finish (for [`IN_FLIGHT_GRACE`] at
//! most), saves what it must to be resumed, and returns
//! [`Error::Interrupted`](crate::Error::Interrupted).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long requests in flight may go on once a stop is asked, before they are
/// dropped. Most finish within a round trip; one waiting for its turn under
/// `--limit-upload` or a retry's backoff could take minutes, and a service manager
/// stopping ebsnap kills it after its own timeout (systemd: 90 s). A dropped request is
/// not recorded as done, so a resumed run sends it again: it costs at most one
/// request per worker.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(3);

/// A request to stop, shared by whoever may ask and whoever must obey. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    signal: Arc<AtomicI32>,
}

impl Stop {
    /// Asks the work to stop because of `signal` (a signal number, e.g. `libc::SIGINT`).
    pub fn request(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.token.cancel();
    }

    /// The signal that asked to stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|_| self.token.is_cancelled())
    }

    /// Fails with [`Error::Interrupted`](crate::Error::Interrupted) once a stop is
    /// requested: for work that looks between steps.
    pub fn check(&self) -> crate::Result<()> {
        match self.requested() {
            Some(signal) => Err(crate::Error::Interrupted { signal }),
            None => Ok(()),
        }
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// Resolves [`IN_FLIGHT_GRACE`] after a stop is requested: when the requests still
    /// in flight are to be dropped.
    pub async fn grace_over(&self) {
        self.wait().await;
        tokio::time::sleep(IN_FLIGHT_GRACE).await
    }

    /// Resolves, once a stop is requested, to the [`Error::Interrupted`](crate::Error::Interrupted)
    /// to fail with: for work that waits.
    pub async fn stopped(&self) -> crate::Error {
        self.wait().await;
        crate::Error::Interrupted {
            signal: self.requested().unwrap_or_default(),
        }
    }
}

/// Joins a set of tasks in flight that a stop may cut short: once [`IN_FLIGHT_GRACE`]
/// has passed after a stop is asked, those still running are aborted (they come back
/// cancelled) and [`dropped`](Self::dropped) says so.
pub(crate) struct Draining {
    grace_over: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    dropped: bool,
}

impl Draining {
    pub fn new(stop: &Stop) -> Draining {
        let stop = stop.clone();
        Draining {
            grace_over: Box::pin(async move { stop.grace_over().await }),
            dropped: false,
        }
    }

    /// The next task of `set` to end; `None` once it is empty.
    pub async fn next<T: 'static>(
        &mut self,
        set: &mut tokio::task::JoinSet<T>,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        loop {
            tokio::select! {
                joined = set.join_next() => return joined,
                () = &mut self.grace_over, if !self.dropped => {
                    set.abort_all();
                    self.dropped = true;
                }
            }
        }
    }

    /// Whether tasks were aborted: the work they did not finish is still to do.
    pub fn dropped(&self) -> bool {
        self.dropped
    }
}

/// The conventional name of a signal number, for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_signal_is_kept_and_waiters_wake() {
        let stop = Stop::default();
        assert_eq!(stop.requested(), None);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        stop.request(libc::SIGTERM);
        stop.request(libc::SIGINT);
        waiter.await.unwrap();
        assert_eq!(stop.requested(), Some(libc::SIGTERM));
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    }
}

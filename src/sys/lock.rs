//! flock locks across processes, taken at once, waited for, or waited for a while.

use std::fs::{File, TryLockError};
use std::time::{Duration, Instant};

/// What to do when another process holds the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once.
    Fail,
    /// Wait until the other process is done.
    Wait,
    /// Wait at most this long, then fail.
    Up(Duration),
}

/// Whether a lock may be shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// Held by any number of processes at once (readers).
    Shared,
    /// Held by one process alone (a writer).
    Exclusive,
}

/// Takes an flock on `file`, waiting as `wait` says; `on_wait` runs once if the lock is
/// busy and will be waited for. `Ok(false)`: not taken.
pub(crate) fn take_lock(
    file: &File,
    kind: LockKind,
    wait: LockWait,
    on_wait: impl FnOnce(),
) -> std::io::Result<bool> {
    if try_lock(file, kind)? {
        return Ok(true);
    }
    let deadline = match wait {
        LockWait::Fail => return Ok(false),
        LockWait::Wait => {
            on_wait();
            match kind {
                LockKind::Shared => file.lock_shared()?,
                LockKind::Exclusive => file.lock()?,
            }
            return Ok(true);
        }
        LockWait::Up(limit) => Instant::now() + limit,
    };
    on_wait();
    // flock has no timeout: poll.
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if try_lock(file, kind)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One attempt: `Ok(false)` when another process holds the lock.
fn try_lock(file: &File, kind: LockKind) -> std::io::Result<bool> {
    let attempt = match kind {
        LockKind::Shared => file.try_lock_shared(),
        LockKind::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

//! Progress reporting. The library only calls this trait; the binary draws it
//! (a bar on a terminal, plain lines in a cron log).

/// Receives progress of long work, in bytes.
pub trait Progress: Send + Sync {
    /// Work named `what` begins, `total` bytes of it.
    fn start(&self, _what: &str, _total: u64) {}
    /// `done` bytes of the total are behind us (monotonic).
    fn set(&self, _done: u64) {}
    /// The work ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

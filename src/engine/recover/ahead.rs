//! Read-ahead: a few sequential streams are recognised (several clients, or one
//! reading two places, each keep theirs), and each one's window doubles while it
//! stays sequential. Pure: it says which blocks to fetch ahead, the reader fetches.

use std::ops::Range;
use std::sync::Mutex;

/// Streams followed at once; a read that continues none replaces the least recent.
const STREAMS: usize = 8;

#[derive(Clone, Copy, Default)]
struct Stream {
    /// One past the last block read.
    end: u64,
    /// Blocks below this are fetched already, or being fetched.
    ahead_to: u64,
    /// Blocks fetched ahead of `end`, doubling up to the maximum.
    window: u64,
    /// When this stream last read (a counter), to choose one to replace.
    used: u64,
}

pub(super) struct ReadAhead {
    max_window: u64,
    state: Mutex<(u64, [Stream; STREAMS])>,
}

impl ReadAhead {
    /// Read-ahead of at most `max_window` blocks (0: none).
    pub fn new(max_window: u64) -> Self {
        ReadAhead {
            max_window,
            state: Mutex::new((0, [Stream::default(); STREAMS])),
        }
    }

    /// Notes a read of blocks `first..end`; returns the blocks to fetch ahead.
    pub fn read(&self, first: u64, end: u64) -> Range<u64> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (clock, streams) = &mut *guard;
        *clock += 1;
        // Reads need not be block aligned: one that starts in the last block read
        // continues the stream too.
        let continues = |s: &Stream| s.end > 0 && (first == s.end || first + 1 == s.end);
        let Some(stream) = streams.iter_mut().find(|s| continues(s)) else {
            let oldest = streams.iter_mut().min_by_key(|s| s.used).expect("streams");
            *oldest = Stream {
                end,
                ahead_to: end,
                window: 0,
                used: *clock,
            };
            return end..end;
        };
        stream.used = *clock;
        stream.end = stream.end.max(end);
        stream.window = (stream.window * 2).max(2).min(self.max_window);
        let from = stream.ahead_to.max(stream.end);
        let to = stream.end + stream.window;
        stream.ahead_to = stream.ahead_to.max(to);
        from..to.max(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_stream_grows_its_window_and_a_random_read_does_not() {
        let ahead = ReadAhead::new(8);
        assert!(ahead.read(0, 1).is_empty(), "one read is not yet a stream");
        assert_eq!(ahead.read(1, 2), 2..4);
        assert_eq!(ahead.read(2, 3), 4..7);
        assert_eq!(ahead.read(3, 4), 7..12);
        assert_eq!(ahead.read(4, 5), 12..13);
        assert!(ahead.read(1000, 1001).is_empty());
        // A read within the last block read continues the stream.
        assert_eq!(ahead.read(4, 6), 13..14);
    }

    #[test]
    fn two_interleaved_streams_each_keep_theirs_and_zero_means_none() {
        let ahead = ReadAhead::new(4);
        ahead.read(0, 1);
        ahead.read(500, 501);
        assert_eq!(ahead.read(1, 2), 2..4);
        assert_eq!(ahead.read(501, 502), 502..504);
        let none = ReadAhead::new(0);
        none.read(0, 1);
        assert!(none.read(1, 2).is_empty());
    }
}

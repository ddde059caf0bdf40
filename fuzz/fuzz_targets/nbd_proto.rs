//! The NBD server's parsing (src/nbd/proto.rs, options.rs): what a client sends in
//! the negotiation and in transmission, as one byte stream, the way a hostile client
//! would send it.
//!
//! The input: 4 bytes of client flags, then options (a 16-byte header, then as many
//! bytes of data as the header says, or what is left), then, once an option starts
//! transmission, 28-byte requests. Beyond not crashing: every option reply is well
//! framed, a read or block status decided is within the export (a read within
//! the largest request too), and block status is only decided once
//! `base:allocation` was selected.
#![no_main]

use ebsnap::nbd::proto::{self, Command, Negotiation, Next};
use libfuzzer_sys::fuzz_target;

const SIZE: u64 = 40 * 524_288 + 1234;

fuzz_target!(|data: &[u8]| {
    let Some((flags, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(no_zeroes) = proto::client_flags(*flags) else {
        return;
    };
    let mut negotiation = Negotiation::new("snap-0123456789abcdef0", "fuzz", SIZE, no_zeroes);
    let session = loop {
        let Some((head, after)) = rest.split_first_chunk::<16>() else {
            return;
        };
        let Ok(header) = proto::option_header(head) else {
            return;
        };
        let n = (header.length as usize).min(after.len());
        let (body, after) = after.split_at(n);
        rest = after;
        let mut out = Vec::new();
        match negotiation.option(header.option, body, &mut out) {
            Next::Option => check_replies(&out),
            Next::Close => return,
            Next::Transmit(session) => break session,
        }
    };
    for raw in rest.chunks_exact(28) {
        let Ok(request) = proto::request(raw.try_into().unwrap()) else {
            return;
        };
        match session.command(&request) {
            Command::Read { offset, length } => {
                assert!(length <= proto::MAX_REQUEST);
                within(offset, length);
            }
            Command::BlockStatus { offset, length, .. } => {
                assert!(session.allocation && session.structured);
                within(offset, length);
            }
            Command::Refuse { errno, .. } => assert!(errno == proto::EPERM || errno == proto::EINVAL),
            Command::Disconnect => return,
        }
        let _ = proto::error_chunk(request.cookie, proto::EIO, "fuzz");
    }
});

fn within(offset: u64, length: u32) {
    assert!(length > 0);
    assert!(offset + u64::from(length) <= SIZE);
}

/// Option replies: magic, option, type, length, then exactly that many bytes.
fn check_replies(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= 20);
        assert_eq!(u64::from_be_bytes(out[..8].try_into().unwrap()), proto::OPTION_REPLY_MAGIC);
        let length = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
        assert!(out.len() >= 20 + length);
        out = &out[20 + length..];
    }
}

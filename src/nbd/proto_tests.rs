//! The protocol's bytes, as a client would see them.

use super::proto::*;

const NAME: &str = "snap-0123456789abcdef0";
const SIZE: u64 = 10 * 524_288 + 512;

/// The option replies in `out`: (option, reply type, data).
fn replies(mut out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut found = Vec::new();
    while !out.is_empty() {
        let be32 = |at: usize| u32::from_be_bytes(out[at..at + 4].try_into().unwrap());
        assert_eq!(
            u64::from_be_bytes(out[..8].try_into().unwrap()),
            OPTION_REPLY_MAGIC
        );
        let (option, kind, len) = (be32(8), be32(12), be32(16) as usize);
        found.push((option, kind, out[20..20 + len].to_vec()));
        out = &out[20 + len..];
    }
    found
}

fn name(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn go_data(export: &str, infos: &[u16]) -> Vec<u8> {
    let mut v = name(export);
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    infos
        .iter()
        .for_each(|i| v.extend_from_slice(&i.to_be_bytes()));
    v
}

fn meta_data(queries: &[&str]) -> Vec<u8> {
    let mut v = name("");
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    queries.iter().for_each(|q| v.extend_from_slice(&name(q)));
    v
}

const ACK: u32 = 1;
const ERR_INVALID: u32 = (1 << 31) + 3;
const ERR_UNKNOWN: u32 = (1 << 31) + 6;

#[test]
fn greeting_and_client_flags() {
    assert_eq!(&greeting()[..16], b"NBDMAGICIHAVEOPT");
    assert_eq!(client_flags([0, 0, 0, 3]), Ok(true));
    assert_eq!(client_flags([0, 0, 0, 1]), Ok(false));
    assert_eq!(
        client_flags([0, 0, 0, 0]),
        Err(ProtoError::NotFixedNewstyle)
    );
    assert!(client_flags([0, 0, 1, 1]).is_err());
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    head[12..].copy_from_slice(&(MAX_OPTION + 1).to_be_bytes());
    assert_eq!(
        option_header(&head),
        Err(ProtoError::OptionTooLong(MAX_OPTION + 1))
    );
}

#[test]
fn go_with_structured_replies_and_base_allocation() {
    let mut n = Negotiation::new(NAME, "d", SIZE, true);
    let mut out = Vec::new();
    // Selecting a context before structured replies is refused.
    assert_eq!(
        n.option(10, &meta_data(&[ALLOCATION]), &mut out),
        Next::Option
    );
    assert_eq!(replies(&out)[0].1, ERR_INVALID);
    out.clear();
    assert_eq!(n.option(8, &[], &mut out), Next::Option);
    assert_eq!(
        n.option(10, &meta_data(&["base:other", ALLOCATION]), &mut out),
        Next::Option
    );
    let r = replies(&out);
    assert_eq!((r[0].1, r[2].1), (ACK, ACK));
    assert_eq!(r[1].1, 4, "a META_CONTEXT reply");
    assert_eq!(&r[1].2[4..], ALLOCATION.as_bytes());
    out.clear();
    let next = n.option(7, &go_data(NAME, &[3, 1]), &mut out);
    let Next::Transmit(session) = next else {
        panic!("{next:?}")
    };
    assert!(session.structured && session.allocation);
    assert_eq!(session.size, SIZE);
    let r = replies(&out);
    assert_eq!(r[0].1, 3);
    assert_eq!(u64::from_be_bytes(r[0].2[2..10].try_into().unwrap()), SIZE);
    let flags = u16::from_be_bytes(r[0].2[10..12].try_into().unwrap());
    assert_ne!(flags & FLAG_READ_ONLY, 0);
    assert_eq!(r.last().unwrap().1, ACK);
    assert_eq!(r.len(), 4, "export, block size, name, ack");
}

#[test]
fn info_list_abort_and_unknown_names() {
    let mut n = Negotiation::new(NAME, "d", SIZE, false);
    let mut out = Vec::new();
    assert_eq!(n.option(6, &go_data("other", &[]), &mut out), Next::Option);
    assert_eq!(replies(&out)[0].1, ERR_UNKNOWN);
    out.clear();
    assert_eq!(n.option(6, &go_data("", &[]), &mut out), Next::Option);
    assert_eq!(replies(&out).len(), 2);
    out.clear();
    assert_eq!(n.option(7, &[0, 0, 0, 9], &mut out), Next::Option);
    assert_eq!(replies(&out)[0].1, ERR_INVALID);
    out.clear();
    n.option(3, &[], &mut out);
    let r = replies(&out);
    assert_eq!((r[0].1, &r[0].2[4..]), (2, NAME.as_bytes()));
    out.clear();
    n.option(9, &meta_data(&[]), &mut out);
    assert_eq!(
        replies(&out).len(),
        2,
        "listing with no query lists base:allocation"
    );
    out.clear();
    assert_eq!(n.option(42, b"x", &mut out), Next::Option);
    assert_eq!(replies(&out)[0].1, (1 << 31) + 1);
    out.clear();
    assert_eq!(n.option(2, &[], &mut out), Next::Close);
    assert_eq!(replies(&out)[0].1, ACK);
}

#[test]
fn export_name_answers_with_or_without_zeroes() {
    let mut out = Vec::new();
    let mut n = Negotiation::new(NAME, "d", SIZE, false);
    assert!(matches!(
        n.option(1, NAME.as_bytes(), &mut out),
        Next::Transmit(_)
    ));
    assert_eq!(out.len(), 8 + 2 + 124);
    out.clear();
    let mut n = Negotiation::new(NAME, "d", SIZE, true);
    assert!(matches!(n.option(1, b"", &mut out), Next::Transmit(_)));
    assert_eq!(out.len(), 10);
    assert_eq!(n.option(1, b"nope", &mut Vec::new()), Next::Close);
}

fn req(kind: u16, offset: u64, length: u32) -> Request {
    Request {
        flags: 0,
        kind,
        cookie: 7,
        offset,
        length,
    }
}

#[test]
fn commands_are_checked_against_the_export() {
    let s = Session {
        size: SIZE,
        structured: true,
        allocation: true,
    };
    let read = |o, l| s.command(&req(CMD_READ, o, l));
    assert_eq!(
        read(0, 4096),
        Command::Read {
            offset: 0,
            length: 4096
        }
    );
    assert_eq!(
        read(SIZE - 1, 1),
        Command::Read {
            offset: SIZE - 1,
            length: 1
        }
    );
    for (offset, length) in [(SIZE, 1), (0, 0), (u64::MAX, 10), (0, MAX_REQUEST + 1)] {
        assert!(matches!(
            read(offset, length),
            Command::Refuse { errno: EINVAL, .. }
        ));
    }
    let write = s.command(&req(CMD_WRITE, 0, 4096));
    assert_eq!(
        write,
        Command::Refuse {
            errno: EPERM,
            payload: 4096
        }
    );
    for kind in [CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES] {
        assert_eq!(
            s.command(&req(kind, 0, 0)),
            Command::Refuse {
                errno: EPERM,
                payload: 0
            }
        );
    }
    assert_eq!(s.command(&req(CMD_DISC, 0, 0)), Command::Disconnect);
    assert!(matches!(
        s.command(&req(CMD_CACHE, 0, 1)),
        Command::Refuse { errno: EINVAL, .. }
    ));
    let unselected = Session {
        allocation: false,
        ..s
    };
    let status = req(CMD_BLOCK_STATUS, 0, 4096);
    assert!(matches!(
        unselected.command(&status),
        Command::Refuse { errno: EINVAL, .. }
    ));
    assert!(matches!(
        s.command(&status),
        Command::BlockStatus { one: false, .. }
    ));
}

#[test]
fn replies_are_framed() {
    let mut raw = [0u8; 28];
    raw[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    raw[6..8].copy_from_slice(&CMD_READ.to_be_bytes());
    raw[8..16].copy_from_slice(&9u64.to_be_bytes());
    raw[24..].copy_from_slice(&512u32.to_be_bytes());
    assert_eq!(
        request(&raw).unwrap(),
        Request {
            cookie: 9,
            length: 512,
            ..req(0, 0, 0)
        }
    );
    raw[0] ^= 1;
    assert_eq!(request(&raw), Err(ProtoError::BadMagic));
    assert_eq!(simple_reply(9, EIO)[4..8], EIO.to_be_bytes());
    let chunk = block_status_chunk(9, &[(4096, true), (512, false)]);
    assert_eq!(chunk.len(), 20 + 4 + 16);
    assert_eq!(chunk[36..40], (STATE_HOLE | STATE_ZERO).to_be_bytes());
    let error = error_chunk(9, EIO, "bad");
    assert_eq!(u32::from_be_bytes(error[16..20].try_into().unwrap()), 9);
    assert_eq!(read_chunk_head(9, 4096, 10).len(), 28);
}

//! The NBD protocol's bytes (NetworkBlockDevice's proto.md), with no I/O: the
//! greeting, the options of the fixed newstyle negotiation and their replies, the
//! transmission requests and their simple and structured replies. The server feeds
//! it what it reads and writes what it returns; the fuzz target feeds it anything.
//!
//! Covered: `NBD_OPT_EXPORT_NAME`, `GO`, `INFO`, `LIST`, `ABORT`, `STRUCTURED_REPLY`,
//! `LIST_META_CONTEXT` and `SET_META_CONTEXT` (`base:allocation`); `NBD_CMD_READ`,
//! `BLOCK_STATUS` and `DISC`. The export is read-only: writes, trims, zeroing and
//! flushes are refused with EPERM.

pub use super::options::{Negotiation, Next};

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub const FLAG_NO_ZEROES: u16 = 2;

/// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1;
pub const FLAG_READ_ONLY: u16 = 2;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

pub const REPLY_FLAG_DONE: u16 = 1;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

pub const STATE_HOLE: u32 = 1;
pub const STATE_ZERO: u32 = 2;

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;

/// The largest read (and block status) a client may ask for: NBD's usual maximum
/// block size, which the server announces.
pub const MAX_REQUEST: u32 = 32 << 20;

/// The longest option the server reads; a longer one closes the connection.
pub const MAX_OPTION: u32 = 64 << 10;

/// The context id of `base:allocation`, the one metadata context.
pub const ALLOCATION_CONTEXT: u32 = 1;
pub const ALLOCATION: &str = "base:allocation";

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("bad magic number")]
    BadMagic,
    #[error("the client does not speak the fixed newstyle negotiation")]
    NotFixedNewstyle,
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
    #[error("an option of {0} bytes (at most {MAX_OPTION})")]
    OptionTooLong(u32),
}

/// The server's first 18 bytes: fixed newstyle, and no zero padding if the client
/// agrees.
pub fn greeting() -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    out
}

/// What the client's flags say: whether it wants the export-name reply without its
/// 124 zero bytes. A client without fixed newstyle, or with unknown flags, is refused.
pub fn client_flags(raw: [u8; 4]) -> Result<bool, ProtoError> {
    let flags = u32::from_be_bytes(raw);
    let known = u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    if flags & !known != 0 {
        return Err(ProtoError::UnknownClientFlags(flags));
    }
    if flags & u32::from(FLAG_FIXED_NEWSTYLE) == 0 {
        return Err(ProtoError::NotFixedNewstyle);
    }
    Ok(flags & u32::from(FLAG_NO_ZEROES) != 0)
}

/// An option's header: which option, and the length of the data that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

pub fn option_header(raw: &[u8; 16]) -> Result<OptionHeader, ProtoError> {
    if u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")) != IHAVEOPT {
        return Err(ProtoError::BadMagic);
    }
    let option = u32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
    let length = u32::from_be_bytes(raw[12..].try_into().expect("4 bytes"));
    if length > MAX_OPTION {
        return Err(ProtoError::OptionTooLong(length));
    }
    Ok(OptionHeader { option, length })
}

/// A transmission request's 28 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub fn request(raw: &[u8; 28]) -> Result<Request, ProtoError> {
    let u16_at = |at: usize| u16::from_be_bytes(raw[at..at + 2].try_into().expect("2 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    if u32::from_be_bytes(raw[..4].try_into().expect("4 bytes")) != REQUEST_MAGIC {
        return Err(ProtoError::BadMagic);
    }
    Ok(Request {
        flags: u16_at(4),
        kind: u16_at(6),
        cookie: u64_at(8),
        offset: u64_at(16),
        length: u32::from_be_bytes(raw[24..].try_into().expect("4 bytes")),
    })
}

/// What the export negotiated: the terms of the transmission phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub size: u64,
    pub structured: bool,
    /// `base:allocation` was selected: block status may be asked.
    pub allocation: bool,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        length: u32,
    },
    BlockStatus {
        offset: u64,
        length: u32,
        one: bool,
    },
    Disconnect,
    /// Answer with this error, after reading and dropping `payload` bytes (a write's).
    Refuse {
        errno: u32,
        payload: u32,
    },
}

impl Session {
    /// The transmission flags announced for the export.
    pub fn flags(&self) -> u16 {
        let df = if self.structured { FLAG_SEND_DF } else { 0 };
        FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_CAN_MULTI_CONN | df
    }

    /// Decides a request: reads and block status within the export, a disconnect, or
    /// a refusal (EPERM for anything that would change the export).
    pub fn command(&self, r: &Request) -> Command {
        let refuse = |errno| Command::Refuse { errno, payload: 0 };
        let within = r.length > 0
            && r.offset
                .checked_add(u64::from(r.length))
                .is_some_and(|end| end <= self.size);
        // The largest block size limits what carries data; block status may cover
        // the whole export (in 32-bit lengths).
        let in_range = within && r.length <= MAX_REQUEST;
        match r.kind {
            CMD_WRITE => Command::Refuse {
                errno: EPERM,
                payload: r.length,
            },
            CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES => refuse(EPERM),
            CMD_DISC => Command::Disconnect,
            CMD_READ if in_range => Command::Read {
                offset: r.offset,
                length: r.length,
            },
            CMD_BLOCK_STATUS if within && self.allocation => Command::BlockStatus {
                offset: r.offset,
                length: r.length,
                one: r.flags & CMD_FLAG_REQ_ONE != 0,
            },
            _ => refuse(EINVAL),
        }
    }
}

/// A simple reply's 16 bytes (a read's data follows when `error` is 0).
pub fn simple_reply(cookie: u64, error: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// A structured reply chunk's 20-byte header.
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, length: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out
}

/// The head of the one (final) data chunk of a read: `length` bytes of data follow.
pub fn read_chunk_head(cookie: u64, offset: u64, length: u32) -> Vec<u8> {
    let mut out = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, cookie, 8 + length);
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

/// A final error chunk with a message for the client's log.
pub fn error_chunk(cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(4096)];
    let length = 6 + message.len() as u32;
    let mut out = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, length);
    out.extend_from_slice(&errno.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A final block status chunk for `base:allocation`: (length, data?) extents, which
/// the caller keeps within the request.
pub fn block_status_chunk(cookie: u64, extents: &[(u32, bool)]) -> Vec<u8> {
    let length = 4 + 8 * extents.len() as u32;
    let mut out = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, length);
    out.extend_from_slice(&ALLOCATION_CONTEXT.to_be_bytes());
    for &(len, data) in extents {
        let flags = if data { 0 } else { STATE_HOLE | STATE_ZERO };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    out
}

//! The fixed newstyle negotiation, option by option: what the client asked, what to
//! answer, and whether transmission begins. Pure (see `proto`).

use super::proto::*;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_LIST_META_CONTEXT: u32 = 9;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

const INFO_EXPORT: u16 = 0;
const INFO_NAME: u16 = 1;
const INFO_DESCRIPTION: u16 = 2;
const INFO_BLOCK_SIZE: u16 = 3;

/// What comes after an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next option.
    Option,
    /// Transmission begins, on these terms.
    Transmit(Session),
    /// The client is done: close the connection (after sending what was written).
    Close,
}

/// One connection's negotiation of the one export.
#[derive(Clone, Debug)]
pub struct Negotiation {
    /// The export's name (the snapshot id); the empty name means it too.
    name: String,
    description: String,
    size: u64,
    no_zeroes: bool,
    structured: bool,
    allocation: bool,
}

impl Negotiation {
    pub fn new(name: &str, description: &str, size: u64, no_zeroes: bool) -> Negotiation {
        Negotiation {
            name: name.to_owned(),
            description: description.to_owned(),
            size,
            no_zeroes,
            structured: false,
            allocation: false,
        }
    }

    /// Answers one option (its number and data) into `out`.
    pub fn option(&mut self, option: u32, data: &[u8], out: &mut Vec<u8>) -> Next {
        let ack = |out: &mut Vec<u8>| reply(out, option, REP_ACK, &[]);
        match option {
            OPT_EXPORT_NAME => self.export_name(data, out),
            OPT_ABORT => {
                ack(out);
                Next::Close
            }
            OPT_LIST if data.is_empty() => {
                reply(out, option, REP_SERVER, &with_length(self.name.as_bytes()));
                ack(out);
                Next::Option
            }
            OPT_INFO | OPT_GO => self.info(option, data, out),
            OPT_STRUCTURED_REPLY if data.is_empty() => {
                self.structured = true;
                ack(out);
                Next::Option
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => self.meta_context(option, data, out),
            OPT_LIST | OPT_STRUCTURED_REPLY => invalid(out, option, "this option takes no data"),
            _ => {
                reply(out, option, REP_ERR_UNSUP, b"option not supported");
                Next::Option
            }
        }
    }

    fn knows(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    fn session(&self) -> Session {
        Session {
            size: self.size,
            structured: self.structured,
            allocation: self.structured && self.allocation,
        }
    }

    /// The old way in: no reply for an unknown name but closing.
    fn export_name(&mut self, name: &[u8], out: &mut Vec<u8>) -> Next {
        if !self.knows(name) {
            return Next::Close;
        }
        let session = self.session();
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&session.flags().to_be_bytes());
        if !self.no_zeroes {
            out.extend_from_slice(&[0u8; 124]);
        }
        Next::Transmit(session)
    }

    /// NBD_OPT_INFO and NBD_OPT_GO: the export's size and flags, and what else the
    /// client asked about; GO then begins transmission.
    fn info(&mut self, option: u32, data: &[u8], out: &mut Vec<u8>) -> Next {
        let mut input = Input(data);
        let parsed = input.name().and_then(|name| {
            let count = input.u16()?;
            let asked: Option<Vec<u16>> = (0..count).map(|_| input.u16()).collect();
            input.0.is_empty().then_some((name, asked?))
        });
        let Some((name, asked)) = parsed else {
            return invalid(out, option, "malformed request");
        };
        if !self.knows(name) {
            reply(out, option, REP_ERR_UNKNOWN, b"no such export");
            return Next::Option;
        }
        let session = self.session();
        let mut export = INFO_EXPORT.to_be_bytes().to_vec();
        export.extend_from_slice(&self.size.to_be_bytes());
        export.extend_from_slice(&session.flags().to_be_bytes());
        reply(out, option, REP_INFO, &export);
        for item in asked {
            self.info_item(option, item, out);
        }
        reply(out, option, REP_ACK, &[]);
        match option {
            OPT_GO => Next::Transmit(session),
            _ => Next::Option,
        }
    }

    fn info_item(&self, option: u32, item: u16, out: &mut Vec<u8>) {
        let mut payload = item.to_be_bytes().to_vec();
        match item {
            INFO_NAME => payload.extend_from_slice(self.name.as_bytes()),
            INFO_DESCRIPTION => payload.extend_from_slice(self.description.as_bytes()),
            INFO_BLOCK_SIZE => {
                for size in [1, crate::block::BLOCK_SIZE as u32, MAX_REQUEST] {
                    payload.extend_from_slice(&size.to_be_bytes());
                }
            }
            _ => return,
        }
        reply(out, option, REP_INFO, &payload);
    }

    /// Lists or selects metadata contexts: only `base:allocation` exists.
    fn meta_context(&mut self, option: u32, data: &[u8], out: &mut Vec<u8>) -> Next {
        let setting = option == OPT_SET_META_CONTEXT;
        if setting && !self.structured {
            return invalid(out, option, "structured replies must be negotiated first");
        }
        let mut input = Input(data);
        let parsed = input.name().and_then(|name| {
            let count = input.u32()?;
            let queries: Option<Vec<&[u8]>> = (0..count).map(|_| input.name()).collect();
            input.0.is_empty().then_some((name, queries?))
        });
        let Some((name, queries)) = parsed else {
            return invalid(out, option, "malformed request");
        };
        if !self.knows(name) {
            reply(out, option, REP_ERR_UNKNOWN, b"no such export");
            return Next::Option;
        }
        let matches = |q: &[u8]| q == ALLOCATION.as_bytes() || (!setting && q == b"base:");
        let chosen = (queries.is_empty() && !setting) || queries.iter().any(|q| matches(q));
        if setting {
            self.allocation = chosen;
        }
        if chosen {
            let mut payload = ALLOCATION_CONTEXT.to_be_bytes().to_vec();
            payload.extend_from_slice(ALLOCATION.as_bytes());
            reply(out, option, REP_META_CONTEXT, &payload);
        }
        reply(out, option, REP_ACK, &[]);
        Next::Option
    }
}

/// An option reply: magic, option, reply type, length, data.
fn reply(out: &mut Vec<u8>, option: u32, kind: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

fn invalid(out: &mut Vec<u8>, option: u32, why: &str) -> Next {
    reply(out, option, REP_ERR_INVALID, why.as_bytes());
    Next::Option
}

fn with_length(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// An option's data, read front to back; `None` when it ends too soon.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A string with its u32 length in front.
    fn name(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(usize::try_from(n).ok()?)
    }
}

//! What the fuzz targets share: a tokio runtime, a scratch directory, and a readable
//! request format for the seeds.
//!
//! A request is written as text, so that seeds can be written (and read) by hand:
//!
//! ```text
//! METHOD TARGET
//! name: value
//! name: value
//!
//! body...
//! ```
//!
//! Lines end with `\n` (a `\r` before it is dropped); header values are bytes, not
//! necessarily UTF-8; everything after the first empty line is the body.

use std::sync::OnceLock;

/// One current-thread runtime for every input of a target (building one per input
/// would dominate the run).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A directory of the target's own for files it writes, made once.
pub fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A request as the format above gives it.
#[derive(Debug, Default)]
pub struct RawRequest {
    pub method: Vec<u8>,
    /// Path and query, as sent.
    pub target: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The path, before any `?`.
    pub fn path(&self) -> &[u8] {
        self.target.split(|&b| b == b'?').next().unwrap_or_default()
    }

    /// The query, after the first `?` (empty without one).
    pub fn query(&self) -> &[u8] {
        match self.target.iter().position(|&b| b == b'?') {
            Some(at) => &self.target[at + 1..],
            None => &[],
        }
    }
}

/// Reads the format; `None` when there is no request line.
pub fn parse_request(data: &[u8]) -> Option<RawRequest> {
    let mut rest = data;
    let mut line = || -> Option<&[u8]> {
        let end = rest.iter().position(|&b| b == b'\n');
        let (l, r) = match end {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        if end.is_none() && rest.is_empty() {
            return None;
        }
        rest = r;
        Some(l.strip_suffix(b"\r").unwrap_or(l))
    };
    let first = line()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let mut request = RawRequest {
        method: first[..space].to_vec(),
        target: first[space + 1..].to_vec(),
        ..RawRequest::default()
    };
    while let Some(l) = line() {
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &l[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        request.headers.push((l[..colon].to_vec(), value.to_vec()));
    }
    request.body = rest.to_vec();
    Some(request)
}

/// Replaces each `from` in `data` by `to`.
pub fn substitute(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

//! Hostile input against a real `ebsnap serve` process, written as raw HTTP/1.1 bytes on
//! TCP: oversized heads and bodies, lying lengths, truncated and misframed bodies, slow
//! clients, stale and replayed signatures, traversal in paths and ids, bytes that are
//! not UTF-8; and over TLS, handshakes that stall or are garbage (hostile/tls.rs).
//!
//! Whatever it is sent, the server must answer with the right status in the AWS error
//! shape (or, for what is not HTTP at all, close the connection), and afterwards still
//! be running, still answer a well-behaved client, hold the same snapshots, and have
//! written nothing anywhere: every file of the test directory (the store, the server's
//! working directory, its XDG directories, a sibling directory) keeps its size and
//! modification time. (tests/server_wire.rs covers the semantic refusals: bad tokens,
//! wrong checksums, bad signatures from a client.)
//!
//! Timings: the server runs with a 2-second head timeout and a 1-second body timeout;
//! waits here are only bounded (by [`REPLY_TIMEOUT`]) to tell a hang from an answer,
//! never measured.

mod common;
#[path = "hostile/load.rs"]
mod load;
#[path = "hostile/tls.rs"]
mod tls;
#[path = "hostile/work.rs"]
mod work;

use common::server::{ServeProcess, KEY_ID, SECRET};
use ebsnap::block::{BlockIndex, Digest, LinearAggregate, BLOCK_SIZE as BLOCK};
use ebsnap::store::conformance::{block, read_all, snapshot_with};
use ebsnap::store::{EbsStore, SnapshotId, SnapshotStore, StartSnapshot};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Longer than any answer can take on a loaded machine: reaching it means a hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What came back on a connection.
#[derive(Debug)]
enum Outcome {
    Reply(Reply),
    /// Closed (or reset) without a response.
    Closed,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// An EBS error: the status, `x-amzn-ErrorType`, and a JSON body with `message`.
    fn assert_ebs(&self, status: u16, error_type: &str) -> &Reply {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.headers.get("x-amzn-errortype").map(String::as_str),
            Some(error_type),
            "{}",
            self.text()
        );
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert!(self.json()["message"].is_string(), "{}", self.text());
        self
    }

    fn assert_reason(&self, reason: &str) -> &Reply {
        assert_eq!(self.json()["Reason"], reason, "{}", self.text());
        self
    }

    /// An EC2 error: the status and an XML `Response/Errors/Error` with this `Code`.
    fn assert_ec2(&self, status: u16, code: &str) -> &Reply {
        let body = self.text();
        assert_eq!(self.status, status, "{body}");
        assert!(
            body.contains(&format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>"
            )),
            "{body}"
        );
        self
    }
}

impl Outcome {
    fn reply(self) -> Reply {
        match self {
            Outcome::Reply(r) => r,
            Outcome::Closed => panic!("the connection was closed without an answer"),
        }
    }

    /// For what hyper refuses before the application sees it (heads too large, not
    /// HTTP): a bare 4xx with one of `statuses`, or a closed connection.
    fn assert_refused_or_closed(&self, statuses: &[u16]) {
        if let Outcome::Reply(r) = self {
            assert!(
                statuses.contains(&r.status),
                "expected one of {statuses:?} or a closed connection, got {} {}",
                r.status,
                r.text()
            );
        }
    }
}

/// One client connection, reading answers one at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes, ignoring a reset or broken pipe: the server may refuse and close before
    /// it has read everything, which is its right.
    fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            assert!(
                matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                "writing: {e}"
            );
        }
    }

    /// Writes `bytes` from another thread (so that a server which stops reading cannot
    /// block the test), then reads one answer.
    fn send_in_background_and_read(&mut self, bytes: Vec<u8>) -> Outcome {
        let mut writer = self.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            for chunk in bytes.chunks(64 * 1024) {
                if writer.write_all(chunk).is_err() {
                    break;
                }
            }
        });
        let outcome = self.read();
        // Unblocks the writer if the server stopped reading.
        let _ = self.stream.shutdown(Shutdown::Both);
        sender.join().unwrap();
        outcome
    }

    /// Reads one answer (by its Content-Length), or notices the connection closed.
    /// Panics if nothing comes within REPLY_TIMEOUT.
    fn read(&mut self) -> Outcome {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if !self.fill() {
                return Outcome::Closed;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .map_or(0, |l| l.parse().unwrap());
        while self.buf.len() < head_end + length {
            assert!(self.fill(), "the answer was cut short");
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Outcome::Reply(Reply {
            status,
            headers,
            body,
        })
    }

    /// Reads more; `false` at the end of the stream (or a reset).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server hung: no answer within {REPLY_TIMEOUT:?}")
            }
            Err(e) => panic!("reading: {e}"),
        }
    }

    /// Waits for the server to close the connection (it may say 408 first).
    fn assert_closed_by_server(&mut self) {
        loop {
            match self.read() {
                Outcome::Closed => return,
                Outcome::Reply(r) => assert_eq!(r.status, 408, "{}", r.text()),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request, as bytes, and the means to sign it (SigV4, written here independently
/// of the server's verifier).
#[derive(Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.headers
            .push((name.to_lowercase(), value.as_ref().to_vec()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }

    /// A PutSnapshotBlock as the SDKs send it: unsigned body, signed checksum.
    fn put_block(snapshot: &str, index: &str, checksum: &Digest) -> Req {
        Req::new("PUT", &format!("/snapshots/{snapshot}/blocks/{index}"))
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .header("x-amz-checksum", checksum.to_base64())
            .header("x-amz-checksum-algorithm", "SHA256")
            .header("x-amz-data-length", BLOCK.to_string())
            .header("content-type", "application/octet-stream")
    }

    /// An EC2 Query call.
    fn ec2(form: &str) -> Req {
        Req::new("POST", "/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.as_bytes())
    }

    fn without(mut self, name: &str) -> Req {
        self.headers.retain(|(k, _)| k != name);
        self
    }

    fn set(self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.without(name).header(name, value)
    }

    /// Signs at `when`: adds `x-amz-date` and `authorization`, signing `host` and every
    /// `x-amz-*` header (as the SDKs do).
    fn signed_at(self, when: SystemTime) -> Req {
        self.signed_by(when, SECRET)
    }

    /// Signed with the right key id, scope and date, but the wrong secret: what
    /// someone without the secret can send.
    fn forged(self) -> Req {
        self.signed_by(SystemTime::now(), "not-the-secret")
    }

    fn signed_by(mut self, when: SystemTime, secret: &str) -> Req {
        self = self.without("authorization").without("x-amz-date");
        let stamp = humantime::format_rfc3339_seconds(when)
            .to_string()
            .replace(['-', ':'], "");
        self.headers
            .push(("x-amz-date".into(), stamp.clone().into()));
        let (path, query) = self
            .target
            .split_once('?')
            .unwrap_or((self.target.as_str(), ""));
        let service = if path == "/" { "ec2" } else { "ebs" };
        let mut signed: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .filter(|(k, _)| k == "host" || k.starts_with("x-amz-"))
            .map(|(k, v)| (k.as_str(), v.trim_ascii()))
            .collect();
        signed.sort();
        let names: Vec<&str> = signed.iter().map(|(k, _)| *k).collect();
        let names = names.join(";");
        let payload = self
            .headers
            .iter()
            .find(|(k, _)| k == "x-amz-content-sha256")
            .map_or_else(
                || hex::encode(Sha256::digest(&self.body)),
                |(_, v)| String::from_utf8_lossy(v).into_owned(),
            );
        let mut canonical = format!(
            "{}\n{}\n{}\n",
            self.method,
            uri_encode(path.as_bytes(), true),
            canonical_query(query)
        )
        .into_bytes();
        for (k, v) in &signed {
            canonical.extend_from_slice(k.as_bytes());
            canonical.push(b':');
            canonical.extend_from_slice(v);
            canonical.push(b'\n');
        }
        canonical.extend_from_slice(format!("\n{names}\n{payload}").as_bytes());
        let day = &stamp[..8];
        let scope = format!("{day}/us-east-1/{service}/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex::encode(Sha256::digest(&canonical))
        );
        let key = [day, "us-east-1", service, "aws4_request"]
            .iter()
            .fold(format!("AWS4{secret}").into_bytes(), |k, part| {
                hmac(&k, part.as_bytes())
            });
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders={names}, Signature={signature}"
        );
        self.header("authorization", auth)
    }

    fn signed(self) -> Req {
        self.signed_at(SystemTime::now())
    }

    /// The request's bytes: the head as given (no Content-Length is added), then the
    /// body.
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding of every byte but the unreserved ones (and `/` in a path).
fn uri_encode(raw: &[u8], path: bool) -> String {
    raw.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (path && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// Size and modification time of every file under `root`.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let path = entry.path();
            out.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                (meta.len(), meta.modified().unwrap()),
            );
            if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
    out
}

/// A server over a fresh store holding a completed snapshot (three blocks) and a
/// pending one (nothing written), with a snapshot of the whole test directory.
struct Fixture {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    server: ServeProcess,
    client: EbsStore,
    completed: SnapshotId,
    pending: SnapshotId,
    blocks: BTreeMap<u64, Digest>,
    listing: Value,
    files: BTreeMap<PathBuf, (u64, SystemTime)>,
}

/// The server's arguments in most tests: short timeouts, so that slow clients show.
const QUICK: &[&str] = &["--header-timeout", "2", "--body-timeout", "1"];

impl Fixture {
    fn start() -> Fixture {
        Fixture::start_with(QUICK, None)
    }

    /// A fixture whose server runs with `args` (after `--store`), and at most `nofile`
    /// descriptors if given.
    fn start_with(args: &[&str], nofile: Option<u64>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for d in ["cwd", "xdg", "outside"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("outside/canary"), b"untouched").unwrap();
        let server = ServeProcess::start_limited(
            &dir.path().join("store"),
            &dir.path().join("cwd"),
            &dir.path().join("xdg"),
            args,
            nofile,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(server.client());
        let completed = rt.block_on(snapshot_with(&client, None, 1, &[(0, 1), (5, 2), (9, 3)]));
        let pending = rt
            .block_on(client.start_snapshot(StartSnapshot::new(1)))
            .unwrap()
            .id;
        let blocks = rt.block_on(read_all(&client, &completed));
        let mut fx = Fixture {
            rt,
            dir,
            server,
            client,
            completed,
            pending,
            blocks,
            listing: Value::Null,
            files: BTreeMap::new(),
        };
        fx.listing = fx.block_indexes();
        fx.rebaseline();
        fx
    }

    /// Stops the server (SIGKILL: nothing is tidied up) and starts another on the same
    /// store, with `args` and at most `nofile` descriptors.
    fn restart(&mut self, args: &[&str], nofile: Option<u64>) {
        let (store, cwd, xdg) = (self.path("store"), self.path("cwd"), self.path("xdg"));
        // The old one goes first: the store admits one writer.
        self.server.stop();
        self.server = ServeProcess::start_limited(&store, &cwd, &xdg, args, nofile);
        self.client = self.rt.block_on(self.server.client());
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A legitimate signed call (ListSnapshotBlocks) under whatever load there is: it
    /// answers correctly within 2 s, and the server's memory stays under 256 MiB.
    fn assert_served(&self, case: &str) {
        let started = std::time::Instant::now();
        assert_eq!(self.block_indexes(), self.listing, "{case}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{case}: a genuine call took {took:?}"
        );
        let (rss, peak) = self.server.rss_mib();
        assert!(
            peak < 256,
            "{case}: the server's RSS reached {peak} MiB (now {rss})"
        );
    }

    /// Takes the current files as the ones that must not change.
    fn rebaseline(&mut self) {
        self.files = tree(self.dir.path());
    }

    fn conn(&self) -> Conn {
        Conn::open(&self.server.addr)
    }

    /// The request with `host` and, if it has a body, `content-length`.
    fn req(&self, method: &str, target: &str) -> Req {
        Req::new(method, target).header("host", &self.server.addr)
    }

    /// A PutSnapshotBlock (unsigned, no Content-Length yet).
    fn put_block(&self, snapshot: &str, index: &str, checksum: &Digest) -> Req {
        let mut req = Req::put_block(snapshot, index, checksum);
        req.headers
            .insert(0, ("host".into(), self.server.addr.clone().into()));
        req
    }

    fn with_length(req: Req) -> Req {
        let n = req.body.len().to_string();
        req.set("content-length", n)
    }

    /// Sends one request on a fresh connection and reads the answer.
    fn send(&self, req: &Req) -> Outcome {
        self.send_raw(req.bytes())
    }

    fn send_raw(&self, bytes: Vec<u8>) -> Outcome {
        self.conn().send_in_background_and_read(bytes)
    }

    /// The block indexes of the completed snapshot, by a well-behaved signed request.
    fn block_indexes(&self) -> Value {
        let target = format!("/snapshots/{}/blocks", self.completed);
        let reply = self.send(&self.req("GET", &target).signed()).reply();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let indexes: Vec<Value> = reply.json()["Blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["BlockIndex"].clone())
            .collect();
        Value::from(indexes)
    }

    /// After a hostile case: the server runs, answers, holds the same blocks, and no
    /// file anywhere in the test directory appeared, disappeared or changed.
    fn assert_intact(&mut self, case: &str) {
        assert!(self.server.alive(), "{case}: the server died");
        assert_eq!(self.block_indexes(), self.listing, "{case}");
        let now = tree(self.dir.path());
        assert_eq!(now, self.files, "{case}: files changed");
        assert!(
            !self.server.stderr().contains("panicked"),
            "{case}: {}",
            self.server.stderr()
        );
    }

    /// The end of a test: every block reads back the same, and the pending snapshot
    /// received nothing (it completes with zero blocks).
    fn finish(mut self) {
        self.assert_intact("finish");
        let blocks = self.rt.block_on(read_all(&self.client, &self.completed));
        assert_eq!(blocks, self.blocks);
        let status = self
            .rt
            .block_on(self.client.complete_snapshot(&self.pending, 0, None))
            .expect("the pending snapshot received no block");
        assert_eq!(status.as_str(), "completed");
        let listed = self.rt.block_on(self.client.list_snapshots()).unwrap();
        assert_eq!(listed.len(), 2, "no snapshot was made: {listed:?}");
        assert!(self.server.alive());
        assert!(
            !self.server.stderr().contains("panicked"),
            "{}",
            self.server.stderr()
        );
    }
}

#[test]
fn oversized_heads_are_refused_and_the_server_stays_up() {
    let mut fx = Fixture::start();
    let list = format!("/snapshots/{}/blocks", fx.completed);

    // One 1 MiB header.
    let huge = fx.req("GET", &list).header("x-pad", vec![b'a'; 1 << 20]);
    fx.send(&huge).assert_refused_or_closed(&[431]);
    fx.assert_intact("1 MiB header");

    // Five thousand small headers.
    let mut many = fx.req("GET", &list);
    for i in 0..5000 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    fx.send(&many).assert_refused_or_closed(&[431]);
    fx.assert_intact("5000 headers");

    // A 1 MiB request line, and a 300 KiB query string.
    let long_path = format!("/snapshots/{}", "a".repeat(1 << 20));
    fx.send(&fx.req("GET", &long_path))
        .assert_refused_or_closed(&[414, 431]);
    fx.assert_intact("1 MiB path");
    let long_query = format!("{list}?x={}", "q".repeat(300 << 10));
    fx.send(&fx.req("GET", &long_query))
        .assert_refused_or_closed(&[414, 431]);
    fx.assert_intact("300 KiB query");

    // A large query within the limits, signed: parsed, and the unknown parameters
    // ignored.
    let params: Vec<String> = (0..2000).map(|i| format!("p{i}=%FF{i}")).collect();
    let big = format!("{list}?maxResults=100&{}", params.join("&"));
    let reply = fx.send(&fx.req("GET", &big).signed()).reply();
    assert_eq!(reply.status, 200, "{}", reply.text());
    fx.assert_intact("2000 query parameters");

    // Bytes no header may hold, and an obsolete line folding.
    for bad in [&b"a\0b"[..], b"a\rb", b"a\r\n folded"] {
        let req = fx.req("GET", &list).header("x-bad", bad).signed();
        fx.send(&req).assert_refused_or_closed(&[400]);
    }
    fx.assert_intact("NUL, CR and folding in a header value");
    fx.finish();
}

#[test]
fn oversized_bodies_get_413_in_the_aws_shape() {
    let mut fx = Fixture::start();
    let data = block(7);
    let pending = fx.pending.to_string();
    let put = |fx: &Fixture| fx.put_block(&pending, "0", &data.digest());

    // Announced: refused on its Content-Length, before the body is waited for.
    let announced = put(&fx)
        .header("content-length", (2 * BLOCK).to_string())
        .signed()
        .body(vec![0u8; 2 * BLOCK]);
    fx.send(&announced)
        .reply()
        .assert_ebs(413, "RequestEntityTooLargeException");
    fx.assert_intact("2 MiB Content-Length");

    // Chunked: counted as it arrives.
    let chunked_body = chunked(&vec![0u8; 2 * BLOCK], 64 * 1024);
    let chunked = put(&fx)
        .header("transfer-encoding", "chunked")
        .signed()
        .body(chunked_body);
    fx.send(&chunked)
        .reply()
        .assert_ebs(413, "RequestEntityTooLargeException");
    fx.assert_intact("2 MiB chunked");

    // EC2: the same refusal in EC2's XML.
    let form = format!(
        "Action=DescribeSnapshots&Filter.1.Name=description&Filter.1.Value.1={}",
        "a".repeat(2 * BLOCK)
    );
    let ec2 = Fixture::with_length(
        fx.req("POST", "/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    )
    .signed();
    fx.send(&ec2).reply().assert_ec2(413, "InvalidRequest");
    fx.assert_intact("2 MiB EC2 form");

    // Unsigned: refused before a byte of the body is read.
    let unsigned = put(&fx)
        .header("content-length", (2 * BLOCK).to_string())
        .body(vec![0u8; 2 * BLOCK]);
    fx.send(&unsigned)
        .reply()
        .assert_ebs(403, "MissingAuthenticationTokenException");
    fx.assert_intact("unsigned 2 MiB");

    // Lengths that are not lengths: HTTP errors, whatever the signature.
    let lengths: [&[(&str, &str)]; 5] = [
        &[("content-length", "99999999999999999999999")],
        &[("content-length", "-1")],
        &[("content-length", "524288"), ("content-length", "1")],
        &[("content-length", "0x80000")],
        &[
            ("content-length", "524288"),
            ("transfer-encoding", "chunked"),
        ],
    ];
    for headers in lengths {
        let mut req = put(&fx);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req.signed().body(data.data().to_vec());
        match fx.send(&req) {
            Outcome::Closed => {}
            Outcome::Reply(r) => {
                assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
            }
        }
        fx.assert_intact(&format!("{headers:?}"));
    }
    fx.finish();
}

#[test]
fn truncated_and_misframed_bodies_write_nothing() {
    let mut fx = Fixture::start();
    let data = block(7);
    let pending = fx.pending.to_string();
    let addr = fx.server.addr.clone();
    let put = |index: &str| {
        let mut req = Req::put_block(&pending, index, &data.digest());
        req.headers.insert(0, ("host".into(), addr.clone().into()));
        req
    };

    // A body cut short, then the client's half of the connection closed.
    let mut conn = fx.conn();
    let head = put("0")
        .header("content-length", BLOCK.to_string())
        .signed();
    conn.send(&head.bytes());
    conn.send(&data.data()[..100_000]);
    conn.stream.shutdown(Shutdown::Write).unwrap();
    match conn.read() {
        Outcome::Closed => {}
        Outcome::Reply(r) => {
            r.assert_ebs(400, "MalformedHttpRequestException");
        }
    }
    fx.assert_intact("truncated body, half-closed");

    // The same, the connection dropped outright.
    let mut conn = fx.conn();
    conn.send(&head.bytes());
    conn.send(&data.data()[..BLOCK - 1]);
    drop(conn);
    fx.assert_intact("truncated body, dropped");

    // Content-Length shorter than what follows: the server takes 1000 bytes as the
    // body (refused: a block is 524288 bytes), and what follows as a request of its
    // own, which has to be signed like any other.
    let smuggled = format!(
        "PUT /snapshots/{pending}/blocks/1 HTTP/1.1\r\nhost: {}\r\nx-amz-data-length: 524288\r\ncontent-length: 0\r\n\r\n",
        fx.server.addr
    );
    let short = put("0").header("content-length", "1000").signed();
    let mut conn = fx.conn();
    let mut bytes = short.bytes();
    bytes.extend_from_slice(&data.data()[..1000]);
    bytes.extend_from_slice(smuggled.as_bytes());
    conn.send(&bytes);
    conn.read()
        .reply()
        .assert_ebs(400, "ValidationException")
        .assert_reason("INVALID_PARAMETER_VALUE");
    conn.read()
        .reply()
        .assert_ebs(403, "MissingAuthenticationTokenException");
    fx.assert_intact("Content-Length shorter than the data");

    // Chunked bodies with bad chunk sizes, or cut short.
    let framings: [&[u8]; 5] = [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"-5\r\nabc\r\n0\r\n\r\n",
        b"5\r\nabcdefgh\r\n0\r\n\r\n",
        b"80000\r\nabc",
    ];
    for framing in framings {
        let mut conn = fx.conn();
        let req = put("0").header("transfer-encoding", "chunked").signed();
        conn.send(&req.bytes());
        conn.send(framing);
        conn.stream.shutdown(Shutdown::Write).unwrap();
        match conn.read() {
            Outcome::Closed => {}
            Outcome::Reply(r) => {
                r.assert_ebs(400, "MalformedHttpRequestException");
            }
        }
        fx.assert_intact(&String::from_utf8_lossy(framing));
    }

    // A well-framed chunked body goes through the same checks as any other.
    let body = chunked(data.data(), 100_000);
    let wrong_sum = put("0")
        .set("x-amz-checksum", block(8).digest().to_base64())
        .header("transfer-encoding", "chunked")
        .signed()
        .body(body);
    fx.send(&wrong_sum)
        .reply()
        .assert_ebs(400, "ValidationException");
    fx.assert_intact("chunked, wrong checksum");
    fx.finish();
}

#[test]
fn slow_clients_time_out_and_never_starve_the_others() {
    let mut fx = Fixture::start();
    let list = format!("/snapshots/{}/blocks", fx.completed);

    // Slowloris: hundreds of connections that send nothing, or half a request line,
    // or trickle a head byte by byte.
    let mut idle: Vec<Conn> = (0..300).map(|_| fx.conn()).collect();
    for c in idle.iter_mut().step_by(2) {
        c.send(b"GET /snapshots/");
    }
    let trickled = fx.req("GET", &list).signed().bytes();
    let mut trickler = fx.conn();
    let mut writer = trickler.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in trickled.iter().take(200) {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Meanwhile, a well-behaved client is served.
    assert_eq!(fx.block_indexes(), fx.listing);
    // And the server lets go of every one of them (the head timeout is 2 s).
    for c in &mut idle {
        c.assert_closed_by_server();
    }
    trickler.assert_closed_by_server();
    trickle.join().unwrap();
    fx.assert_intact("slowloris");

    // A body trickled a byte at a time: 408 when the body timeout passes, while others
    // are served.
    let data = block(7);
    let mut slow = fx.conn();
    let mut put = fx
        .put_block(&fx.pending.to_string(), "0", &data.digest())
        .header("content-length", BLOCK.to_string())
        .signed()
        .bytes();
    put.extend_from_slice(&data.data()[..200]);
    let mut writer = slow.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in put {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            if b == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    assert_eq!(fx.block_indexes(), fx.listing);
    slow.read()
        .reply()
        .assert_ebs(408, "RequestTimeoutException");
    let _ = slow.stream.shutdown(Shutdown::Both);
    trickle.join().unwrap();
    fx.assert_intact("trickled body");

    // More stalled bodies than the server handles at once (128): they hold every turn
    // until the body timeout frees them, and then a well-behaved client is served.
    let head = fx
        .put_block(&fx.pending.to_string(), "0", &data.digest())
        .header("content-length", BLOCK.to_string())
        .signed()
        .bytes();
    // (Each head goes out as soon as its connection is made: a connect can take a
    // second on a busy machine, and this is not about slow heads.)
    let mut stalled: Vec<Conn> = (0..140)
        .map(|_| {
            let mut c = fx.conn();
            c.send(&head);
            c
        })
        .collect();
    assert_eq!(fx.block_indexes(), fx.listing);
    for c in &mut stalled {
        c.read().reply().assert_ebs(408, "RequestTimeoutException");
    }
    fx.assert_intact("stalled bodies");
    fx.finish();
}

#[test]
fn stale_and_replayed_signatures_are_refused() {
    let mut fx = Fixture::start();
    let list = format!("/snapshots/{}/blocks", fx.completed);
    let minutes = |m: u64| Duration::from_secs(60 * m);

    // Stale, and from the future: more than 15 minutes off.
    for when in [
        SystemTime::now() - minutes(20),
        SystemTime::now() + minutes(20),
    ] {
        let reply = fx.send(&fx.req("GET", &list).signed_at(when)).reply();
        reply.assert_ebs(403, "InvalidSignatureException");
        assert!(reply.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired"));
        fx.send(
            &Fixture::with_length(fx.req("POST", "/").body("Action=DescribeSnapshots"))
                .signed_at(when),
        )
        .reply()
        .assert_ec2(401, "AuthFailure");
    }
    fx.assert_intact("stale signatures");

    // A captured request, valid as sent, replayed elsewhere.
    let captured = fx.req("GET", &list).signed();
    assert_eq!(fx.send(&captured).reply().status, 200);
    let replay = |target: &str| Req {
        target: target.into(),
        ..captured.clone()
    };
    for target in [
        format!("/snapshots/{}/blocks", fx.pending),
        format!("{list}?maxResults=101"),
        format!("/snapshots/{}/changedblocks", fx.completed),
    ] {
        fx.send(&replay(&target))
            .reply()
            .assert_ebs(403, "InvalidSignatureException");
    }
    let other_method = Req {
        method: "POST".into(),
        ..captured.clone()
    };
    let reply = fx.send(&Fixture::with_length(other_method)).reply();
    assert!(
        reply.status == 403 || reply.status == 404,
        "{}",
        reply.text()
    );
    assert!(reply.headers.contains_key("x-amzn-errortype"));

    // A query byte that is not UTF-8, altered: the signature covers the bytes.
    let token = fx.req("GET", &format!("{list}?pageToken=%FF")).signed();
    fx.send(&token)
        .reply()
        .assert_ebs(400, "ValidationException");
    fx.send(&Req {
        target: format!("{list}?pageToken=%FE"),
        ..token
    })
    .reply()
    .assert_ebs(403, "InvalidSignatureException");

    // StartSnapshot: the body is signed, so another body is refused, with or without
    // an x-amz-content-sha256 header.
    let start = |body: &str| {
        Fixture::with_length(
            fx.req("POST", "/snapshots")
                .header("content-type", "application/json")
                .body(body.as_bytes()),
        )
    };
    let signed = start(r#"{"VolumeSize": 1, "ClientToken": "c"}"#).signed();
    let tampered = Fixture::with_length(Req {
        body: br#"{"VolumeSize": 64, "ClientToken": "c"}"#.to_vec(),
        ..signed.clone()
    });
    fx.send(&tampered)
        .reply()
        .assert_ebs(403, "InvalidSignatureException");
    let hashed = start(r#"{"VolumeSize": 1}"#)
        .header(
            "x-amz-content-sha256",
            hex::encode(Sha256::digest(br#"{"VolumeSize": 1}"#)),
        )
        .signed();
    let tampered = Fixture::with_length(Req {
        body: br#"{"VolumeSize": 2}"#.to_vec(),
        ..hashed
    });
    let reply = fx.send(&tampered).reply();
    reply.assert_ebs(403, "InvalidSignatureException");
    assert!(
        reply.text().contains("x-amz-content-sha256"),
        "{}",
        reply.text()
    );

    // PutSnapshotBlock: the body is not signed but its checksum is. Another index,
    // another snapshot, another checksum: refused; another body under the signed
    // checksum: refused by the checksum.
    let data = block(7);
    let pending = fx.pending.to_string();
    let put = fx
        .put_block(&pending, "0", &data.digest())
        .header("content-length", BLOCK.to_string())
        .signed()
        .body(data.data().to_vec());
    for target in [
        format!("/snapshots/{pending}/blocks/1"),
        format!("/snapshots/{}/blocks/0", fx.completed),
    ] {
        fx.send(&Req {
            target,
            ..put.clone()
        })
        .reply()
        .assert_ebs(403, "InvalidSignatureException");
    }
    let other = block(8);
    fx.send(
        &put.clone()
            .set("x-amz-checksum", other.digest().to_base64()),
    )
    .reply()
    .assert_ebs(403, "InvalidSignatureException");
    fx.send(&put.clone().body(other.data().to_vec()))
        .reply()
        .assert_ebs(400, "ValidationException")
        .assert_reason("INVALID_PARAMETER_VALUE");

    // Authorization headers that are not signatures.
    let garbled = fx
        .req("GET", &list)
        .signed()
        .set("authorization", b"AWS4-HMAC-SHA256 Credential=\xff\xfe");
    fx.send(&garbled)
        .reply()
        .assert_ebs(403, "IncompleteSignatureException");
    let no_host = fx.req("GET", &list).signed();
    let auth = String::from_utf8(
        no_host
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap()
    .replace("SignedHeaders=host;", "SignedHeaders=");
    fx.send(&no_host.set("authorization", auth))
        .reply()
        .assert_ebs(403, "IncompleteSignatureException");
    fx.assert_intact("replayed signatures");
    fx.finish();
}

#[test]
fn hostile_paths_and_ids_never_reach_the_filesystem() {
    let mut fx = Fixture::start();
    let (a, p) = (fx.completed.to_string(), fx.pending.to_string());

    // Strings that look like paths, where the API takes free text: stored as text
    // (and control characters refused).
    let nul = r#"{"VolumeSize": 1, "Description": "../../outside/evil\u0000"}"#;
    fx.send(&Fixture::with_length(fx.req("POST", "/snapshots").body(nul.as_bytes())).signed())
        .reply()
        .assert_ebs(400, "ValidationException")
        .assert_reason("INVALID_PARAMETER_VALUE");
    let hostile = r#"{"VolumeSize": 1, "Description": "../../outside/evil", "ClientToken": "../../../outside/token", "Tags": [{"Key": "../../outside/k", "Value": "/etc/passwd"}]}"#;
    let reply = fx
        .send(&Fixture::with_length(fx.req("POST", "/snapshots").body(hostile.as_bytes())).signed())
        .reply();
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["Description"], "../../outside/evil");
    let made: SnapshotId = reply.json()["SnapshotId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(fx.dir.path().join("outside").read_dir().unwrap().count() == 1);
    fx.rebaseline();

    let digest = block(7).digest();
    let ebs_cases: Vec<(Req, u16, &str, Option<&str>)> = vec![
        (
            fx.req("GET", "/snapshots/%2e%2e%2f%2e%2e%2foutside/blocks"),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.req(
                "GET",
                "/snapshots/..%2F..%2F..%2Fetc%2Fpasswd/blocks/0?blockToken=x",
            ),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.put_block("%2e%2e%2f%2e%2e%2foutside%2fevil", "0", &digest)
                .header("content-length", BLOCK.to_string())
                .body(block(7).data().to_vec()),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.req("POST", "/snapshots/completion/%2e%2e%2f%2e%2e%2foutside")
                .header("x-amz-changedblockscount", "0"),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.req(
                "GET",
                &format!("/snapshots/{a}/changedblocks?firstSnapshotId=..%2F..%2Foutside"),
            ),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.req("GET", "/snapshots/../../outside/blocks"),
            404,
            "UnknownOperationException",
            None,
        ),
        (
            fx.req("GET", "/snapshots/snap-0123456789abcdef0%00/blocks"),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.req("GET", "/snapshots/%FF%FE/blocks"),
            400,
            "ValidationException",
            Some("INVALID_PARAMETER_VALUE"),
        ),
        (
            fx.req(
                "GET",
                &format!("/snapshots/{a}/blocks/%2e%2e%2f1?blockToken=x"),
            ),
            400,
            "ValidationException",
            Some("INVALID_BLOCK"),
        ),
        (
            fx.put_block(&p, "18446744073709551616", &digest)
                .header("content-length", BLOCK.to_string())
                .body(block(7).data().to_vec()),
            400,
            "ValidationException",
            Some("INVALID_BLOCK"),
        ),
        (
            fx.put_block(&p, "99999999", &digest)
                .header("content-length", BLOCK.to_string())
                .body(block(7).data().to_vec()),
            400,
            "ValidationException",
            Some("INVALID_BLOCK"),
        ),
        (
            fx.put_block(&p, "0", &digest)
                .set("x-amz-checksum", b"\xff\xfe")
                .header("content-length", BLOCK.to_string())
                .body(block(7).data().to_vec()),
            400,
            "ValidationException",
            Some("INVALID_PARAMETER_VALUE"),
        ),
        (
            Fixture::with_length(
                fx.req("POST", "/snapshots")
                    .body(r#"{"VolumeSize": 1, "ParentSnapshotId": "../../outside/x"}"#),
            ),
            400,
            "ValidationException",
            Some("INVALID_SNAPSHOT_ID"),
        ),
        (
            fx.req("DELETE", &format!("/snapshots/{a}/blocks")),
            404,
            "UnknownOperationException",
            None,
        ),
        (
            fx.req("PATCH", "/snapshots"),
            404,
            "UnknownOperationException",
            None,
        ),
    ];
    for (req, status, error_type, reason) in ebs_cases {
        let case = req.target.clone();
        let reply = fx.send(&req.signed()).reply();
        reply.assert_ebs(status, error_type);
        if let Some(reason) = reason {
            reply.assert_reason(reason);
        }
        fx.assert_intact(&case);
    }

    let ec2_cases = [
        (
            "Action=DeleteSnapshot&SnapshotId=..%2F..%2Foutside",
            "InvalidSnapshotID.Malformed",
        ),
        (
            "Action=CreateTags&ResourceId.1=snap-..%2F..%2Fx&Tag.1.Key=k&Tag.1.Value=v",
            "InvalidSnapshotID.Malformed",
        ),
        (
            "Action=DescribeSnapshots&SnapshotId.1=%2e%2e%2f%2e%2e%2foutside",
            "InvalidSnapshotID.Malformed",
        ),
        ("Action=%FF%FE", "InvalidAction"),
    ];
    for (form, code) in ec2_cases {
        let req = Fixture::with_length(
            fx.req("POST", "/")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form),
        );
        fx.send(&req.signed()).reply().assert_ec2(400, code);
        fx.assert_intact(form);
    }
    // Form values that are not UTF-8 are matched as text, and match nothing.
    let odd = Fixture::with_length(
        fx.req("POST", "/")
            .body("Action=DescribeSnapshots&Filter.1.Name=description&Filter.1.Value.1=%FF*"),
    );
    let reply = fx.send(&odd.signed()).reply();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.text().contains("<item>"), "{}", reply.text());

    // Raw bytes that are not UTF-8 (nor URI characters) in the request target, and in
    // a header name: not HTTP, refused before the application.
    let mut raw = b"GET /snapshots/\xff\xfe/blocks HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    fx.send_raw(raw.clone()).assert_refused_or_closed(&[400]);
    raw = format!("GET /snapshots/{a}/blocks HTTP/1.1\r\nhost: x\r\n").into_bytes();
    raw.extend_from_slice(b"x-\xff: 1\r\n\r\n");
    fx.send_raw(raw).assert_refused_or_closed(&[400]);
    fx.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage".to_vec())
        .assert_refused_or_closed(&[400]);
    fx.assert_intact("bytes that are not HTTP");

    // The snapshot made with hostile strings is an ordinary one.
    let info = fx.rt.block_on(fx.client.describe_snapshot(&made)).unwrap();
    assert_eq!(info.description.as_deref(), Some("../../outside/evil"));
    fx.rt.block_on(fx.client.delete_snapshot(&made)).unwrap();
    fx.rebaseline();
    fx.finish();
}

/// The helpers above sign as the SDKs do: a request signed here is accepted (else every
/// refusal above would prove nothing), and a block sent that way lands.
#[test]
fn the_raw_client_here_is_a_valid_client() {
    let fx = Fixture::start();
    let data = block(7);
    let put = fx
        .put_block(&fx.pending.to_string(), "3", &data.digest())
        .header("content-length", BLOCK.to_string())
        .signed()
        .body(data.data().to_vec());
    let reply = fx.send(&put).reply();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let mut aggregate = LinearAggregate::new();
    aggregate.push(BlockIndex(3), &data.digest()).unwrap();
    fx.rt
        .block_on(
            fx.client
                .complete_snapshot(&fx.pending, 1, Some(aggregate.finish())),
        )
        .unwrap();
    let held = fx.rt.block_on(read_all(&fx.client, &fx.pending));
    assert_eq!(
        held.into_iter().collect::<Vec<_>>(),
        vec![(3, data.digest())]
    );
    let mut describe = Req::ec2("Action=DescribeSnapshots");
    describe
        .headers
        .insert(0, ("host".into(), fx.server.addr.clone().into()));
    let reply = fx.send(&Fixture::with_length(describe).signed()).reply();
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// `body` in HTTP/1.1 chunked encoding, in pieces of `piece` bytes.
fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A signed PutSnapshotBlock without its required checksum headers is the client's
/// modeled mistake (400 ValidationException naming the header), not a signature
/// that fails to match.
#[test]
fn a_put_without_its_checksum_headers_is_a_validation_error() {
    let mut fx = Fixture::start();
    let data = block(7);
    for missing in ["x-amz-checksum", "x-amz-checksum-algorithm"] {
        let put = fx
            .put_block(&fx.pending.to_string(), "3", &data.digest())
            .without(missing)
            .header("content-length", BLOCK.to_string())
            .signed()
            .body(data.data().to_vec());
        let reply = fx.send(&put).reply();
        reply.assert_ebs(400, "ValidationException");
        assert!(reply.text().contains(missing), "{}", reply.text());
        fx.assert_intact(missing);
    }
}

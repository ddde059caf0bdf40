//! Hostile load over TLS (`serve --tls-cert --tls-key`): connections that stall
//! before their ClientHello, in the middle of it, or after a record header that
//! promises 16 KiB, and connections that send garbage, while more keep arriving. A
//! handshake holds a connection slot, unproven, for at most the head timeout: a fresh
//! legitimate client (its own connection and handshake) is still answered within 2 s,
//! the server's memory stays under 256 MiB, and every stalled connection is let go.

use super::*;
use crate::common::tls::Certs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A ClientHello cut short: its record and handshake headers announce 508 bytes, and
/// 40 of them come.
fn partial_client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0x5a; 32]);
    hello
}

/// What attacker `n` sends before stalling.
fn attack(n: usize) -> Vec<u8> {
    match n % 4 {
        0 => Vec::new(),
        1 => partial_client_hello(),
        // A record header promising the most a record may hold, then half of it.
        2 => [&[0x16, 0x03, 0x03, 0x40, 0x00][..], &[0u8; 8192]].concat(),
        _ => b"\x16\x03\x01\xff\xffgarbage that is no TLS at all".to_vec(),
    }
}

/// Opens a connection and sends `bytes` on it (the server may already be closing it).
fn stall(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let _ = stream.write_all(bytes);
    stream
}

/// Waits until the server closes `stream` (a TLS alert may come first): panics on a
/// hang.
fn assert_let_go(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("a stalled handshake was kept: {e}"),
        }
    }
}

struct TlsFixture {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    certs: Certs,
    server: ServeProcess,
    completed: SnapshotId,
    blocks: BTreeMap<u64, Digest>,
}

impl TlsFixture {
    fn start(extra: &[&str]) -> TlsFixture {
        let dir = tempfile::tempdir().unwrap();
        for d in ["cwd", "xdg"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let certs = Certs::new();
        let tls = certs.serve_args();
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        let args = [QUICK, extra, &tls[..]].concat();
        let (store, cwd, xdg) = (
            dir.path().join("store"),
            dir.path().join("cwd"),
            dir.path().join("xdg"),
        );
        let server = ServeProcess::start(&store, &cwd, &xdg, &args);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(server.client_trusting(Some(&certs.ca)));
        let completed = rt.block_on(snapshot_with(&client, None, 1, &[(0, 1), (5, 2), (9, 3)]));
        let blocks = rt.block_on(read_all(&client, &completed));
        TlsFixture {
            rt,
            _dir: dir,
            certs,
            server,
            completed,
            blocks,
        }
    }

    /// A new client (a connection and handshake of its own) reads the snapshot's
    /// blocks within 2 s, and the server's memory stays under 256 MiB.
    fn assert_served(&self, case: &str) {
        let client = self
            .rt
            .block_on(self.server.client_trusting(Some(&self.certs.ca)));
        let started = std::time::Instant::now();
        let blocks = self.rt.block_on(read_all(&client, &self.completed));
        let took = started.elapsed();
        assert_eq!(blocks, self.blocks, "{case}");
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
}

/// Item (TLS): a handshake must count toward the connection limit and finish within
/// the head timeout, or clients that open connections and stall mid-handshake (or
/// send garbage) would hold every slot.
#[test]
fn stalled_and_garbage_handshakes_never_starve_a_client() {
    let fx = TlsFixture::start(&["--max-connections", "64"]);
    let addr = fx.server.addr.clone();
    // Five times the connection limit, stalled in every way.
    let mut stalled: Vec<TcpStream> = (0..320).map(|n| stall(&addr, &attack(n))).collect();
    fx.assert_served("stalled handshakes");
    // And while more keep coming, a new one every few milliseconds.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut opened = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                opened.push(stall(&addr, &attack(opened.len())));
                std::thread::sleep(Duration::from_millis(5));
            }
            opened
        })
    };
    for round in 0..5 {
        fx.assert_served(&format!("handshakes arriving, round {round}"));
    }
    stop.store(true, Ordering::Relaxed);
    stalled.extend(churn.join().unwrap());
    // Every one of them is let go: evicted, refused, or timed out after 2 s.
    for stream in &mut stalled {
        assert_let_go(stream);
    }
    fx.assert_served("after the attack");
    assert!(
        !fx.server.stderr().contains("panicked"),
        "{}",
        fx.server.stderr()
    );
}

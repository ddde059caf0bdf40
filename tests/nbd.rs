//! `ebsnap nbd` against real clients from Debian (libnbd-bin: nbdinfo, nbdcopy;
//! qemu-utils: qemu-img), on the local store and through `ebsnap serve`. Each test
//! skips loudly where a client is missing (scripts/test installs them).

mod common;

use common::recover::*;
use common::*;
use std::path::{Path, PathBuf};

/// 40 blocks and three pages: the last block is partial. Data at the start, in the
/// middle, and in the last block; holes between.
fn image(env: &Env) -> (PathBuf, u64) {
    let image = env.path("image");
    let size = 40 * BLOCK + 3 * 4096;
    let regions = [
        (0, 3 * BLOCK as usize),
        (20 * BLOCK + 100, 5 * BLOCK as usize),
        (size - 1000, 1000),
    ];
    make_image(&image, size, &regions, 15);
    (image, size)
}

/// The extents `nbdinfo --map` prints: (offset, length, hole).
fn map(uri: &str) -> Vec<(u64, u64, bool)> {
    run_ok("nbdinfo", &["--map", uri])
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let kind: u32 = f[2].parse().unwrap();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), kind & 1 != 0)
        })
        .collect()
}

/// The extents the snapshot of `image` should show: its data blocks, merged.
fn expected_map(image: &Path, size: u64) -> Vec<(u64, u64, bool)> {
    let data = data_blocks(image);
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for block in 0..size.div_ceil(BLOCK) {
        let (start, end) = (block * BLOCK, ((block + 1) * BLOCK).min(size));
        let hole = !data.contains(&block);
        match out.last_mut() {
            Some(last) if last.2 == hole => last.1 += end - start,
            _ => out.push((start, end - start, hole)),
        }
    }
    out
}

fn serves_real_clients(env: &Env, location: &Location, extra: &[&str]) {
    if !(have("nbdinfo", "nbd") && have("nbdcopy", "nbd")) {
        return;
    }
    let (image, size) = image(env);
    let id = location.backup(env, &image);
    let server = location.nbd(env, &id, extra);
    let uri = server.nbd_uri();
    assert_eq!(
        run_ok("nbdinfo", &["--size", &uri]).trim(),
        size.to_string()
    );
    assert_eq!(map(&uri), expected_map(&image, size));
    // nbdcopy reads over several connections at once; two copies run side by side.
    let copies: Vec<PathBuf> = (0..2).map(|n| env.path(&format!("copy{n}.img"))).collect();
    std::thread::scope(|s| {
        for copy in &copies {
            let uri = &uri;
            s.spawn(move || run_ok("nbdcopy", &[uri, copy.to_str().unwrap()]));
        }
    });
    for copy in &copies {
        assert_same_content(&image, copy);
    }
    if have("qemu-img", "nbd: qemu-img") {
        through_qemu(env, &uri, &image);
    }
    let (status, stdout) = server.terminate();
    assert!(status.success(), "{status}: {stdout}");
    assert!(stdout.contains("stopped serving"), "{stdout}");
}

/// qemu-img: convert to qcow2 and back is identical; an overlay reads the snapshot.
fn through_qemu(env: &Env, uri: &str, image: &Path) {
    let (qcow, raw) = (env.path("conv.qcow2"), env.path("conv.raw"));
    let p = |path: &PathBuf| path.to_str().unwrap().to_owned();
    run_ok(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", uri, &p(&qcow)],
    );
    run_ok(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", &p(&qcow), &p(&raw)],
    );
    assert_same_content(image, &raw);
    let (overlay, through) = (env.path("overlay.qcow2"), env.path("overlay.raw"));
    run_ok(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            uri,
            "-F",
            "raw",
            &p(&overlay),
        ],
    );
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            &p(&overlay),
            &p(&through),
        ],
    );
    assert_same_content(image, &through);
}

#[test]
fn real_clients_read_the_local_store() {
    let env = Env::new();
    serves_real_clients(&env, &Location::local(&env), &[]);
}

#[test]
fn real_clients_read_through_ebsnap_serve() {
    let env = Env::new();
    // A cache of two blocks: what is read again is fetched again, and still right.
    serves_real_clients(&env, &Location::served(&env), &["--cache-size", "1M"]);
}

#[test]
fn a_damaged_block_is_an_error_never_wrong_data() {
    if !(have("nbdcopy", "damaged block") && have("nbdinfo", "damaged block")) {
        return;
    }
    let env = Env::new();
    let location = Location::local(&env);
    let image = env.dense_image("image", 4, 7);
    let id = location.backup(&env, &image);
    damage(&env.store(), 2);
    let server = location.nbd(&env, &id, &[]);
    let uri = server.nbd_uri();
    let copy = env.path("copy.img");
    let out = std::process::Command::new("nbdcopy")
        .args([&uri, copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a damaged block was copied: {}",
        text(&out)
    );
    assert!(text(&out).contains("Input/output error"), "{}", text(&out));
    let log = server.stderr();
    assert!(log.contains(&format!("snapshot {id}, block")), "{log}");
    // The server goes on serving what is whole.
    assert_eq!(
        run_ok("nbdinfo", &["--size", &uri]).trim(),
        (4 * BLOCK).to_string()
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn only_loopback_unless_allowed_and_a_unix_socket_works() {
    let env = Env::new();
    let location = Location::local(&env);
    let image = env.dense_image("image", 2, 3);
    let id = location.backup(&env, &image);
    let out = location
        .command(&env, &["nbd", &id, "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-remote"), "{}", text(&out));
    if !have("nbdcopy", "unix socket") {
        return;
    }
    let socket = env.path("nbd.sock");
    let listen = format!("unix:{}", socket.display());
    let mut command = location.command(&env, &["--json", "nbd", &id, "--listen", &listen]);
    command.env("EBSNAP_LOG", "ebsnap=info");
    let server = Running::start(command, false);
    wait_until("the socket exists", || socket.exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is the owner's only");
    let copy = env.path("copy.img");
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    run_ok("nbdcopy", &[&uri, copy.to_str().unwrap()]);
    assert_same_content(&image, &copy);
    let (status, stdout) = server.terminate();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["blocks_fetched"], 2, "{report}");
    assert_eq!(report["bytes_read"], 2 * BLOCK, "{report}");
    assert!(
        !socket.exists(),
        "the socket is removed when the server stops"
    );
}

/// A client of our own, speaking the protocol byte by byte: what Debian's clients
/// never send (writes to a read-only export, garbage) gets the answer the spec asks.
mod raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn be32(v: u32) -> [u8; 4] {
        v.to_be_bytes()
    }

    /// Negotiates the default export with NBD_OPT_GO, without structured replies.
    pub fn go(addr: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        s.write_all(&be32(3)).unwrap();
        let mut option = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
        option.extend_from_slice(&be32(7));
        option.extend_from_slice(&be32(6));
        option.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        s.write_all(&option).unwrap();
        loop {
            let mut head = [0u8; 20];
            s.read_exact(&mut head).unwrap();
            let kind = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
            std::io::copy(&mut (&mut s).take(u64::from(len)), &mut std::io::sink()).unwrap();
            if kind == 1 {
                return s;
            }
        }
    }

    /// Sends one request (with `payload`); returns the simple reply's error.
    pub fn request(s: &mut TcpStream, kind: u16, offset: u64, length: u32, payload: &[u8]) -> u32 {
        let mut r = be32(0x2560_9513).to_vec();
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&42u64.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&length.to_be_bytes());
        r.extend_from_slice(payload);
        s.write_all(&r).unwrap();
        let mut reply = [0u8; 16];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(u64::from_be_bytes(reply[8..].try_into().unwrap()), 42);
        u32::from_be_bytes(reply[4..8].try_into().unwrap())
    }
}

#[test]
fn writes_trims_and_flushes_get_eperm_and_garbage_is_dropped() {
    use std::io::{Read, Write};
    let env = Env::new();
    let location = Location::local(&env);
    let image = env.dense_image("image", 2, 4);
    let id = location.backup(&env, &image);
    let server = location.nbd(&env, &id, &[]);
    let addr = server.nbd_uri().trim_start_matches("nbd://").to_owned();
    let mut s = raw::go(&addr);
    assert_eq!(
        raw::request(&mut s, 1, 0, 4096, &[0xaa; 4096]),
        1,
        "write: EPERM"
    );
    assert_eq!(raw::request(&mut s, 4, 0, 4096, &[]), 1, "trim: EPERM");
    assert_eq!(raw::request(&mut s, 3, 0, 0, &[]), 1, "flush: EPERM");
    assert_eq!(
        raw::request(&mut s, 0, 2 * BLOCK, 1, &[]),
        22,
        "past the end: EINVAL"
    );
    assert_eq!(raw::request(&mut s, 0, BLOCK, 4096, &[]), 0);
    let mut data = vec![0u8; 4096];
    s.read_exact(&mut data).unwrap();
    let original = std::fs::read(&image).unwrap();
    assert!(data[..] == original[BLOCK as usize..BLOCK as usize + 4096]);
    // The write changed nothing.
    assert_eq!(raw::request(&mut s, 0, 0, 4096, &[]), 0);
    s.read_exact(&mut data).unwrap();
    assert!(data[..] == original[..4096]);
    // Garbage: the connection is closed, the server serves on.
    let mut bad = std::net::TcpStream::connect(&addr).unwrap();
    let mut greeting = [0u8; 18];
    bad.read_exact(&mut greeting).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(raw::request(&mut s, 0, 0, 512, &[]), 0);
    drop(s);
    let (status, _) = server.terminate();
    assert!(status.success());
}

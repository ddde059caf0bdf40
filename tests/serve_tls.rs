//! `ebsnap serve --tls-cert --tls-key` and the EBS client's custom CA bundle
//! (`AWS_CA_BUNDLE`, the profile's `ca_bundle`), end to end: the real binary serving
//! HTTPS on 127.0.0.1:0 with certificates made here by openssl, ebsnap's own client
//! and boto3 against it. Also: what the client says of an answer that is not XML.

mod common;

use common::server::{ServeProcess, KEY_ID, SECRET};
use common::tls::Certs;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A TLS test: a test directory, certificates, and a server using them.
struct Tls {
    env: Env,
    certs: Certs,
    server: ServeProcess,
}

impl Tls {
    fn start() -> Tls {
        let env = Env::new();
        let certs = Certs::new();
        for d in ["cwd", "xdg"] {
            std::fs::create_dir(env.path(d)).unwrap();
        }
        let args = certs.serve_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ServeProcess::start(&env.store(), &env.path("cwd"), &env.path("xdg"), &args);
        Tls { env, certs, server }
    }

    /// `ebsnap --store ebs+URL ARGS --json -q`, isolated from the machine's AWS setup
    /// (no config file, no AWS_CA_BUNDLE) unless the caller adds to it.
    fn ebsnap(&self, args: &[&str]) -> Command {
        client(&self.env, &self.server.url, args)
    }
}

fn client(env: &Env, url: &str, args: &[&str]) -> Command {
    let mut command = env.bare();
    command
        .arg("--store")
        .arg(format!("ebs+{url}"))
        .args(["--region", "us-east-1", "--json", "-q"])
        .args(args)
        .env("HOME", env.path("home"))
        .env_remove("AWS_CA_BUNDLE");
    env.aws_client(&mut command, (KEY_ID, SECRET));
    command
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Backup, restore and verify of an image through `tls`'s server, each command
/// configured by `trust` (which says where the CA is).
fn round_trip(tls: &Tls, trust: impl Fn(&mut Command)) {
    let image = tls.env.path("image");
    let size = 12 * BLOCK + 777;
    make_image(
        &image,
        size,
        &[(0, 2 * BLOCK as usize), (9 * BLOCK, 3 * BLOCK as usize)],
        5,
    );
    let run = |args: &[&str]| {
        let mut command = tls.ebsnap(args);
        trust(&mut command);
        ok_json(command.output().unwrap())
    };
    let img = image.to_str().unwrap();
    let backup = run(&["backup", img]);
    let id = backup["snapshot_id"].as_str().unwrap().to_owned();
    assert_eq!(backup["source_bytes"], size);
    let restored = tls.env.path("restored");
    run(&["restore", &id, restored.to_str().unwrap()]);
    assert_same_content(&image, &restored);
    let verify = run(&["verify", &id, "--against", img]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["aggregate_ok"], true, "{verify}");
}

#[test]
fn serve_prints_its_https_url_and_ebsnap_round_trips_with_aws_ca_bundle() {
    let tls = Tls::start();
    assert!(
        tls.server.url.starts_with("https://127.0.0.1:"),
        "{}",
        tls.server.url
    );
    round_trip(&tls, |c| {
        c.env("AWS_CA_BUNDLE", &tls.certs.ca);
    });
}

#[test]
fn the_profiles_ca_bundle_is_trusted_too() {
    let tls = Tls::start();
    // The selected profile's ca_bundle, not another profile's.
    let config = tls.env.path("aws-config");
    let text = format!(
        "[default]\nca_bundle = /nonexistent/ca.pem\n\n[profile backups]\nca_bundle = {}\n",
        tls.certs.ca.display()
    );
    std::fs::write(&config, text).unwrap();
    round_trip(&tls, |c| {
        c.env("AWS_CONFIG_FILE", &config)
            .env("AWS_PROFILE", "backups");
    });
    // And `--profile` selects it as well.
    let out = tls
        .ebsnap(&["snapshots"])
        .env("AWS_CONFIG_FILE", &config)
        .args(["--profile", "backups"])
        .output()
        .unwrap();
    assert_eq!(ok_json(out)["snapshots"].as_array().unwrap().len(), 1);
}

/// Without the CA, the server's certificate is refused: said plainly, once (not
/// retried with backoff for a minute), naming the endpoint.
#[test]
fn without_the_bundle_the_certificate_is_refused_clearly() {
    let tls = Tls::start();
    let started = Instant::now();
    let out = tls.ebsnap(&["snapshots"]).output().unwrap();
    let took = started.elapsed();
    let stderr = failed(&out);
    assert!(stderr.contains("is not trusted"), "{stderr}");
    assert!(stderr.contains(&tls.server.url), "{stderr}");
    assert!(stderr.contains("AWS_CA_BUNDLE"), "{stderr}");
    // Ten attempts with backoff take over a minute: this one gave up at once.
    assert!(took < Duration::from_secs(30), "took {took:?}: retried");
    // A bundle with another CA in it: refused the same way.
    let other = Certs::new();
    let out = tls
        .ebsnap(&["snapshots"])
        .env("AWS_CA_BUNDLE", &other.ca)
        .output()
        .unwrap();
    assert!(failed(&out).contains("is not trusted"));
    // The block requests' own client (src/store/ebs/http.rs) refuses it the same way.
    let image = tls.env.path("image");
    make_image(&image, 2 * BLOCK, &[(0, BLOCK as usize)], 3);
    let out = tls
        .ebsnap(&["backup", "--full", image.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("StartSnapshot"), "{stderr}");
    assert!(stderr.contains("is not trusted"), "{stderr}");
    assert!(stderr.contains(&tls.server.url), "{stderr}");
}

#[test]
fn an_unusable_bundle_is_an_error_naming_the_file() {
    let tls = Tls::start();
    let missing = tls.env.path("missing.pem");
    let out = tls
        .ebsnap(&["snapshots"])
        .env("AWS_CA_BUNDLE", &missing)
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains(missing.to_str().unwrap()) && stderr.contains("AWS_CA_BUNDLE"),
        "{stderr}"
    );
    let garbage = tls.env.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let out = tls
        .ebsnap(&["snapshots"])
        .env("AWS_CA_BUNDLE", &garbage)
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains(garbage.to_str().unwrap()) && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
    // A PEM block that is not a certificate the client could use.
    let broken = tls.env.path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let config = tls.env.path("aws-config");
    std::fs::write(
        &config,
        format!("[default]\nca_bundle = {}\n", broken.display()),
    )
    .unwrap();
    let out = tls
        .ebsnap(&["snapshots"])
        .env("AWS_CONFIG_FILE", &config)
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains(broken.to_str().unwrap()) && stderr.contains("ca_bundle"),
        "{stderr}"
    );
}

#[test]
fn boto3_writes_reads_and_describes_over_tls() {
    let tls = Tls::start();
    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tls_boto3.py");
    let mut boto3 = Command::new(&python);
    boto3
        .arg(script)
        .arg(&tls.server.url)
        .arg(&tls.certs.ca)
        .env_remove("AWS_CA_BUNDLE");
    let out = tls
        .env
        .aws_client(&mut boto3, (KEY_ID, SECRET))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("ok snap-"),
        "boto3: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Plain HTTP sent to the TLS port gets no HTTP answer and a closed connection, and
/// the server goes on serving.
#[test]
fn plain_http_to_the_tls_port_fails_cleanly() {
    let tls = Tls::start();
    let mut stream = TcpStream::connect(&tls.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /snapshots/snap-0/blocks HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // (At most a TLS alert: a record of type 21.)
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    let out = tls
        .ebsnap(&["snapshots"])
        .env("AWS_CA_BUNDLE", &tls.certs.ca)
        .output()
        .unwrap();
    ok_json(out);
    assert!(
        !tls.server.stderr().contains("panicked"),
        "{}",
        tls.server.stderr()
    );
}

/// A certificate or key `serve` cannot use stops it before it listens, naming the file.
#[test]
fn bad_certificate_and_key_files_are_refused_at_start() {
    let env = Env::new();
    let certs = Certs::new();
    let serve = |cert: &Path, key: &Path| -> String {
        let out = env
            .bare()
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(env.store())
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env("EBSNAP_ACCESS_KEY_ID", KEY_ID)
            .env("EBSNAP_SECRET_ACCESS_KEY", SECRET)
            .output()
            .unwrap();
        failed(&out)
    };
    let named = |stderr: String, path: &Path, what: &str| {
        assert!(
            stderr.contains(path.to_str().unwrap()) && stderr.contains(what),
            "{stderr}"
        );
    };
    named(
        serve(&certs.cert, &certs.other_key),
        &certs.other_key,
        "does not match",
    );
    let missing = env.path("missing.key");
    named(serve(&certs.cert, &missing), &missing, "cannot read");
    // A certificate given as the key, and a key given as the certificate.
    let cert_as_key = env.path("cert-as-key.pem");
    std::fs::copy(&certs.cert, &cert_as_key).unwrap();
    chmod(&cert_as_key, 0o600);
    named(
        serve(&certs.cert, &cert_as_key),
        &cert_as_key,
        "no private key",
    );
    named(
        serve(&certs.key, &certs.key),
        &certs.key,
        "no PEM certificate",
    );
    // A private key that others can read, as ssh refuses one.
    let exposed = env.path("exposed.key");
    std::fs::copy(&certs.key, &exposed).unwrap();
    chmod(&exposed, 0o644);
    named(
        serve(&certs.cert, &exposed),
        &exposed,
        "readable by group or others",
    );
    // One without the other is a usage error.
    let out = env
        .bare()
        .args(["serve", "--store"])
        .arg(env.store())
        .arg("--tls-cert")
        .arg(&certs.cert)
        .output()
        .unwrap();
    assert!(failed(&out).contains("--tls-key"));
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// SIGTERM over TLS: the server stops cleanly, as it does over HTTP, without waiting
/// for a client stalled in its handshake (whose head timeout is 30 s).
#[test]
fn a_tls_server_shuts_down_gracefully() {
    let tls = Tls::start();
    ok_json(
        tls.ebsnap(&["snapshots"])
            .env("AWS_CA_BUNDLE", &tls.certs.ca)
            .output()
            .unwrap(),
    );
    let mut stalled = TcpStream::connect(&tls.server.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(tls.server.pid() as i32, libc::SIGTERM) },
        0
    );
    let mut server = tls.server;
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.alive() {
        assert!(
            Instant::now() < deadline,
            "the server waited for the stalled handshake"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.stderr().contains("stopped"), "{}", server.stderr());
}

/// An endpoint whose DescribeSnapshots answer is not XML: `snapshots` says so, naming
/// the operation and the endpoint, instead of a generic failure.
#[test]
fn an_answer_that_is_not_xml_is_reported_clearly() {
    let env = Env::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = "<?xml version=\"1.0\"?><DescribeSnapshotsResponse><snapshotSet><item>\u{fffe}";
    std::thread::spawn(move || answer_all(listener, body));
    let out = client(&env, &url, &["snapshots"]).output().unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("DescribeSnapshots"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the EBS endpoint {url} sent an answer that is not valid XML"
        )),
        "{stderr}"
    );
}

/// A tiny HTTP responder: every request gets 200 with `body` as text/xml.
fn answer_all(listener: TcpListener, body: &'static str) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut request_body = vec![0; length];
        let _ = stream.read_exact(&mut request_body);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/xml;charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes());
    }
}

/// `HTTPS_PROXY` is followed by every request, the block requests' included, with a
/// CA bundle too: the endpoint's port has nothing listening on it, and only the proxy
/// knows where the server is.
#[test]
fn every_request_goes_through_the_proxy_the_environment_names() {
    let tls = Tls::start();
    let server = tls.server.url.trim_start_matches("https://").to_owned();
    let unreachable = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("localhost:{}", unreachable.local_addr().unwrap().port());
    drop(unreachable);
    let proxy = ConnectProxy::start(&endpoint, &server);
    let image = tls.env.path("image");
    make_image(&image, 3 * BLOCK, &[(0, 2 * BLOCK as usize)], 9);
    let run = |args: &[&str]| {
        let mut command = client(&tls.env, &format!("https://{endpoint}"), args);
        command
            .env("AWS_CA_BUNDLE", &tls.certs.ca)
            .env("HTTPS_PROXY", &proxy.url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        ok_json(command.output().unwrap())
    };
    let backup = run(&["backup", image.to_str().unwrap()]);
    let id = backup["snapshot_id"].as_str().unwrap().to_owned();
    let restored = tls.env.path("restored");
    run(&["restore", &id, restored.to_str().unwrap()]);
    assert_same_content(&image, &restored);
    assert!(proxy.tunnels() > 0);
}

/// An HTTP CONNECT proxy on 127.0.0.1 that tunnels requests for `endpoint` to `server`.
struct ConnectProxy {
    url: String,
    tunnels: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnectProxy {
    fn start(endpoint: &str, server: &str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tunnels = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, endpoint, server) = (tunnels.clone(), endpoint.to_owned(), server.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (count, endpoint, server) = (count.clone(), endpoint.clone(), server.clone());
                std::thread::spawn(move || {
                    if tunnel(client, &endpoint, &server) {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        ConnectProxy { url, tunnels }
    }

    fn tunnels(&self) -> usize {
        self.tunnels.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one CONNECT request; for `endpoint`, answers 200 and splices the client with
/// `server` until either side closes.
fn tunnel(mut client: TcpStream, endpoint: &str, server: &str) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return false;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let asked = head
        .strip_prefix("CONNECT ")
        .and_then(|r| r.split_whitespace().next());
    if asked != Some(endpoint) {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        return false;
    }
    let upstream = TcpStream::connect(server).unwrap();
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let sending = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (upstream, client);
    let _ = std::io::copy(&mut from_server, &mut to_client);
    let _ = to_client.shutdown(std::net::Shutdown::Write);
    let _ = sending.join();
    true
}

#![allow(dead_code)]
//! Certificates for TLS tests, made at test time with the openssl CLI: a CA, a server
//! certificate it signed for 127.0.0.1 and localhost, and a key that matches nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    _dir: tempfile::TempDir,
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The server's certificate, signed by `ca`.
    pub cert: PathBuf,
    /// The server's private key, 0600.
    pub key: PathBuf,
    /// Another private key, 0600: a key that does not match `cert`.
    pub other_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` making an EC P-256 key `name.key` and, with `extra`, a certificate or
/// request.
fn new_key(dir: &Path, name: &str, extra: &[&str]) {
    let key = format!("{name}.key");
    let args = [
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.as_str(),
        ][..],
        extra,
    ]
    .concat();
    openssl(dir, &args);
    std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        new_key(
            d,
            "ca",
            &[
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=ebsnap test CA",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        new_key(
            d,
            "server",
            &["-subj", "/CN=localhost", "-out", "server.csr"],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
        );
        new_key(d, "other", &["-subj", "/CN=other", "-out", "other.csr"]);
        Certs {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            other_key: d.join("other.key"),
            _dir: dir,
        }
    }

    /// `--tls-cert CERT --tls-key KEY`, for `serve`.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

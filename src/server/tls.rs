//! TLS for `ebsnap serve` (`--tls-cert FILE --tls-key FILE`).
//!
//! Over plain HTTP the key id and every block cross the network in clear, and a signed
//! request can be replayed for 15 minutes by whoever saw it. This is rustls with the
//! aws-lc-rs provider: the TLS stack the AWS SDK's client already links, not a second
//! one. HTTP/1.1 only, as the server is.
//!
//! A handshake is part of the connection it starts: it holds one of the connection
//! slots (and can be evicted from it while unproven), and it must finish within the
//! head timeout (see `connections::drive`).

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is wrong with a certificate or key file, naming it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it ({message})")]
    NoCertificate { path: PathBuf, message: String },
    #[error("{path}: no private key in it: give an unencrypted PEM key (PKCS#8, PKCS#1 or SEC1) ({message})")]
    NoKey { path: PathBuf, message: String },
    #[error("{path}: unsupported private key: {message}")]
    UnsupportedKey { path: PathBuf, message: String },
    #[error("{key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A private key that others can read is not private (ssh refuses such keys too).
    #[error("{path} is readable by group or others (mode {mode:03o}): a private key must be 0600 or 0400 (chmod 600 {path})")]
    KeyExposed { path: PathBuf, mode: u32 },
}

/// The server's TLS side: a certificate chain and its key, ready to accept.
#[derive(Clone)]
pub struct Tls {
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads `cert` (a PEM chain, the server's certificate first) and `key` (its PEM
    /// private key, readable by its owner only).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read_private(key)?;
        Tls::from_pem(&cert_pem, &key_pem, cert, key)
    }

    /// [`Tls::load`] on the files' contents; `cert` and `key` name them in errors.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert: &Path,
        key: &Path,
    ) -> Result<Tls, TlsError> {
        let chain = certificates(cert_pem, cert)?;
        let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
            path: key.into(),
            message: pem_message(e),
        })?;
        let config = config(chain, private, cert, key)?;
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The rustls configuration connections are accepted with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.acceptor.config().clone()
    }
}

/// The crypto provider: the one the AWS SDK's HTTPS client uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn config(
    chain: Vec<CertificateDer<'static>>,
    private: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::UnsupportedKey {
            path: key.into(),
            message: e.to_string(),
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: cert.into(),
                key: key.into(),
            })
        }
        Err(rustls::Error::InconsistentKeys(_)) | Ok(()) => {}
        Err(e) => return Err(invalid(cert, e)),
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert, e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // A client that can only speak h2 is refused in the handshake, not after it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn invalid(path: &Path, e: rustls::Error) -> TlsError {
    TlsError::Invalid {
        path: path.into(),
        message: e.to_string(),
    }
}

/// The certificates of a PEM file: at least one, and each one parses.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let no_certificate = |message: String| TlsError::NoCertificate {
        path: path.into(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_certificate(pem_message(e)))?;
    let Some(first) = chain.first() else {
        return Err(no_certificate("no CERTIFICATE section".into()));
    };
    rustls::server::ParsedCertificate::try_from(first)
        .map_err(|e| no_certificate(format!("the first certificate does not parse: {e}")))?;
    Ok(chain)
}

fn pem_message(e: pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no such PEM section".into(),
        other => other.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

/// Reads a private key file, refusing one that group or others may read: the mode of
/// the file opened, not of a path that could change in between.
fn read_private(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |source| TlsError::Read {
        path: path.into(),
        source,
    };
    use std::io::Read;
    let mut file = crate::sys::open_checked(path, fail, |meta| {
        let mode = meta.permissions().mode() & 0o777;
        match mode & 0o077 {
            0 => Ok(()),
            _ => Err(TlsError::KeyExposed {
                path: path.into(),
                mode,
            }),
        }
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(fail)?;
    Ok(bytes)
}

//! The local store's encryption keys: a key file holding one or more named 256-bit
//! keys (docs/store-format.md, "Encryption"). The first key is the default; a
//! `KmsKeyArn` (`arn:aws:kms:…:key/NAME`, `key/NAME` or `NAME`) selects another.
//!
//! A key is known to the store only by its id, a fingerprint that tells which key a
//! snapshot needs without revealing the key: so a missing or wrong key is told apart
//! from damage.

use super::crypt::BlockKey;
use crate::store::{StoreError, StoreResult};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name the first key of a new key file gets.
pub const DEFAULT_KEY_NAME: &str = "default";

/// The file as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileToml {
    key: Vec<KeyToml>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyToml {
    name: String,
    /// Base64 of 32 random bytes.
    secret: String,
}

/// One key: its name in the file, its fingerprint, and what it encrypts with.
#[derive(Debug)]
pub struct NamedKey {
    pub name: String,
    pub id: String,
    pub(super) block: BlockKey,
}

/// The keys of one key file, the first being the default.
#[derive(Debug)]
pub struct Keyring {
    pub path: PathBuf,
    pub keys: Vec<Arc<NamedKey>>,
}

/// The fingerprint of a key: HMAC-SHA256 of a fixed label under the key, 16 bytes in
/// hex. One-way, so storing it beside the data gives nothing away.
pub(super) fn key_id(secret: &[u8; 32]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(b"ebsnap key id v1");
    hex::encode(&mac.finalize().into_bytes()[..16])
}

impl Keyring {
    /// Reads the key file at `path`, judged by the mode and owner of the file opened.
    pub fn read(path: &Path) -> StoreResult<Keyring> {
        let io = |e| StoreError::io(format!("reading key file {}", path.display()), e);
        let raw = crate::sys::read_checked(path, io, |meta| check_mode(path, meta))?;
        Keyring::parse(path, &raw)
    }

    fn parse(path: &Path, raw: &str) -> StoreResult<Keyring> {
        let bad = |m: String| StoreError::corrupt(format!("key file {}", path.display()), m);
        let file: KeyFileToml = toml::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let mut keys: Vec<Arc<NamedKey>> = Vec::new();
        for k in file.key {
            let secret: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .ok()
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "key {:?}: secret is not base64 of 32 bytes",
                        k.name
                    ))
                })?;
            let id = key_id(&secret);
            if keys.iter().any(|o| o.name == k.name || o.id == id) {
                return Err(bad(format!("key {:?} is there twice", k.name)));
            }
            let block = BlockKey::new(&secret, &id);
            keys.push(Arc::new(NamedKey {
                name: k.name,
                id,
                block,
            }));
        }
        if keys.is_empty() {
            return Err(bad("it holds no [[key]]".into()));
        }
        Ok(Keyring {
            path: path.to_owned(),
            keys,
        })
    }

    /// Creates a key file with one new random key, named [`DEFAULT_KEY_NAME`]: 0600,
    /// in a 0700 directory, never through a link and never over an existing file (a
    /// key file is never replaced: it is the only way to the data).
    pub fn create(path: &Path) -> StoreResult<Keyring> {
        let io = |e| StoreError::io(format!("creating key file {}", path.display()), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::sys::private_dir_all(dir).map_err(io)?;
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let text = key_file_text(DEFAULT_KEY_NAME, &secret);
        let mut file = crate::sys::private_options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::sys::sync_dir(dir).map_err(io)?;
        }
        Keyring::parse(path, &text)
    }

    /// The key a `KmsKeyArn` names (the default one when none is given).
    pub fn select(&self, kms_key_arn: Option<&str>) -> Option<&Arc<NamedKey>> {
        match kms_key_arn {
            None => self.keys.first(),
            Some(arn) => self.keys.iter().find(|k| k.name == key_name(arn)),
        }
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<NamedKey>> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// The key name in a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/NAME`), a
/// `key/NAME`, or a bare name.
pub fn key_name(arn: &str) -> &str {
    arn.rsplit_once("key/").map_or(arn, |(_, name)| name)
}

fn key_file_text(name: &str, secret: &[u8; 32]) -> String {
    let file = KeyFileToml {
        key: vec![KeyToml {
            name: name.to_owned(),
            secret: base64::engine::general_purpose::STANDARD.encode(secret),
        }],
    };
    let body = toml::to_string(&file).expect("a key file serializes");
    format!(
        "# ebsnap encryption keys (docs/security.md). Keep a copy of this file apart from\n\
         # the store: without it, the snapshots encrypted with these keys cannot be read.\n\
         # The first key is the default; a KmsKeyArn ending in key/NAME selects another.\n{body}"
    )
}

/// A key file that another user owns, or that group or others may write, is refused:
/// whoever can change it chooses the key new backups are encrypted with. One that
/// others may read is allowed (a group of operators, say), but it is said.
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> StoreResult<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    let foreign = meta.uid() != crate::sys::euid() && meta.uid() != 0;
    if foreign || mode & 0o022 != 0 {
        return Err(StoreError::AccessDenied {
            message: format!(
                "key file {} (mode {mode:o}, uid {}) may be changed by another user: make it yours and chmod 600 it",
                path.display(),
                meta.uid()
            ),
        });
    }
    if mode & 0o044 != 0 {
        tracing::warn!(
            "key file {} has mode {mode:o}: others may read the key (chmod 600 it)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_file_reads_back_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/k.toml");
        let made = Keyring::create(&path).unwrap();
        let read = Keyring::read(&path).unwrap();
        assert_eq!(made.keys[0].id, read.keys[0].id);
        assert_eq!(read.keys[0].name, DEFAULT_KEY_NAME);
        assert!(
            Keyring::create(&path).is_err(),
            "never over an existing file"
        );
    }

    #[test]
    fn an_arn_selects_a_key_by_name_and_none_selects_the_first() {
        let s = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let t = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let raw = format!(
            "[[key]]\nname = \"a\"\nsecret = \"{s}\"\n[[key]]\nname = \"b\"\nsecret = \"{t}\"\n"
        );
        let ring = Keyring::parse(Path::new("k"), &raw).unwrap();
        assert_eq!(ring.select(None).unwrap().name, "a");
        let arn = "arn:aws:kms:us-east-1:111122223333:key/b";
        assert_eq!(ring.select(Some(arn)).unwrap().name, "b");
        assert!(ring.select(Some("key/c")).is_none());
        assert_ne!(ring.keys[0].id, ring.keys[1].id);
    }

    #[test]
    fn a_key_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        Keyring::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = Keyring::read(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            Keyring::read(&path).is_ok(),
            "readable by the group: said, not refused"
        );
    }

    #[test]
    fn a_damaged_key_file_is_refused() {
        for raw in [
            "",
            "[[key]]\nname = \"a\"\nsecret = \"c2hvcnQ=\"\n",
            "x = 1",
        ] {
            assert!(Keyring::parse(Path::new("k"), raw).is_err(), "{raw:?}");
        }
    }
}

//! Encrypted snapshots in the local store: which key a snapshot is encrypted with,
//! finding it (or saying clearly why it cannot be found), and sealing and opening the
//! blocks (see `crypt` for the scheme).
//!
//! Every snapshot of an encrypted lineage uses the key its first snapshot was started
//! with, so every stored block of its chain opens with that one key.

use super::keys::{key_name, Keyring, NamedKey};
use super::map::{Location, Record, ZERO_PACK};
use super::meta::Meta;
use super::pack::{Packs, SlotWriter};
use super::store::{LocalStore, Shared};
use crate::block::{BufferPool, Digest, HashedBlock};
use crate::store::{StartSnapshot, StoreError, StoreResult, ValidationReason};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the keys of encrypted snapshots come from: a key file, read when it is set
/// and created by the first encrypted start if it does not exist yet.
#[derive(Debug, Default)]
pub(super) struct KeySource {
    path: Option<PathBuf>,
    ring: Option<Arc<Keyring>>,
}

impl LocalStore {
    /// Sets the key file of encrypted snapshots, and reads it if it exists. Without
    /// one, encrypted snapshots can neither be started nor read.
    pub fn set_key_file(&self, path: &Path) -> StoreResult<()> {
        let ring = match path.exists() {
            true => Some(Arc::new(Keyring::read(path)?)),
            false => None,
        };
        let mut keys = self.shared.keys();
        keys.path = Some(path.to_owned());
        keys.ring = ring;
        Ok(())
    }
}

impl Shared {
    pub(super) fn keys(&self) -> std::sync::MutexGuard<'_, KeySource> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keyring, made (with a new key file) if there is none yet.
    fn keyring_or_create(&self) -> StoreResult<Arc<Keyring>> {
        let mut keys = self.keys();
        if let Some(ring) = &keys.ring {
            return Ok(ring.clone());
        }
        let path = keys.path.clone().ok_or_else(no_key_file)?;
        let ring = match Keyring::create(&path) {
            Ok(ring) => {
                tracing::warn!(
                    "created the encryption key file {}: keep a copy apart from the store; without it the encrypted snapshots cannot be read",
                    path.display()
                );
                ring
            }
            // Made since this store was opened, by another ebsnap sharing the file (a
            // backup into another store, or `serve`): that key is the one to use. A
            // long-running `serve` otherwise failed every encrypted start until restarted.
            Err(e) if already_exists(&e) => Keyring::read(&path)?,
            Err(e) => return Err(e),
        };
        let ring = Arc::new(ring);
        keys.ring = Some(ring.clone());
        Ok(ring)
    }

    /// The key a new snapshot is encrypted with: its parent's, else the one its
    /// KmsKeyArn names, else the default one. `None`: not encrypted.
    pub(super) fn start_key(
        &self,
        req: &StartSnapshot,
        parent: Option<&Meta>,
    ) -> StoreResult<Option<Arc<NamedKey>>> {
        if let Some(parent) = parent.filter(|p| p.encrypted) {
            let key = self.snapshot_key(parent)?.ok_or_else(|| legacy(parent))?;
            // Compared by the key named: `key/NAME` and a full ARN may name one key.
            let named = req.kms_key_arn.as_deref().map(key_name);
            if named.is_some_and(|n| Some(n) != parent.key_name.as_deref()) {
                return Err(invalid_key(
                    "KmsKeyArn differs from the parent's: a child is encrypted with its parent's key",
                ));
            }
            return Ok(Some(key));
        }
        if !req.encrypted {
            return match &req.kms_key_arn {
                Some(_) => Err(invalid_key("KmsKeyArn is given without Encrypted")),
                None => Ok(None),
            };
        }
        let ring = self.keyring_or_create()?;
        let arn = req.kms_key_arn.as_deref();
        let key = ring.select(arn).ok_or_else(|| {
            invalid_key(format!(
                "KmsKeyArn {:?} names no key of key file {}",
                arn.unwrap_or_default(),
                ring.path.display()
            ))
        })?;
        Ok(Some(key.clone()))
    }

    /// The key an encrypted snapshot's blocks open with; `None` for a snapshot that is
    /// not encrypted (or was stored before ebsnap encrypted at rest: its blocks are
    /// plain). A key that is missing is an error naming the snapshot and the key.
    pub(super) fn snapshot_key(&self, meta: &Meta) -> StoreResult<Option<Arc<NamedKey>>> {
        let Some(id) = meta.key_id.as_deref() else {
            return Ok(None);
        };
        let keys = self.keys();
        // Only for an error: a put of every encrypted block comes through here.
        let wanted = || {
            format!(
                "key {:?} (id {id})",
                meta.key_name.as_deref().unwrap_or("?")
            )
        };
        let Some(ring) = &keys.ring else {
            let had = keys.path.as_ref().map_or_else(
                || "no key file is set".to_owned(),
                |p| format!("key file {} does not exist", p.display()),
            );
            return Err(StoreError::AccessDenied {
                message: format!(
                    "snapshot {} is encrypted with {}, and {had}: pass --key-file (or set EBSNAP_KEY_FILE) with the key file it was made with",
                    meta.id,
                    wanted()
                ),
            });
        };
        ring.by_id(id).cloned().map(Some).ok_or_else(|| StoreError::AccessDenied {
            message: format!(
                "the key in {} is not the one snapshot {} was encrypted with (it needs {}): pass --key-file with the key file it was made with",
                ring.path.display(),
                meta.id,
                wanted()
            ),
        })
    }
}

/// Whether creating the key file failed because a file (or link) is already there.
fn already_exists(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
}

fn no_key_file() -> StoreError {
    StoreError::AccessDenied {
        message: "an encrypted snapshot needs a key file, and none is set (--key-file)".into(),
    }
}

fn invalid_key(message: impl Into<String>) -> StoreError {
    StoreError::invalid(ValidationReason::InvalidCustomerKey, message)
}

/// A child of an encrypted snapshot stored in plain by an ebsnap from before
/// encryption at rest would mix plain and encrypted blocks: refused.
fn legacy(parent: &Meta) -> StoreError {
    StoreError::invalid(
        ValidationReason::InvalidParameterValue,
        format!(
            "parent {} is marked encrypted but was stored in plain by an older ebsnap; start a new lineage (--full)",
            parent.id
        ),
    )
}

/// The digest a block is recorded (and deduplicated) under.
pub(super) fn identity(key: Option<&NamedKey>, block: &HashedBlock) -> Digest {
    match key {
        Some(k) if !block.is_zero() => k.block.seal_digest(&block.digest()),
        _ => block.digest(),
    }
}

/// The SHA-256 of a recorded block. Zero blocks are never stored, so their record
/// holds the plain (well-known) zero-block digest.
pub(super) fn checksum(key: Option<&NamedKey>, record: &Record) -> Digest {
    match key {
        Some(k) if record.location.pack != ZERO_PACK => k.block.unseal_digest(&record.digest),
        _ => record.digest,
    }
}

/// Encrypts a block into a pooled, aligned buffer and writes it and its nonce and tag.
pub(super) fn write_encrypted(
    writer: &SlotWriter,
    key: &NamedKey,
    block: &HashedBlock,
    sealed: &Digest,
    pool: &BufferPool,
) -> StoreResult<()> {
    let mut buf = pool.take();
    buf.copy_from_slice(block.data());
    let entry = key.block.encrypt(&mut buf, sealed, writer.location);
    let written = writer.write(&buf).and_then(|()| writer.write_aead(&entry));
    pool.recycle(buf);
    written
}

/// Reads a block's data from its slot: as it is, or opened with `key` for a block of
/// an encrypted snapshot. `Ok(false)` as [`read_encrypted`] says.
pub(super) fn read_block(
    file: &File,
    aead: Option<&File>,
    key: Option<&NamedKey>,
    record: &Record,
    buf: &mut [u8],
) -> std::io::Result<bool> {
    match key {
        Some(key) => read_encrypted(file, aead, key, record, buf),
        None => Packs::read(file, record.location, buf).map(|()| true),
    }
}

/// Reads and opens an encrypted block. `Ok(false)`: it failed its tag (or has no
/// nonce), and `buf` is zeroed: the caller reports it as a block whose data does not
/// match its checksum, as it would a damaged plain block.
fn read_encrypted(
    file: &File,
    aead: Option<&File>,
    key: &NamedKey,
    record: &Record,
    buf: &mut [u8],
) -> std::io::Result<bool> {
    Packs::read(file, record.location, buf)?;
    let Some(entry) = Packs::read_aead(aead, record.location)? else {
        buf.fill(0);
        return Ok(false);
    };
    Ok(key
        .block
        .decrypt(buf, &record.digest, record.location, &entry))
}

/// A slot's place, for messages.
pub(super) fn slot_name(at: Location) -> String {
    format!("pack {:08x} slot {}", at.pack, at.slot)
}

pub(super) fn new_key_source() -> Mutex<KeySource> {
    Mutex::new(KeySource::default())
}

//! The store's directory: creating it, and checking what a crash or another version
//! left there.

use super::fsutil::{atomic_write, remove_if_present};
use crate::store::token::TokenKey;
use crate::store::{StoreError, StoreResult};
use std::path::Path;

pub(super) const FORMAT_FILE: &str = "ebsnap-store.json";
const FORMAT_NAME: &str = "ebsnap-local-store";
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(super) fn create_layout(root: &Path) -> StoreResult<()> {
    for dir in [root.join("packs"), root.join("snapshots")] {
        crate::sys::private_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
    }
    let key_path = root.join("key");
    if !key_path.exists() {
        atomic_write(&key_path, TokenKey::random().bytes())?;
    }
    let format_path = root.join(FORMAT_FILE);
    if !format_path.exists() {
        let format = serde_json::json!({ "format": FORMAT_NAME, "version": FORMAT_VERSION });
        atomic_write(&format_path, format.to_string().as_bytes())?;
    }
    Ok(())
}

pub(super) fn check_format(path: &Path) -> StoreResult<()> {
    let raw = std::fs::read(path)
        .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
    let corrupt = |m: String| StoreError::corrupt(path.display().to_string(), m);
    let value: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
    if value["format"] != FORMAT_NAME {
        return Err(corrupt("not an ebsnap local store".into()));
    }
    match value["version"].as_u64() {
        Some(v) if v == u64::from(FORMAT_VERSION) => Ok(()),
        v => Err(corrupt(format!(
            "store format version {v:?} is not supported (this ebsnap reads {FORMAT_VERSION})"
        ))),
    }
}

pub(super) fn read_key(path: &Path) -> StoreResult<TokenKey> {
    let raw = std::fs::read(path)
        .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| StoreError::corrupt(path.display().to_string(), "the key is not 32 bytes"))?;
    Ok(TokenKey::from_bytes(bytes))
}

/// Temporary files are what a crash left half-written: never part of the store.
pub(super) fn remove_temporaries(root: &Path) -> StoreResult<()> {
    for dir in [root.join("snapshots"), root.join("packs")] {
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                remove_if_present(&entry.path())?;
            }
        }
    }
    Ok(())
}

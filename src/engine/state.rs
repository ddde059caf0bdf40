//! Local state under `$XDG_STATE_HOME/ebsnap`: manifests of the sources backed up, and
//! records of the snapshot last restored onto each target.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// A short stable name for a (store, path) pair.
fn key(store: &str, path: &str) -> String {
    let digest = Sha256::digest(format!("{store}\n{path}").as_bytes());
    hex::encode(&digest[..16])
}

/// Where the manifest of `source` backed up into `store` lives.
pub fn manifest_path(state_dir: &Path, store: &str, source: &str) -> PathBuf {
    state_dir
        .join("manifests")
        .join(format!("{}.manifest", key(store, source)))
}

/// Which snapshot was last restored onto a target, completely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub store: String,
    pub target: String,
    pub snapshot_id: String,
    pub target_bytes: u64,
}

fn record_path(state_dir: &Path, store: &str, target: &str) -> PathBuf {
    state_dir
        .join("restores")
        .join(format!("{}.json", key(store, target)))
}

pub fn read_restore_record(state_dir: &Path, store: &str, target: &str) -> Option<RestoreRecord> {
    let raw = std::fs::read(record_path(state_dir, store, target)).ok()?;
    serde_json::from_slice::<RestoreRecord>(&raw)
        .ok()
        .filter(|r| r.store == store && r.target == target)
}

/// Saves the record crash-safely (temporary file, fsync, rename).
pub fn write_restore_record(state_dir: &Path, record: &RestoreRecord) -> Result<()> {
    let path = record_path(state_dir, &record.store, &record.target);
    let io = |e| Error::State {
        path: path.clone(),
        source: e,
    };
    std::fs::create_dir_all(path.parent().expect("a directory")).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(record).expect("serializable"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(path.parent().expect("a directory"))?.sync_all()
    };
    write().map_err(io)
}

/// Forgets the record (before a restore changes the target, so that an interrupted
/// restore is never mistaken for a finished one).
pub fn clear_restore_record(state_dir: &Path, store: &str, target: &str) {
    let _ = std::fs::remove_file(record_path(state_dir, store, target));
}

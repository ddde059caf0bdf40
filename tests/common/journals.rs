//! What a test can read of the upload journals a backup or copy leaves under
//! `STATE/uploads` (their format: src/engine/backup/journal.rs).

use std::path::{Path, PathBuf};

/// The upload journals in `uploads`.
pub fn journals(uploads: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(uploads)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect()
}

/// How far the (last listed) journal says every put is recorded: its header's JSON,
/// after the magic and the length. Records alone do not count: a run killed between
/// fsyncing them and raising this mark resumes none of them.
pub fn settled_below(uploads: &Path) -> u64 {
    let Some(journal) = journals(uploads).pop() else {
        return 0;
    };
    let head = std::fs::read(journal).unwrap_or_default();
    let Some(len) = head.get(8..12) else { return 0 };
    let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
    head.get(12..12 + len)
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(json).ok())
        .and_then(|header| header["settled_below"].as_u64())
        .unwrap_or(0)
}

//! Where ebsnap keeps things by default (the XDG base directories).

use std::ffi::OsString;
use std::path::PathBuf;

/// A variable's value; unset and empty are the same.
pub fn env_value(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn env_path(name: &str) -> Option<PathBuf> {
    env_value(name).map(PathBuf::from)
}

/// Local state (manifests, restore records): $XDG_STATE_HOME/ebsnap, else
/// ~/.local/state/ebsnap.
pub fn state_dir() -> PathBuf {
    env_path("XDG_STATE_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".ebsnap-state"))
        .join("ebsnap")
}

/// The key file of encrypted snapshots: beside the local state, apart from the store
/// (a key in the store's directory would be copied, and stolen, with the data).
pub fn key_file() -> PathBuf {
    state_dir().join("keys.toml")
}

/// The local store's default directory: $XDG_DATA_HOME/ebsnap/store, else
/// ~/.local/share/ebsnap/store.
pub fn data_store() -> PathBuf {
    env_path("XDG_DATA_HOME")
        .map(|d| d.join("ebsnap/store"))
        .or_else(|| env_path("HOME").map(|h| h.join(".local/share/ebsnap/store")))
        .unwrap_or_else(|| PathBuf::from("ebsnap-store"))
}

/// Where blocks read under `--freeze` wait for the upload: $XDG_CACHE_HOME/ebsnap/spool,
/// else ~/.cache/ebsnap/spool.
pub fn spool_dir() -> PathBuf {
    env_path("XDG_CACHE_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".ebsnap-cache"))
        .join("ebsnap/spool")
}

//! Where ebsnap keeps things by default (the XDG base directories).

use std::path::PathBuf;

/// A variable's value as a path; unset and empty are the same.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Local state (manifests, restore records): $XDG_STATE_HOME/ebsnap, else
/// ~/.local/state/ebsnap.
pub fn state_dir() -> PathBuf {
    env_path("XDG_STATE_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".ebsnap-state"))
        .join("ebsnap")
}

/// The store location when --store is not given: $EBSNAP_STORE, else the XDG data
/// directory.
pub fn default_store() -> PathBuf {
    env_path("EBSNAP_STORE")
        .or_else(|| env_path("XDG_DATA_HOME").map(|d| d.join("ebsnap/store")))
        .or_else(|| env_path("HOME").map(|h| h.join(".local/share/ebsnap/store")))
        .unwrap_or_else(|| PathBuf::from("ebsnap-store"))
}

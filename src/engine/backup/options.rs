//! What a backup is asked to do: the input of its plan.

use super::baseline::ParentChoice;
use super::consistency::Consistency;
use crate::engine::Stop;
use crate::store::Tag;
use crate::sys::LockWait;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub description: Option<String>,
    pub tags: Vec<Tag>,
    /// Puts in flight at once, at most (the flow finds how many below that).
    pub workers: usize,
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    pub parent: ParentChoice,
    /// Report what would be written, without starting a snapshot.
    pub dry_run: bool,
    /// Where manifests live (`$XDG_STATE_HOME/ebsnap`); `None`: no manifests.
    pub state_dir: Option<PathBuf>,
    /// What to do when another backup of the same source into the same store runs.
    pub lock_wait: LockWait,
    /// Asked to stop (a signal): the backup stops early and can be resumed.
    pub stop: Stop,
    /// Hooks, `--read-from` and `--freeze`.
    pub consistency: Consistency,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            description: None,
            tags: Vec::new(),
            workers: crate::engine::DEFAULT_WORKERS,
            encrypted: false,
            kms_key_arn: None,
            parent: ParentChoice::Auto,
            dry_run: false,
            state_dir: None,
            lock_wait: LockWait::Wait,
            stop: Stop::default(),
            consistency: Consistency::default(),
        }
    }
}

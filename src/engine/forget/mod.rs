//! Retention (`ebsnap forget`): per source, the snapshots a [`KeepPolicy`] does not keep
//! are deleted through the store's delete, which keeps their children whole.
//!
//! Plan, then apply, one source at a time: take the source's backup lock (so no
//! backup of it on this host starts a child of a snapshot being deleted), list the
//! store, judge the source's candidates ([`plan`], [`policy`]: pure), delete what goes.

mod plan;
pub mod policy;

pub use policy::{parse_keep_within, KeepPolicy, NEWEST_REASON};

use crate::engine::state::lock_source;
use crate::engine::{Error, Progress, Result, Stop};
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStore, StoreError, ValidationReason};
use crate::sys::LockWait;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// What a forget is asked to do.
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    pub policy: KeepPolicy,
    /// Only this source (the `ebsnap:source` tag's value: the path backed up).
    pub source: Option<String>,
    /// Decide, and report, without deleting.
    pub dry_run: bool,
    /// Where the source locks live (`$XDG_STATE_HOME/ebsnap`); `None`: no locks.
    pub state_dir: Option<PathBuf>,
    /// What to do while a backup of the source runs on this host.
    pub lock_wait: LockWait,
    /// Asked to stop (a signal): no deletion starts after it.
    pub stop: Stop,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        ForgetOptions {
            policy: KeepPolicy::default(),
            source: None,
            dry_run: false,
            state_dir: None,
            lock_wait: LockWait::Wait,
            stop: Stop::default(),
        }
    }
}

/// What was kept and what removed (with `dry_run`: would be removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    pub kept: Vec<ForgetEntry>,
    pub removed: Vec<ForgetEntry>,
    pub dry_run: bool,
}

/// One snapshot judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForgetEntry {
    pub snapshot_id: String,
    pub source: String,
    /// RFC 3339, UTC.
    pub start_time: String,
    /// Why it is kept (the policies that keep it); empty for one removed.
    pub reasons: Vec<String>,
}

impl ForgetEntry {
    fn new(s: &SnapshotInfo, source: &str, reasons: Vec<String>) -> ForgetEntry {
        ForgetEntry {
            snapshot_id: s.id.to_string(),
            source: source.to_owned(),
            start_time: humantime::format_rfc3339_seconds(s.start_time).to_string(),
            reasons,
        }
    }
}

/// Applies `options.policy` to every source's snapshots (or `options.source`'s). Stops
/// at the first failure with [`Error::ForgetIncomplete`], which holds what was done
/// before it, when anything was: running it again finishes the work.
///
/// `_progress` is not drawn: its units are bytes, and deletions are few; each one is
/// logged on a line of its own instead.
pub async fn forget(
    store: Arc<dyn SnapshotStore>,
    options: &ForgetOptions,
    _progress: &dyn Progress,
) -> Result<ForgetReport> {
    if options.policy.is_empty() {
        return Err(Error::EmptyPolicy);
    }
    let mut report = ForgetReport {
        dry_run: options.dry_run,
        ..ForgetReport::default()
    };
    match forget_all(&*store, options, &mut report).await {
        Ok(()) => Ok(report),
        Err(e) if report.removed.is_empty() => Err(e),
        Err(e) => Err(Error::ForgetIncomplete {
            report: Box::new(report),
            source: Box::new(e),
        }),
    }
}

async fn forget_all(
    store: &dyn SnapshotStore,
    options: &ForgetOptions,
    report: &mut ForgetReport,
) -> Result<()> {
    // Buckets are taken in local time: the TZ variable, else the system's zone.
    let tz = TimeZone::system();
    let listing = store.list_snapshots().await?;
    for source in plan::sources(&listing, options.source.as_deref()) {
        options.stop.check()?;
        forget_source(store, options, &tz, &source, &listing, report).await?;
    }
    Ok(())
}

/// Judges one source and deletes what goes, under its lock. The store is listed again
/// once the lock is held: a backup that ran meanwhile made a new newest snapshot.
async fn forget_source(
    store: &dyn SnapshotStore,
    options: &ForgetOptions,
    tz: &TimeZone,
    source: &str,
    listing: &[SnapshotInfo],
    report: &mut ForgetReport,
) -> Result<()> {
    let lock = source_lock(store, options, source).await?;
    let fresh = match lock {
        Some(_) => Some(store.list_snapshots().await?),
        None => None,
    };
    let decision = plan::decide(
        fresh.as_deref().unwrap_or(listing),
        source,
        &options.policy,
        tz,
        std::time::SystemTime::now(),
    );
    report.kept.extend(decision.kept);
    for (id, entry) in decision.remove {
        if options.dry_run {
            report.removed.push(entry);
            continue;
        }
        options.stop.check()?;
        delete(store, &id, entry, report).await?;
    }
    Ok(())
}

/// The lock a backup of `source` into this store holds, taken as `lock_wait` says.
/// A dry run deletes nothing and needs none.
async fn source_lock(
    store: &dyn SnapshotStore,
    options: &ForgetOptions,
    source: &str,
) -> Result<Option<std::fs::File>> {
    let Some(dir) = options.state_dir.as_ref().filter(|_| !options.dry_run) else {
        return Ok(None);
    };
    let identity = store.identity();
    let lock = lock_source(dir, &identity, source, options.lock_wait, &options.stop).await?;
    Ok(Some(lock))
}

/// Deletes one snapshot and records the outcome. One already gone is removed all the
/// same (another forget, or `ebsnap delete`, got there first). One that a child was
/// started on since the listing (a backup from another host) is kept: the store
/// refuses to delete the parent of an unfinished snapshot.
async fn delete(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    mut entry: ForgetEntry,
    report: &mut ForgetReport,
) -> Result<()> {
    match store.delete_snapshot(id).await {
        Ok(()) => tracing::info!("forget: deleted {id} of {}", entry.source),
        Err(StoreError::NotFound { .. }) => {
            tracing::info!("forget: {id} of {} was already gone", entry.source)
        }
        Err(StoreError::Invalid {
            reason: ValidationReason::InvalidDependencyRequest,
            message,
        }) => {
            tracing::warn!("forget: keeping {id}: {message}");
            entry
                .reasons
                .push("parent of a snapshot started since".into());
            report.kept.push(entry);
            return Ok(());
        }
        Err(e) => return Err(Error::store(id)(e)),
    }
    report.removed.push(entry);
    Ok(())
}

#[cfg(test)]
mod tests;

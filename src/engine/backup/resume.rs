//! What a backup does with the journal an interrupted run left: resume its pending
//! snapshot, finish the completion it had sent, send its StartSnapshot again, or give
//! it up and start afresh.

use super::baseline::ParentChoice;
use super::journal::{Completion, UploadJournal};
use crate::block::Digest;
use crate::engine::wait_until_completed;
use crate::engine::{Error, Result};
use crate::store::{SnapshotId, SnapshotStatus, SnapshotStore, StoreError};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A snapshot this close to its idle timeout is not resumed: the rerun needs time to
/// read up to where the interrupted run stopped before it writes again.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What an interrupted backup left that this one takes up.
pub(crate) enum Left {
    /// Its pending snapshot, to continue.
    Pending(UploadJournal),
    /// A StartSnapshot whose answer it never recorded, and that request's client token.
    /// Sent again with that token, StartSnapshot hands back the snapshot the first
    /// request may have made (the store keeps tokens), so none is left behind.
    StartInDoubt { client_token: String },
}

/// What the journal at `path` leaves for this backup (of `source`, asking for
/// `choice`): a pending snapshot that can and should be continued, or a start in doubt.
/// Anything else it left is settled here: a completion it had sent is finished; a
/// snapshot that cannot be resumed is deleted.
pub(crate) async fn take_over(
    store: &dyn SnapshotStore,
    path: &Path,
    choice: &ParentChoice,
    source: &str,
) -> Result<Option<Left>> {
    let journal = match UploadJournal::open(path) {
        Ok(Some(j)) => j,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!("ignoring an unreadable upload journal: {e}");
            let _ = std::fs::remove_file(path);
            return Ok(None);
        }
    };
    let header = journal.header().clone();
    if header.store != store.identity() || header.source != source {
        tracing::warn!("ignoring {}: it is not this backup's", path.display());
        forget(journal);
        return Ok(None);
    }
    let Some(started) = &header.snapshot_id else {
        // Left in place: the journal this backup makes replaces it, so a run killed
        // before that still finds the token.
        tracing::info!("sending again the StartSnapshot an interrupted run had sent");
        return Ok(Some(Left::StartInDoubt {
            client_token: header.client_token,
        }));
    };
    let Ok(id) = started.parse::<SnapshotId>() else {
        tracing::warn!(
            "ignoring {}: {started:?} is not a snapshot id",
            path.display()
        );
        forget(journal);
        return Ok(None);
    };
    if let Some(completion) = &header.completion {
        settle_completion(store, &id, completion, journal).await?;
        return Ok(None);
    }
    let status = match store.describe_snapshot(&id).await {
        Ok(info) => Some(info.status),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(Error::store(&id)(e)),
    };
    let why_not = match status {
        None => "it no longer exists".to_owned(),
        Some(s) if s != SnapshotStatus::Pending => format!("it is {s}"),
        Some(_) if journal.expired(SystemTime::now(), TIMEOUT_MARGIN) => {
            "its timeout has (nearly) passed".to_owned()
        }
        Some(_) if !choice.allows(header.parent.as_deref()) => {
            "this backup asks for another parent".to_owned()
        }
        Some(_) => {
            tracing::info!("resuming {id}, interrupted earlier");
            return Ok(Some(Left::Pending(journal)));
        }
    };
    tracing::warn!("not resuming the interrupted backup {id}: {why_not}; starting afresh");
    give_up(store, journal).await;
    Ok(None)
}

/// Settles a completion the interrupted run had sent: sends it again and waits for
/// the snapshot to complete. A snapshot that failed instead is given up, and a new
/// backup follows: kept, it would stop every later backup here. One that is still
/// `pending` when its completion is refused (sealing, or the store would not let us
/// ask) is kept with its journal for a later run: never deleted on a guess.
async fn settle_completion(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    completion: &Completion,
    journal: UploadJournal,
) -> Result<()> {
    let error = match finish_completion(store, id, completion).await {
        Ok(()) => {
            forget(journal);
            return Ok(());
        }
        Err(e) if e.worth_resuming() => return Err(e),
        Err(e) => e,
    };
    match store.describe_snapshot(id).await.map(|info| info.status) {
        Ok(SnapshotStatus::Completed) | Err(StoreError::NotFound { .. }) => forget(journal),
        Ok(SnapshotStatus::Error) => {
            tracing::warn!(
                "{id}, interrupted while completing, cannot complete ({error}); starting afresh"
            );
            give_up(store, journal).await;
        }
        Ok(SnapshotStatus::Pending) | Err(_) => return Err(error),
    }
    Ok(())
}

/// Deletes the journal's snapshot (unless it completed after all) and the journal.
pub(crate) async fn give_up(store: &dyn SnapshotStore, journal: UploadJournal) {
    if let Some(id) = journal.snapshot() {
        abandon(store, &id).await;
    }
    forget(journal);
}

/// Deletes a snapshot that will never be completed, so that no half-made snapshot stays.
/// A snapshot that did complete (the error came after) is never deleted.
pub(super) async fn abandon(store: &dyn SnapshotStore, id: &SnapshotId) {
    match store.describe_snapshot(id).await {
        Ok(info) if info.status == SnapshotStatus::Completed => {
            tracing::warn!("{id} completed although the backup reported an error; it is kept");
            return;
        }
        Err(StoreError::NotFound { .. }) => return,
        _ => {}
    }
    if let Err(e) = store.delete_snapshot(id).await {
        tracing::warn!("could not delete the unfinished snapshot {id}: {e}");
    }
}

fn forget(journal: UploadJournal) {
    let path = journal.path().to_owned();
    if let Err(e) = journal.remove() {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
}

/// Sends the interrupted run's CompleteSnapshot again (the same figures), and waits for
/// the snapshot to complete.
async fn finish_completion(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    completion: &Completion,
) -> Result<()> {
    let aggregate = Digest::from_base64(&completion.aggregate);
    let status = match store
        .complete_snapshot(id, completion.changed_blocks_count, aggregate)
        .await
    {
        Ok(status) => status,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(Error::store(id)(e)),
    };
    wait_until_completed(store, id, status).await?;
    tracing::info!("{id}, interrupted while completing, is now complete");
    Ok(())
}

impl ParentChoice {
    /// Whether a snapshot started with `parent` is what this choice asks for.
    fn allows(&self, parent: Option<&str>) -> bool {
        match self {
            ParentChoice::Auto => true,
            ParentChoice::Full => parent.is_none(),
            ParentChoice::Snapshot(p) => parent == Some(p.as_str()),
        }
    }
}

//! Starting a snapshot that an upload journal follows, and what a failure leaves of it.
//! Shared by backup and copy: both start a pending snapshot, put blocks into it with
//! the [`Uploader`](super::upload::Uploader), and complete it, so both resume the same way.

use super::journal::{UploadHeader, UploadJournal};
use super::resume::{abandon, give_up};
use crate::engine::{Error, Result};
use crate::store::StoreError;
use crate::store::{SnapshotId, SnapshotInfo, SnapshotStatus, SnapshotStore, StartSnapshot};
use std::path::PathBuf;

/// The `Timeout` ebsnap starts snapshots with: minutes a pending snapshot may sit idle
/// (EBS's default). An interrupted backup or copy can be resumed within that time.
pub(crate) const SNAPSHOT_TIMEOUT_MINUTES: u32 = 60;

/// Where a snapshot's journal goes, and what it records. Its client token and parent
/// are the StartSnapshot request's.
pub(crate) struct Journaled {
    pub path: PathBuf,
    pub header: UploadHeader,
}

/// Starts a new snapshot, and its journal when there is one. An interrupted run's
/// start in doubt (`in_doubt`, its client token) is taken up first: the token, sent
/// again, brings back the snapshot that run may have made.
pub(crate) async fn start(
    store: &dyn SnapshotStore,
    mut request: StartSnapshot,
    journal: Option<&Journaled>,
    in_doubt: Option<String>,
) -> Result<(SnapshotId, Option<UploadJournal>)> {
    if let Some(token) = in_doubt.filter(|_| journal.is_some()) {
        request.client_token = Some(token);
        let made = new_journal(journal, &request)?;
        match store.start_snapshot(request.clone()).await {
            Ok(info) if info.status == SnapshotStatus::Pending => {
                return started(store, info, made).await;
            }
            Ok(info) => {
                tracing::warn!(
                    "{}, started by an interrupted run, is {}: starting afresh",
                    info.id,
                    info.status
                );
                if info.status == SnapshotStatus::Error {
                    abandon(store, &info.id).await;
                }
            }
            // The store knows the token from another request: this run starts its
            // snapshot otherwise (new options, a new parent).
            Err(StoreError::Conflict { message }) => tracing::warn!(
                "not taking up the interrupted run's start ({message}); a snapshot it may have made goes to error after its timeout: delete it with `ebsnap delete`"
            ),
            Err(e) => return Err(start_failed(e, made)),
        }
        request.client_token = Some(new_client_token());
    }
    let made = new_journal(journal, &request)?;
    match store.start_snapshot(request).await {
        Ok(info) => started(store, info, made).await,
        Err(e) => Err(start_failed(e, made)),
    }
}

/// The journal of a snapshot about to be started. It names the client token before
/// StartSnapshot is sent: a run killed before the answer is recorded leaves the token
/// for the rerun to send again.
fn new_journal(
    journal: Option<&Journaled>,
    request: &StartSnapshot,
) -> Result<Option<UploadJournal>> {
    let Some(spec) = journal else {
        return Ok(None);
    };
    let header = UploadHeader {
        client_token: request.client_token.clone().unwrap_or_default(),
        parent: request.parent.as_ref().map(|p| p.to_string()),
        snapshot_id: None,
        ..spec.header.clone()
    };
    UploadJournal::create(&spec.path, header)
        .map(Some)
        .map_err(|e| Error::State {
            path: spec.path.clone(),
            source: e,
        })
}

/// Takes a started snapshot into use: checks it, and records it in the journal before
/// any block is put. A snapshot that cannot be used is deleted, then its journal.
async fn started(
    store: &dyn SnapshotStore,
    info: SnapshotInfo,
    journal: Option<UploadJournal>,
) -> Result<(SnapshotId, Option<UploadJournal>)> {
    let id = info.id.clone();
    let (error, journal) = match journal {
        _ if !info.block_size_ok() => (
            Error::BlockSize {
                got: info.block_size,
            },
            journal,
        ),
        None => return Ok((id, None)),
        Some(mut j) => match j.started(id.as_str()) {
            Ok(()) => return Ok((id, Some(j))),
            Err(e) => (
                Error::State {
                    path: j.path().to_owned(),
                    source: e,
                },
                Some(j),
            ),
        },
    };
    abandon(store, &id).await;
    if let Some(j) = journal {
        let _ = j.remove();
    }
    Err(error)
}

/// A StartSnapshot that failed. The snapshot may have been made all the same (the
/// answer was lost), so for a failure that a rerun can get past the journal stays, and
/// the rerun sends the same token again.
fn start_failed(e: StoreError, journal: Option<UploadJournal>) -> Error {
    let error = Error::from(e);
    if let Some(j) = journal.filter(|_| !error.worth_resuming()) {
        let _ = j.remove();
    }
    error
}

pub(crate) fn new_client_token() -> String {
    SnapshotId::generate().to_string()
}

/// What a failed upload leaves: a pending snapshot and its journal when a rerun can
/// resume it (or finish its completion), else nothing.
pub(crate) async fn fail(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    journal: Option<UploadJournal>,
    error: Error,
) -> Error {
    match journal {
        Some(j) if error.worth_resuming() => Error::Resumable {
            snapshot: id.clone(),
            timeout_minutes: j.header().timeout_minutes,
            source: Box::new(error),
        },
        Some(j) => {
            give_up(store, j).await;
            error
        }
        None => {
            abandon(store, id).await;
            error
        }
    }
}

/// Forgets a journal once its snapshot is complete; a journal that stays only warns.
pub(crate) fn finished(id: &SnapshotId, journal: Option<UploadJournal>) {
    if let Some(j) = journal {
        let path = j.path().to_owned();
        if let Err(e) = j.remove() {
            tracing::warn!("{id} is complete, but {} stays: {e}", path.display());
        }
    }
}

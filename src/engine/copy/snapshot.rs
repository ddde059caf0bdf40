//! Copying one snapshot: start its copy on the target (or take over the pending copy an
//! interrupted run left), send its blocks, complete it with the LINEAR aggregate, and
//! wait until it is sealed. The start, the journal and what a failure leaves are the
//! backup's ([`start`](crate::engine::backup::start)).

use super::plan::Step;
use super::send::{send, Job, Recorded, Sent};
use super::{CopiedSnapshot, CopyOptions, COPIED_FROM_TAG};
use crate::block::{volume_blocks, BLOCK_SIZE_U64};
use crate::engine::backup::journal::{UploadHeader, UploadJournal};
use crate::engine::backup::resume::{give_up, Left};
use crate::engine::backup::start::{
    self, fail, new_client_token, Journaled, SNAPSHOT_TIMEOUT_MINUTES,
};
use crate::engine::backup::upload::{self, Uploader};
use crate::engine::flow::Flow;
use crate::engine::{restored_size, wait_until_completed, Error, Progress, Result, MANAGED_TAG};
use crate::store::{
    SnapshotId, SnapshotInfo, SnapshotStatus, SnapshotStore, StartSnapshot, Tag, Transfer,
};
use std::sync::Arc;
use std::time::Instant;

/// The stores a copy goes between.
pub(super) struct Stores {
    pub from: Arc<dyn SnapshotStore>,
    pub to: Arc<dyn SnapshotStore>,
}

/// Copies `step`'s snapshot onto `parent` (the copy of its parent; `None` for the first
/// of a lineage). Returns the report entry and the copy.
pub(super) async fn copy_snapshot(
    stores: &Stores,
    step: Step,
    parent: Option<&SnapshotInfo>,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<(CopiedSnapshot, SnapshotInfo)> {
    let started = Instant::now();
    if !step.source.block_size_ok() {
        return Err(Error::BlockSize {
            got: step.source.block_size,
        });
    }
    options.stop.check()?;
    let (source, source_parent) = (step.source.clone(), step.parent.clone());
    let mut begun = begin(&*stores.to, step, parent, options).await?;
    let id = begun.id.clone();
    let job = Job {
        from: stores.from.clone(),
        source: &source.id,
        base: source_parent.as_ref().filter(|_| parent.is_some()),
        end: volume_blocks(source.volume_size_gib),
        zeros_from: begun
            .encrypted
            .then(|| parent.map_or(0, |p| volume_blocks(p.volume_size_gib))),
        skip_zero_data: parent.is_none() && !begun.encrypted,
        size: restored_size(&source),
        workers: options.workers,
        stop: &options.stop,
    };
    progress.start(&format!("copy {} -> {id}", source.id), job.size);
    let result = send_and_complete(stores, &job, &id, begun.journal.as_mut(), progress).await;
    progress.finish();
    let (sent, status) = match result {
        Ok(done) => done,
        Err(e) => return Err(fail(&*stores.to, &id, begun.journal, e).await),
    };
    // The completion was accepted: the copy is never deleted from here on.
    wait_until_completed(&*stores.to, &id, status).await?;
    start::finished(&id, begun.journal);
    let copy = stores
        .to
        .describe_snapshot(&id)
        .await
        .map_err(Error::store(&id))?;
    let report = CopiedSnapshot {
        from: source.id.to_string(),
        to: id.to_string(),
        parent: parent.map(|p| p.id.to_string()),
        from_parent: source_parent.map(|p| p.to_string()),
        blocks_copied: sent.written,
        bytes_copied: sent.written * BLOCK_SIZE_U64,
        zero_blocks_copied: sent.zeros,
        resumed: begun.resumed,
        blocks_resumed: sent.resumed,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, copy))
}

/// The pending copy blocks go into.
struct Begun {
    id: SnapshotId,
    journal: Option<UploadJournal>,
    /// Taken over from an interrupted run.
    resumed: bool,
    /// Every zero block must be written into it.
    encrypted: bool,
}

/// Starts the copy on the target, or takes over the one an interrupted run left.
async fn begin(
    to: &dyn SnapshotStore,
    step: Step,
    parent: Option<&SnapshotInfo>,
    options: &CopyOptions,
) -> Result<Begun> {
    let request = start_request(&step.source, parent, options);
    let encrypted = parent.map_or(request.encrypted, |p| p.encrypted);
    let journaled = step.journal_path.clone().map(|path| Journaled {
        path,
        header: journal_header(to, &step, &request, encrypted),
    });
    let (resume, in_doubt) = settle(to, step.left, journaled.as_ref()).await;
    let resumed = resume.is_some();
    let (id, journal) = match resume {
        Some(j) => (
            j.snapshot().expect("a resumed journal names its snapshot"),
            Some(j),
        ),
        None => start::start(to, request, journaled.as_ref(), in_doubt).await?,
    };
    Ok(Begun {
        id,
        journal,
        resumed,
        encrypted,
    })
}

/// What this run takes up of what an interrupted copy left: its pending snapshot, if
/// that was started the way this run would start it (else it is given up), or the
/// client token of a start in doubt.
async fn settle(
    to: &dyn SnapshotStore,
    left: Option<Left>,
    journaled: Option<&Journaled>,
) -> (Option<UploadJournal>, Option<String>) {
    match (left, journaled) {
        (Some(Left::Pending(j)), Some(spec)) if fits(j.header(), &spec.header) => {
            tracing::info!(
                "resuming the interrupted copy into {}",
                j.header().snapshot_id.as_deref().unwrap_or_default()
            );
            (Some(j), None)
        }
        (Some(Left::Pending(j)), _) => {
            tracing::warn!(
                "not resuming the interrupted copy into {}: it was started on another parent; starting afresh",
                j.header().snapshot_id.as_deref().unwrap_or_default()
            );
            give_up(to, j).await;
            (None, None)
        }
        (Some(Left::StartInDoubt { client_token }), _) => (None, Some(client_token)),
        (None, _) => (None, None),
    }
}

/// Whether a pending copy was started as this run would start it.
fn fits(started: &UploadHeader, wanted: &UploadHeader) -> bool {
    started.parent == wanted.parent
        && started.volume_size_gib == wanted.volume_size_gib
        && started.source_bytes == wanted.source_bytes
        && started.encrypted == wanted.encrypted
}

/// What the copy's journal records (the request fills in its client token).
fn journal_header(
    to: &dyn SnapshotStore,
    step: &Step,
    request: &StartSnapshot,
    encrypted: bool,
) -> UploadHeader {
    UploadHeader {
        store: to.identity(),
        source: step.name.clone(),
        source_bytes: restored_size(&step.source),
        snapshot_id: None,
        client_token: String::new(),
        parent: request.parent.as_ref().map(|p| p.to_string()),
        volume_size_gib: request.volume_size_gib,
        encrypted,
        timeout_minutes: SNAPSHOT_TIMEOUT_MINUTES,
        settled_below: 0,
        intent_below: 0,
        completion: None,
    }
}

/// The copy's StartSnapshot: the original's volume size, description and tags, with
/// `ebsnap:copied-from` naming the original; on the copy of its parent.
fn start_request(
    source: &SnapshotInfo,
    parent: Option<&SnapshotInfo>,
    options: &CopyOptions,
) -> StartSnapshot {
    let mut request = StartSnapshot::new(source.volume_size_gib);
    request.description = source.description.clone();
    request.tags = source
        .tags
        .iter()
        .filter(|t| t.key != COPIED_FROM_TAG && t.key != MANAGED_TAG)
        .cloned()
        .collect();
    request
        .tags
        .push(Tag::new(COPIED_FROM_TAG, source.id.to_string()));
    // A copy is ebsnap's own, whoever made the original: `forget` may remove it.
    request.tags.push(Tag::new(MANAGED_TAG, "true"));
    request.client_token = Some(new_client_token());
    request.timeout_minutes = Some(SNAPSHOT_TIMEOUT_MINUTES);
    request.parent = parent.map(|p| p.id.clone());
    if parent.is_none() {
        // A child inherits its parent's encryption; only a new lineage chooses.
        request.encrypted = source.encrypted || options.encrypted || options.kms_key_arn.is_some();
        request.kms_key_arn = options.kms_key_arn.clone();
    }
    request
}

/// Sends the blocks, then requests completion with the count and the aggregate.
async fn send_and_complete(
    stores: &Stores,
    job: &Job<'_>,
    id: &SnapshotId,
    mut journal: Option<&mut UploadJournal>,
    progress: &dyn Progress,
) -> Result<(Sent, SnapshotStatus)> {
    let recorded = recorded(journal.as_deref())?;
    let flow = Flow::new(job.workers, stores.to.pace(Transfer::Put));
    let mut uploader = Uploader::new(
        stores.to.clone(),
        id.clone(),
        journal.as_deref_mut(),
        job.end,
        flow,
        job.stop.clone(),
    );
    let sent = send(job, &mut uploader, recorded, progress).await;
    // The puts in flight finish and are recorded whatever happened: a resumed run
    // then knows exactly what got through.
    let completion = sent.as_ref().ok().map(|sent| (sent.count, sent.aggregate));
    let finished = uploader.finish(completion).await;
    drop(uploader);
    let sent = sent?;
    finished?;
    let status =
        upload::complete(stores.to.as_ref(), id, journal, sent.count, sent.aggregate).await?;
    Ok((sent, status))
}

/// What the journal of a resumed copy says was put already.
fn recorded(journal: Option<&UploadJournal>) -> Result<Recorded> {
    let Some(j) = journal else {
        return Ok(Recorded::default());
    };
    let put = j.put_blocks().map_err(|e| Error::State {
        path: j.path().to_owned(),
        source: e,
    })?;
    Ok(Recorded {
        put,
        doubt: j.uncertain(),
    })
}

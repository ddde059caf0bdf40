//! Backup: a source becomes a completed snapshot, sending only what changed.
//!
//! Plan first: open the source, load its manifest, choose the parent, learn what the
//! parent holds ([`Baseline`]), size the volume. Then stream: the reader yields ordered
//! batches of classified blocks; changed blocks (and blocks that became zeros where the
//! parent holds data) are put concurrently, bounded by a semaphore; the LINEAR
//! aggregate and the new manifest are fed in index order. The manifest is put in place
//! only after the snapshot has completed.
//!
//! With a state directory, an upload journal records what was put; a backup that stops
//! for a reason outside the snapshot (a signal, a crash, the network) keeps its pending
//! snapshot, and the same command run again resumes it ([`resume`]). A failure
//! that resuming cannot cure (the store refused what was sent) deletes the pending
//! snapshot, so no half-made snapshot is left behind.

pub(super) mod baseline;
mod consistency;
mod fetch;
mod freeze;
mod hooked;
pub(super) mod journal;
mod options;
mod plan;
mod reader;
mod report;
pub(super) mod resume;
mod spool;
pub(super) mod start;
pub(super) mod upload;

use super::{wait_until_completed, Progress, Stop, MANAGED_TAG, SOURCE_BYTES_TAG, SOURCE_PATH_TAG};
use super::{DEVICE_ID_TAG, DEVICE_PATH_TAG};
use crate::block::manifest::{ContentDigest, ManifestHeader, ManifestWriter, PendingManifest};
use crate::block::{blocks_for_bytes, Digest, HashedBlock, LinearAggregate, BLOCK_SIZE_U64};
use crate::engine::flow::Flow;
use crate::engine::{Error, Result};
use crate::store::{SnapshotId, SnapshotStatus, SnapshotStore, StartSnapshot, Tag, Transfer};
use journal::{UploadHeader, UploadJournal};
use plan::{plan, Plan};
use reader::ReadBlock;
use start::{fail, new_client_token, Journaled, SNAPSHOT_TIMEOUT_MINUTES};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use upload::Uploader;

pub use consistency::{
    Consistency, DEFAULT_FREEZE_TIMEOUT, DEFAULT_HOOK_TIMEOUT, DEFAULT_SPOOL_MAX,
};
pub use options::BackupOptions;
pub use report::BackupReport;

/// Backs up the file or block device at `path` into `store`.
pub async fn backup(
    store: Arc<dyn SnapshotStore>,
    path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let run = backup_between_hooks(store.clone(), path, options, progress);
    hooked::with_hooks(store.identity(), path, options, run).await
}

/// The backup itself, the hooks aside.
async fn backup_between_hooks(
    store: Arc<dyn SnapshotStore>,
    path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let mut plan = plan(&*store, path, options).await?;
    let parent = plan.baseline.parent.as_ref().map(|p| p.id.clone());
    let size = plan.source.size();
    let mut report = BackupReport {
        snapshot_id: None,
        parent_snapshot_id: parent.as_ref().map(|p| p.to_string()),
        volume_size_gib: plan.volume_size_gib,
        source_bytes: size,
        blocks_total: blocks_for_bytes(size),
        blocks_written: 0,
        blocks_zero: 0,
        blocks_unchanged: 0,
        bytes_written: 0,
        checksum: String::new(),
        dry_run: options.dry_run,
        resumed: plan.resume.is_some(),
        blocks_resumed: 0,
        seconds: 0.0,
        transfer_seconds: 0.0,
        frozen_seconds: None,
        post_hook_exit_code: None,
    };
    let sent = if options.dry_run {
        progress.start(&format!("dry run of {}", path.display()), size);
        let sent = send_blocks(&plan, None, None, &options.stop, progress).await;
        progress.finish();
        let mut sent = sent?.0;
        sent.written = sent.count; // what would be put
        sent
    } else {
        let resume = plan.resume.take();
        let (id, sent) = upload(&store, &plan, resume, options, progress).await?;
        report.snapshot_id = Some(id.to_string());
        sent
    };
    report.blocks_written = sent.written;
    report.blocks_resumed = sent.resumed;
    report.transfer_seconds = sent.transfer_seconds;
    report.frozen_seconds = sent.frozen_seconds;
    report.blocks_zero = report.blocks_total.saturating_sub(sent.data_blocks);
    report.blocks_unchanged = sent.unchanged;
    report.bytes_written = sent.written * BLOCK_SIZE_U64;
    report.checksum = sent.aggregate.to_base64();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Starts the snapshot (or takes over the interrupted one), sends the blocks, completes
/// it, then puts the manifest in place.
async fn upload(
    store: &Arc<dyn SnapshotStore>,
    plan: &Plan,
    resume: Option<UploadJournal>,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(SnapshotId, Sent)> {
    // Asked to stop while planning: no snapshot is started only to be left pending.
    options.stop.check()?;
    let (id, mut journal) = match resume {
        Some(j) => (
            j.snapshot()
                .expect("only a journal naming its snapshot is resumed"),
            Some(j),
        ),
        None => start(store, plan, options).await?,
    };
    progress.start(
        &format!("backup {} -> {id}", plan.source.path().display()),
        plan.source.size(),
    );
    let result = send_and_complete(store, plan, &id, journal.as_mut(), options, progress).await;
    progress.finish();
    let (sent, manifest, status) = match result {
        Ok(done) => done,
        Err(e) => return Err(fail(&**store, &id, journal, e).await),
    };
    // The store accepted the completion: from here on the snapshot is never deleted,
    // whatever happens while it seals (a rerun finishes waiting for it).
    wait_until_completed(&**store, &id, status).await?;
    if let (Some(pending), Some(path)) = (manifest, &plan.manifest_path) {
        // The snapshot is complete: a manifest that cannot be saved costs only the next
        // backup's speed, not this one's result.
        if let Err(e) = pending.commit() {
            tracing::warn!(
                "{id} is complete, but its manifest {} could not be saved: {e}",
                path.display()
            );
        }
    }
    start::finished(&id, journal);
    Ok((id, sent))
}

/// Starts a new snapshot, with its journal when there is a state directory (an
/// interrupted run's start in doubt taken up first).
async fn start(
    store: &Arc<dyn SnapshotStore>,
    plan: &Plan,
    options: &BackupOptions,
) -> Result<(SnapshotId, Option<UploadJournal>)> {
    let request = start_request(plan, options);
    let journal = plan.journal_path.as_ref().map(|path| Journaled {
        path: path.clone(),
        header: journal_header(&**store, plan),
    });
    start::start(
        &**store,
        request,
        journal.as_ref(),
        plan.client_token.clone(),
    )
    .await
}

/// What the journal of this backup's snapshot records (the request fills in its
/// client token and parent).
fn journal_header(store: &dyn SnapshotStore, plan: &Plan) -> UploadHeader {
    UploadHeader {
        store: store.identity(),
        source: plan.source_name.clone(),
        source_bytes: plan.source.size(),
        snapshot_id: None,
        client_token: String::new(),
        parent: None,
        volume_size_gib: plan.volume_size_gib,
        encrypted: plan.baseline.encrypted(),
        timeout_minutes: SNAPSHOT_TIMEOUT_MINUTES,
        settled_below: 0,
        intent_below: 0,
        completion: None,
    }
}

/// Sends what must be sent and requests completion.
async fn send_and_complete(
    store: &Arc<dyn SnapshotStore>,
    plan: &Plan,
    id: &SnapshotId,
    mut journal: Option<&mut UploadJournal>,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Sent, Option<PendingManifest>, SnapshotStatus)> {
    let manifest = match &plan.manifest_path {
        Some(p) => Some(ManifestWriter::create(p).map_err(|e| Error::State {
            path: p.clone(),
            source: e,
        })?),
        None => None,
    };
    let mut uploader = Uploader::new(
        store.clone(),
        id.clone(),
        journal.as_deref_mut(),
        plan.blocks_visited(),
        Flow::new(options.workers, store.pace(Transfer::Put)),
        options.stop.clone(),
    );
    let streamed = send_blocks(plan, Some(&mut uploader), manifest, &options.stop, progress).await;
    // Whatever happened, the puts in flight finish and are recorded before anything
    // else: a resumed run then knows exactly what got through.
    let completion = streamed
        .as_ref()
        .ok()
        .map(|(sent, _)| (sent.count, sent.aggregate));
    let finished = uploader.finish(completion).await;
    let written = uploader.written;
    let transfer_seconds = uploader.transfer_seconds();
    drop(uploader);
    let (mut sent, manifest) = streamed?;
    finished?;
    sent.written = written;
    sent.transfer_seconds = transfer_seconds;
    let status = upload::complete(store.as_ref(), id, journal, sent.count, sent.aggregate).await?;
    Ok((sent, manifest, status))
}

fn start_request(plan: &Plan, options: &BackupOptions) -> StartSnapshot {
    let mut request = StartSnapshot::new(plan.volume_size_gib);
    request.description = Some(
        options
            .description
            .clone()
            .unwrap_or_else(|| format!("ebsnap backup of {}", plan.identity.path)),
    );
    request.tags = options
        .tags
        .iter()
        .filter(|t| t.key != MANAGED_TAG)
        .cloned()
        .collect();
    request
        .tags
        .push(Tag::new(SOURCE_BYTES_TAG, plan.source.size().to_string()));
    request
        .tags
        .push(Tag::new(SOURCE_PATH_TAG, plan.source_name.clone()));
    // What `forget` may remove: ebsnap's own snapshots, never another tool's.
    request.tags.push(Tag::new(MANAGED_TAG, "true"));
    if plan.identity.stable_device_id {
        request.tags.extend([
            Tag::new(DEVICE_ID_TAG, plan.identity.key.clone()),
            Tag::new(DEVICE_PATH_TAG, plan.identity.path.clone()),
        ]);
    }
    request.client_token = Some(new_client_token());
    request.timeout_minutes = Some(SNAPSHOT_TIMEOUT_MINUTES);
    request.parent = plan.baseline.parent.as_ref().map(|p| p.id.clone());
    if request.parent.is_none() {
        // A child inherits its parent's encryption; only a new lineage chooses.
        request.encrypted = options.encrypted || options.kms_key_arn.is_some();
        request.kms_key_arn = options.kms_key_arn.clone();
    }
    request
}

/// What was sent: what CompleteSnapshot needs, and counts for the report.
struct Sent {
    /// Blocks the snapshot holds of its own (CompleteSnapshot's count).
    count: u64,
    aggregate: Digest,
    /// Of those, put by this run.
    written: u64,
    /// Of those, found already put by an interrupted run.
    resumed: u64,
    /// Blocks of the source holding something other than zeros.
    data_blocks: u64,
    unchanged: u64,
    transfer_seconds: f64,
    frozen_seconds: Option<f64>,
}

/// Streams the source through the reader and writes what must be written: through the
/// `uploader`, or nowhere for a dry run. Feeds the new manifest. Stops early, with
/// [`Error::Interrupted`], when `stop` is requested.
async fn send_blocks(
    plan: &Plan,
    mut uploader: Option<&mut Uploader<'_>>,
    mut manifest: Option<ManifestWriter>,
    stop: &Stop,
    progress: &dyn Progress,
) -> Result<(Sent, Option<PendingManifest>)> {
    let source = &plan.source;
    let (mut batches, frozen) = freeze::read_stage(
        plan,
        // The reader keeps spare buffers for the blocks the uploader holds.
        uploader.as_deref().map_or(0, Uploader::workers),
        // A manifest to write or compare with: only then are content digests needed (a
        // manifest the baseline uses comes from the same state directory).
        plan.manifest_path.is_some(),
    )
    .await?;
    let mut aggregate = LinearAggregate::new();
    let (mut data_blocks, mut unchanged, mut resumed) = (0, 0, 0);
    loop {
        let batch = tokio::select! {
            biased;
            e = stop.stopped() => return Err(e),
            batch = batches.recv() => match batch {
                Some(batch) => batch?,
                None => break,
            },
        };
        for block in batch {
            let index = block.index();
            let done = (index.offset() + BLOCK_SIZE_U64).min(source.size());
            let data = match block {
                ReadBlock::Changed(_, data, digest) => {
                    data_blocks += 1;
                    record(&mut manifest, index.0, digest.as_ref()).map_err(state_error(plan))?;
                    data
                }
                ReadBlock::Unchanged(_, digest) => {
                    data_blocks += 1;
                    unchanged += 1;
                    record(&mut manifest, index.0, Some(&digest)).map_err(state_error(plan))?;
                    progress.set(done);
                    continue;
                }
                ReadBlock::Zero(_) if plan.baseline.zero_needs_write(index) => HashedBlock::zero(),
                ReadBlock::Zero(_) => {
                    unchanged += u64::from(plan.baseline.parent.is_some());
                    progress.set(done);
                    continue;
                }
            };
            let digest = data.digest();
            aggregate
                .push(index, &digest)
                .expect("the reader yields ascending indexes");
            if let Some(up) = uploader.as_deref_mut() {
                if plan.baseline.put_recorded(index) && up.already_put(index, &digest)? {
                    resumed += 1;
                } else {
                    up.put(index, data).await?;
                }
            }
            progress.set(done);
        }
    }
    progress.set(source.size());
    let pending = match manifest {
        Some(w) => Some(
            w.finish(&manifest_header(plan, uploader.as_deref()))
                .map_err(state_error(plan))?,
        ),
        None => None,
    };
    let sent = Sent {
        count: aggregate.count(),
        aggregate: aggregate.finish(),
        written: 0,
        resumed,
        data_blocks,
        unchanged,
        transfer_seconds: 0.0,
        frozen_seconds: frozen.map(|f| f.frozen_seconds()),
    };
    Ok((sent, pending))
}

fn manifest_header(plan: &Plan, uploader: Option<&Uploader<'_>>) -> ManifestHeader {
    // An encrypted snapshot holds explicit zeros up to the end of its volume: the
    // manifest says so, so the next backup need not write them again.
    let volume_end = plan.written_volume_end();
    ManifestHeader {
        store: uploader.map(|u| u.store_identity()).unwrap_or_default(),
        snapshot_id: uploader.map(|u| u.snapshot_id()).unwrap_or_default(),
        source: plan.source_name.clone(),
        source_bytes: plan.source.size(),
        blocks: plan.source.block_count().max(volume_end),
        digest: "blake3".into(),
    }
}

fn record(
    manifest: &mut Option<ManifestWriter>,
    index: u64,
    digest: Option<&ContentDigest>,
) -> std::io::Result<()> {
    manifest
        .as_mut()
        .map_or(Ok(()), |w| w.record(index, digest))
}

fn state_error(plan: &Plan) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::State {
        path: plan.manifest_path.clone().unwrap_or_default(),
        source: e,
    }
}

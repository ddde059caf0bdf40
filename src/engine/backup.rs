//! Backup: a source becomes a completed snapshot, sending only what changed.
//!
//! Plan first: open the source, load its manifest, choose the parent, learn what the
//! parent holds ([`Baseline`]), size the volume. Then stream: the reader yields ordered
//! batches of classified blocks; changed blocks (and blocks that became zeros where the
//! parent holds data) are put concurrently, bounded by a semaphore; the LINEAR
//! aggregate and the new manifest are fed in index order. The manifest is put in place
//! only after the snapshot has completed. On any failure the pending snapshot is
//! deleted, so no half-made snapshot is left behind.

use super::baseline::{baseline, choose_parent, Baseline, ParentChoice};
use super::reader::{spawn_reader, ReadBlock};
use super::state::{lock_source, manifest_path};
use super::{wait_until_completed, Progress, SOURCE_BYTES_TAG, SOURCE_PATH_TAG};
use crate::block::manifest::{
    ContentDigest, Manifest, ManifestHeader, ManifestWriter, PendingManifest,
};
use crate::block::{
    blocks_for_bytes, volume_blocks, volume_size_gib, Digest, HashedBlock, LinearAggregate, Source,
    BLOCK_SIZE_U64, GIB, MAX_VOLUME_GIB,
};
use crate::error::{Error, Result};
use crate::store::local::LockWait;
use crate::store::{
    SnapshotId, SnapshotInfo, SnapshotStatus, SnapshotStore, StartSnapshot, StoreError, Tag,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub description: Option<String>,
    pub tags: Vec<Tag>,
    /// Puts in flight at once.
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
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            description: None,
            tags: Vec::new(),
            workers: 16,
            encrypted: false,
            kms_key_arn: None,
            parent: ParentChoice::Auto,
            dry_run: false,
            state_dir: None,
            lock_wait: LockWait::Wait,
        }
    }
}

/// What a backup did (or, with `dry_run`, would do).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    /// `None` for a dry run.
    pub snapshot_id: Option<String>,
    pub parent_snapshot_id: Option<String>,
    pub volume_size_gib: u64,
    pub source_bytes: u64,
    pub blocks_total: u64,
    pub blocks_written: u64,
    /// Blocks of the source that hold only zeros.
    pub blocks_zero: u64,
    /// Blocks not written because the parent holds the same content.
    pub blocks_unchanged: u64,
    pub bytes_written: u64,
    pub checksum: String,
    pub dry_run: bool,
    pub seconds: f64,
}

/// The decisions made before anything is written.
struct Plan {
    source: Arc<Source>,
    source_name: String,
    baseline: Arc<Baseline>,
    volume_size_gib: u64,
    manifest_path: Option<PathBuf>,
    /// Held for the whole backup: one backup of a source into a store at a time.
    _source_lock: Option<std::fs::File>,
}

/// Backs up the file or block device at `path` into `store`.
pub async fn backup(
    store: Arc<dyn SnapshotStore>,
    path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let plan = plan(&*store, path, options).await?;
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
        seconds: 0.0,
    };
    let sent = if options.dry_run {
        progress.start(&format!("dry run of {}", path.display()), size);
        let sent = send_blocks(&plan, None, options.workers, None, progress).await;
        progress.finish();
        sent?.0
    } else {
        let (id, sent) = upload(&store, &plan, options, progress).await?;
        report.snapshot_id = Some(id.to_string());
        sent
    };
    report.blocks_written = sent.count;
    report.blocks_zero = report.blocks_total.saturating_sub(sent.data_blocks);
    report.blocks_unchanged = sent.unchanged;
    report.bytes_written = sent.count * BLOCK_SIZE_U64;
    report.checksum = sent.aggregate.to_base64();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn plan(store: &dyn SnapshotStore, path: &Path, options: &BackupOptions) -> Result<Plan> {
    let source = Arc::new(Source::open(path).map_err(|e| Error::OpenSource {
        path: path.to_owned(),
        source: e,
    })?);
    let size = source.size();
    if size > MAX_VOLUME_GIB * GIB {
        return Err(Error::SourceTooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let source_name = std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string();
    let manifest_path = options
        .state_dir
        .as_ref()
        .map(|dir| manifest_path(dir, &store.identity(), &source_name));
    // Taken before the manifest is read: an overlapping run sees the manifest the
    // other one leaves, and chooses its parent from it.
    let source_lock = match &options.state_dir {
        Some(dir) if !options.dry_run => Some(lock_source(
            dir,
            &store.identity(),
            &source_name,
            options.lock_wait,
        )?),
        _ => None,
    };
    let manifest = match (&manifest_path, &options.parent) {
        (Some(p), choice) if *choice != ParentChoice::Full => {
            Manifest::open(p).unwrap_or_else(|e| {
                tracing::warn!("ignoring the manifest of {}: {e}", source_name);
                None
            })
        }
        _ => None,
    };
    let chosen = choose_parent(store, &options.parent, manifest.as_ref(), &source_name).await?;
    let encrypted = options.encrypted || options.kms_key_arn.is_some();
    let parent = fitting_parent(chosen, &options.parent, size, encrypted)?;
    let volume_size_gib =
        volume_size_gib(size).max(parent.as_ref().map_or(0, |p| p.volume_size_gib));
    let baseline = baseline(store, parent, manifest, encrypted).await?;
    Ok(Plan {
        source,
        source_name,
        baseline: Arc::new(baseline),
        volume_size_gib,
        manifest_path,
        _source_lock: source_lock,
    })
}

/// Keeps the parent if the child can be its child: a volume cannot shrink below its
/// parent's, and encryption cannot be switched on in a lineage. An explicit `--parent`
/// that does not fit is an error; an automatic one gives way to a new lineage.
fn fitting_parent(
    parent: Option<SnapshotInfo>,
    choice: &ParentChoice,
    size: u64,
    encrypted: bool,
) -> Result<Option<SnapshotInfo>> {
    let Some(p) = parent else { return Ok(None) };
    let why = if volume_size_gib(size) < p.volume_size_gib {
        format!(
            "the source ({size} bytes) is smaller than parent {}'s {} GiB volume",
            p.id, p.volume_size_gib
        )
    } else if encrypted && !p.encrypted {
        format!(
            "parent {} is not encrypted, and a child cannot switch encryption on",
            p.id
        )
    } else {
        return Ok(Some(p));
    };
    if let ParentChoice::Snapshot(_) = choice {
        return Err(Error::UnfitParent {
            message: format!("{why}; use --full for a new lineage"),
        });
    }
    tracing::warn!("{why}: starting a new lineage");
    Ok(None)
}

/// Starts the snapshot, sends the blocks, completes it, then puts the manifest in place.
async fn upload(
    store: &Arc<dyn SnapshotStore>,
    plan: &Plan,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(SnapshotId, Sent)> {
    let info = store.start_snapshot(start_request(plan, options)).await?;
    let id = info.id.clone();
    if !info.block_size_ok() {
        abandon(&**store, &id).await;
        return Err(Error::BlockSize {
            got: info.block_size,
        });
    }
    progress.start(
        &format!("backup {} -> {id}", plan.source.path().display()),
        plan.source.size(),
    );
    let result = async {
        let manifest = match &plan.manifest_path {
            Some(p) => Some(ManifestWriter::create(p).map_err(|e| Error::State {
                path: p.clone(),
                source: e,
            })?),
            None => None,
        };
        let (sent, manifest) = send_blocks(
            plan,
            Some((store.clone(), id.clone())),
            options.workers,
            manifest,
            progress,
        )
        .await?;
        let status = store
            .complete_snapshot(&id, sent.count, Some(sent.aggregate))
            .await
            .map_err(Error::store(&id))?;
        Ok::<_, Error>((sent, manifest, status))
    }
    .await;
    progress.finish();
    let (sent, manifest, status) = match result {
        Ok(done) => done,
        Err(e) => {
            abandon(&**store, &id).await;
            return Err(e);
        }
    };
    // The store accepted the completion: from here on the snapshot is never deleted,
    // whatever happens while it seals.
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
    Ok((id, sent))
}

fn start_request(plan: &Plan, options: &BackupOptions) -> StartSnapshot {
    let mut request = StartSnapshot::new(plan.volume_size_gib);
    request.description = Some(
        options
            .description
            .clone()
            .unwrap_or_else(|| format!("ebsnap backup of {}", plan.source_name)),
    );
    request.tags = options.tags.clone();
    request
        .tags
        .push(Tag::new(SOURCE_BYTES_TAG, plan.source.size().to_string()));
    request
        .tags
        .push(Tag::new(SOURCE_PATH_TAG, plan.source_name.clone()));
    request.client_token = Some(SnapshotId::generate().to_string());
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
    count: u64,
    aggregate: Digest,
    /// Blocks of the source holding something other than zeros.
    data_blocks: u64,
    unchanged: u64,
}

/// Streams the source through the reader and writes what must be written: to the
/// snapshot `target` (store and id), or nowhere for a dry run. Feeds the new manifest.
async fn send_blocks(
    plan: &Plan,
    target: Option<(Arc<dyn SnapshotStore>, SnapshotId)>,
    workers: usize,
    mut manifest: Option<ManifestWriter>,
    progress: &dyn Progress,
) -> Result<(Sent, Option<PendingManifest>)> {
    let source = &plan.source;
    let mut batches = spawn_reader(
        source.clone(),
        plan.baseline.clone(),
        volume_blocks(plan.volume_size_gib),
        workers,
        // A manifest to write or compare with: only then are content digests needed (a
        // manifest the baseline uses comes from the same state directory).
        plan.manifest_path.is_some(),
    );
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    let mut puts = JoinSet::new();
    let mut aggregate = LinearAggregate::new();
    let (mut data_blocks, mut unchanged) = (0, 0);
    while let Some(batch) = batches.recv().await {
        for block in batch? {
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
            aggregate
                .push(index, &data.digest())
                .expect("the reader yields ascending indexes");
            if let Some((store, id)) = &target {
                // Waiting for a permit is what bounds the blocks in flight.
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                let (store, id) = (store.clone(), id.clone());
                puts.spawn(async move {
                    let _permit = permit;
                    let digest = data.digest();
                    store
                        .put_block(&id, index, data, digest)
                        .await
                        .map_err(Error::block(&id, index))
                });
                while let Some(finished) = puts.try_join_next() {
                    finished.expect("put task panicked")?;
                }
            }
            progress.set(done);
        }
    }
    while let Some(finished) = puts.join_next().await {
        finished.expect("put task panicked")?;
    }
    progress.set(source.size());
    let pending = match manifest {
        Some(w) => {
            // An encrypted snapshot holds explicit zeros up to the end of its volume:
            // the manifest says so, so the next backup need not write them again.
            let volume_end = if plan.baseline.encrypted() {
                volume_blocks(plan.volume_size_gib)
            } else {
                0
            };
            let header = ManifestHeader {
                store: target
                    .as_ref()
                    .map(|(s, _)| s.identity())
                    .unwrap_or_default(),
                snapshot_id: target
                    .as_ref()
                    .map(|(_, id)| id.to_string())
                    .unwrap_or_default(),
                source: plan.source_name.clone(),
                source_bytes: source.size(),
                blocks: source.block_count().max(volume_end),
                digest: "blake3".into(),
            };
            Some(w.finish(&header).map_err(state_error(plan))?)
        }
        None => None,
    };
    let sent = Sent {
        count: aggregate.count(),
        aggregate: aggregate.finish(),
        data_blocks,
        unchanged,
    };
    Ok((sent, pending))
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

/// Deletes a snapshot that will never be completed, so that no half-made snapshot stays.
/// A snapshot that did complete (the error came after) is never deleted.
async fn abandon(store: &dyn SnapshotStore, id: &SnapshotId) {
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

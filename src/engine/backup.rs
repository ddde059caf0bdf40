//! Backup: a source becomes a completed snapshot.
//!
//! Plan (open the source, size the volume), start the snapshot, then stream: the reader
//! yields ordered batches of hashed blocks, the LINEAR aggregate is fed in that order,
//! and the puts run concurrently (a semaphore bounds them). Zero blocks of a new lineage
//! are not sent: absent blocks read as zeros. On any failure the pending snapshot is
//! deleted, so no half-made snapshot is left behind.

use super::reader::{spawn_reader, ReadBlock};
use super::{wait_until_completed, Progress, SOURCE_BYTES_TAG, SOURCE_PATH_TAG};
use crate::block::{
    blocks_for_bytes, volume_size_gib, Digest, HashedBlock, LinearAggregate, Source,
    BLOCK_SIZE_U64, GIB, MAX_VOLUME_GIB,
};
use crate::error::{Error, Result};
use crate::store::{SnapshotId, SnapshotStatus, SnapshotStore, StartSnapshot, StoreError, Tag};
use std::path::Path;
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
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            description: None,
            tags: Vec::new(),
            workers: 16,
            encrypted: false,
            kms_key_arn: None,
        }
    }
}

/// What a backup did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    pub snapshot_id: String,
    pub parent_snapshot_id: Option<String>,
    pub volume_size_gib: u64,
    pub source_bytes: u64,
    pub blocks_total: u64,
    pub blocks_written: u64,
    pub blocks_zero: u64,
    pub bytes_written: u64,
    pub checksum: String,
    pub seconds: f64,
}

/// Backs up the file or block device at `path` into `store`.
pub async fn backup(
    store: Arc<dyn SnapshotStore>,
    path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
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
    let request = start_request(&source, options);
    let info = store.start_snapshot(request).await?;
    tracing::debug!(
        "{}: started after {:.3}s",
        info.id,
        started.elapsed().as_secs_f64()
    );
    let id = info.id.clone();
    if !info.block_size_ok() {
        abandon(&*store, &id).await;
        return Err(Error::BlockSize {
            got: info.block_size,
        });
    }
    progress.start(&format!("backup {} -> {id}", path.display()), size);
    let sent = send_blocks(
        store.clone(),
        &id,
        source.clone(),
        options.workers,
        info.encrypted,
        progress,
    )
    .await;
    tracing::debug!(
        "{id}: blocks sent after {:.3}s",
        started.elapsed().as_secs_f64()
    );
    let outcome = match sent {
        Ok(sent) => complete(&*store, &id, &sent).await.map(|()| sent),
        Err(e) => Err(e),
    };
    progress.finish();
    let sent = match outcome {
        Ok(sent) => sent,
        Err(e) => {
            abandon(&*store, &id).await;
            return Err(e);
        }
    };
    let blocks_total = blocks_for_bytes(size);
    Ok(BackupReport {
        snapshot_id: id.to_string(),
        parent_snapshot_id: None,
        volume_size_gib: info.volume_size_gib,
        source_bytes: size,
        blocks_total,
        blocks_written: sent.count,
        blocks_zero: blocks_total - sent.data_blocks,
        bytes_written: sent.count * BLOCK_SIZE_U64,
        checksum: sent.aggregate.to_base64(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn start_request(source: &Source, options: &BackupOptions) -> StartSnapshot {
    let mut request = StartSnapshot::new(volume_size_gib(source.size()));
    request.description = Some(
        options
            .description
            .clone()
            .unwrap_or_else(|| format!("ebsnap backup of {}", source.path().display())),
    );
    request.tags = options.tags.clone();
    request
        .tags
        .push(Tag::new(SOURCE_BYTES_TAG, source.size().to_string()));
    request.tags.push(Tag::new(
        SOURCE_PATH_TAG,
        source.path().display().to_string(),
    ));
    request.client_token = Some(SnapshotId::generate().to_string());
    request.encrypted = options.encrypted || options.kms_key_arn.is_some();
    request.kms_key_arn = options.kms_key_arn.clone();
    request
}

/// What was sent: the count and aggregate CompleteSnapshot needs.
struct Sent {
    count: u64,
    aggregate: Digest,
    /// Blocks of the source holding something other than zeros.
    data_blocks: u64,
}

async fn send_blocks(
    store: Arc<dyn SnapshotStore>,
    id: &SnapshotId,
    source: Arc<Source>,
    workers: usize,
    write_zeros: bool,
    progress: &dyn Progress,
) -> Result<Sent> {
    // Absent blocks of an encrypted snapshot read back as random data, not zeros:
    // there, every block is written, zeros included.
    let mut batches = spawn_reader(source.clone(), workers, write_zeros);
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    let mut puts = JoinSet::new();
    let mut aggregate = LinearAggregate::new();
    let mut data_blocks = 0;
    while let Some(batch) = batches.recv().await {
        for block in batch? {
            let done = (block.index().offset() + BLOCK_SIZE_U64).min(source.size());
            let (index, data) = match block {
                ReadBlock::Data(index, data) => (index, data),
                ReadBlock::Zero(index) if write_zeros => (index, HashedBlock::zero()),
                ReadBlock::Zero(_) => {
                    progress.set(done);
                    continue;
                }
            };
            data_blocks += u64::from(!data.is_zero());
            aggregate
                .push(index, &data.digest())
                .expect("the reader yields ascending indexes");
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
            progress.set(done);
        }
    }
    while let Some(finished) = puts.join_next().await {
        finished.expect("put task panicked")?;
    }
    progress.set(source.size());
    Ok(Sent {
        count: aggregate.count(),
        aggregate: aggregate.finish(),
        data_blocks,
    })
}

async fn complete(store: &dyn SnapshotStore, id: &SnapshotId, sent: &Sent) -> Result<()> {
    let status = store
        .complete_snapshot(id, sent.count, Some(sent.aggregate))
        .await
        .map_err(Error::store(id))?;
    wait_until_completed(store, id, status).await
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

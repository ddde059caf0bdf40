//! Planning a backup: everything decided before anything is written. Open the
//! source, take its lock, settle what an interrupted run left, choose the parent, learn
//! what it holds ([`Baseline`]), and size the volume.

use super::baseline::{baseline, choose_parent, Baseline, ParentChoice};
use super::freeze::{plan_freeze, FreezePlan};
use super::journal::{UploadHeader, UploadJournal};
use super::options::BackupOptions;
use super::resume::{give_up, take_over, Left};
use crate::block::identity::SourceIdentity;
use crate::block::manifest::Manifest;
use crate::block::{volume_blocks, volume_size_gib, Source, GIB, MAX_VOLUME_GIB};
use crate::engine::state::{lock_source, manifest_path, upload_journal_path};
use crate::engine::{Error, Result, UnfitParent};
use crate::store::{SnapshotInfo, SnapshotStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The decisions made before anything is written.
pub(super) struct Plan {
    pub source: Arc<Source>,
    /// `identity.key`: what manifests, journals, locks and lineages key the source by.
    pub source_name: String,
    pub identity: SourceIdentity,
    pub baseline: Arc<Baseline>,
    pub volume_size_gib: u64,
    pub manifest_path: Option<PathBuf>,
    pub journal_path: Option<PathBuf>,
    /// The interrupted run this one continues.
    pub resume: Option<UploadJournal>,
    /// The client token of an interrupted run's StartSnapshot that may have made a
    /// snapshot: this run's StartSnapshot sends it again, and so gets that snapshot.
    pub client_token: Option<String>,
    /// Held for the whole backup: one backup of a source into a store at a time.
    pub _source_lock: Option<std::fs::File>,
    /// The filesystems to freeze while the source is read, checked.
    pub freeze: Option<FreezePlan>,
}

pub(super) async fn plan(
    store: &dyn SnapshotStore,
    path: &Path,
    options: &BackupOptions,
) -> Result<Plan> {
    let (source, source_rdev) = open_blocks(path, options.consistency.read_from.as_deref())?;
    let freeze = plan_freeze(&options.consistency, path)?;
    // A device is known by its stable id, so that its lineage, manifest and lock
    // follow the disk, not the name it has this boot (and never `--read-from`'s).
    let identity = SourceIdentity::of(path, source_rdev);
    let source_name = identity.key.clone();
    let state_file = |f: fn(&Path, &str, &str) -> PathBuf| {
        options
            .state_dir
            .as_ref()
            .map(|dir| f(dir, &store.identity(), &source_name))
    };
    let (manifest_path, journal_path) =
        (state_file(manifest_path), state_file(upload_journal_path));
    // Taken before the manifest is read: an overlapping run sees the manifest the
    // other one leaves, and chooses its parent from it.
    let source_lock = match &options.state_dir {
        Some(dir) if !options.dry_run => Some(
            lock_source(
                dir,
                &store.identity(),
                &source_name,
                options.lock_wait,
                &options.stop,
            )
            .await?,
        ),
        _ => None,
    };
    let left = match &journal_path {
        Some(p) if !options.dry_run => take_over(store, p, &options.parent, &source_name).await?,
        _ => None,
    };
    let (resume, client_token) = match left {
        Some(Left::Pending(j)) => (Some(j), None),
        Some(Left::StartInDoubt { client_token }) => (None, Some(client_token)),
        None => (None, None),
    };
    let inputs = LineageInputs {
        store,
        manifest_path: &manifest_path,
        identity: &identity,
        size: source.size(),
        encrypted: options.encrypted || options.kms_key_arn.is_some(),
    };
    let (lineage, resume) = inputs.settle(resume, &options.parent).await?;
    let baseline = match &resume {
        Some(j) => resumed_baseline(lineage.baseline, j)?,
        None => lineage.baseline,
    };
    Ok(Plan {
        source,
        source_name,
        identity,
        baseline: Arc::new(baseline),
        volume_size_gib: lineage.volume_size_gib,
        manifest_path,
        journal_path,
        resume,
        client_token,
        _source_lock: source_lock,
        freeze,
    })
}

/// Opens what the blocks are read from: the source, or `read_from` (which must be
/// just as large: the snapshot stands for the source), and the source's device number.
fn open_blocks(path: &Path, read_from: Option<&Path>) -> Result<(Arc<Source>, Option<u64>)> {
    let source = open_source(path)?;
    let rdev = source.rdev();
    let Some(read_from) = read_from else {
        return Ok((source, rdev));
    };
    let blocks = open_source(read_from)?;
    if blocks.size() != source.size() {
        return Err(Error::ReadFromSize {
            source_path: path.to_owned(),
            source_bytes: source.size(),
            read_from: read_from.to_owned(),
            bytes: blocks.size(),
        });
    }
    Ok((blocks, rdev))
}

/// Opens the source, refusing one larger than a snapshot holds.
fn open_source(path: &Path) -> Result<Arc<Source>> {
    let source = Source::open(path).map_err(|e| Error::OpenSource {
        path: path.to_owned(),
        source: e,
    })?;
    let size = source.size();
    if size > MAX_VOLUME_GIB * GIB {
        return Err(Error::SourceTooLarge {
            path: path.to_owned(),
            size,
        });
    }
    Ok(Arc::new(source))
}

/// The parent's baseline, knowing what the interrupted run had put already.
fn resumed_baseline(baseline: Baseline, journal: &UploadJournal) -> Result<Baseline> {
    let put = journal.put_blocks().map_err(|e| Error::State {
        path: journal.path().to_owned(),
        source: e,
    })?;
    Ok(baseline.resuming(put, journal.uncertain()))
}

impl Plan {
    /// One past the last block an encrypted snapshot holds explicitly (zeros up to
    /// its volume's end); 0 for one that is not encrypted.
    pub fn written_volume_end(&self) -> u64 {
        if self.baseline.encrypted() {
            volume_blocks(self.volume_size_gib)
        } else {
            0
        }
    }

    /// One past the last block the backup may write: the source's end, where the
    /// parent (or an interrupted run) may hold data, or the volume's end when encrypted.
    pub fn blocks_visited(&self) -> u64 {
        let volume_end = self.written_volume_end();
        self.source
            .block_count()
            .max(self.baseline.end())
            .max(volume_end)
    }
}

/// The parent chosen, and what follows from it.
struct Lineage {
    baseline: Baseline,
    volume_size_gib: u64,
}

impl Lineage {
    /// Whether the pending snapshot a journal describes was started for this lineage,
    /// and for a source of this size (its tag says the size a restore gives back, and
    /// is set only at the start).
    fn fits(&self, started: &UploadHeader, source_bytes: u64) -> bool {
        let parent = self.baseline.parent.as_ref().map(|p| p.id.to_string());
        started.source_bytes == source_bytes
            && started.parent == parent
            && started.volume_size_gib == self.volume_size_gib
            && started.encrypted == self.baseline.encrypted()
    }
}

/// What a lineage is planned from: the source, and where its manifest lives.
struct LineageInputs<'a> {
    store: &'a dyn SnapshotStore,
    manifest_path: &'a Option<PathBuf>,
    identity: &'a SourceIdentity,
    size: u64,
    encrypted: bool,
}

impl LineageInputs<'_> {
    /// The lineage this backup continues: the interrupted run's, with its journal, if
    /// that snapshot is still this backup's; else the one `choice` asks for, and the
    /// interrupted run's snapshot is given up.
    async fn settle(
        &self,
        resume: Option<UploadJournal>,
        choice: &ParentChoice,
    ) -> Result<(Lineage, Option<UploadJournal>)> {
        let Some(journal) = resume else {
            return Ok((self.plan(choice).await?, None));
        };
        if let Some(lineage) = self.resumed(&journal).await? {
            return Ok((lineage, Some(journal)));
        }
        tracing::warn!(
            "not resuming the interrupted backup {}: the source or its parent has changed; starting afresh",
            journal.header().snapshot_id.as_deref().unwrap_or_default()
        );
        give_up(self.store, journal).await;
        Ok((self.plan(choice).await?, None))
    }

    /// The lineage the journal's pending snapshot was started for, if it still is this
    /// backup's; `None` when the source or the parent changed since.
    async fn resumed(&self, journal: &UploadJournal) -> Result<Option<Lineage>> {
        let choice = match journal.header().parent.as_ref().map(|p| p.parse()) {
            Some(Ok(p)) => ParentChoice::Snapshot(p),
            _ => ParentChoice::Full,
        };
        match self.plan(&choice).await {
            Ok(l) if l.fits(journal.header(), self.size) => Ok(Some(l)),
            Ok(_) | Err(Error::UnfitParent { .. } | Error::NotCompleted { .. }) => Ok(None),
            Err(Error::Store {
                source: StoreError::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The parent `choice` asks for (if it fits), and what the backup knows of it.
    async fn plan(&self, choice: &ParentChoice) -> Result<Lineage> {
        let (store, source_name, size) = (self.store, &self.identity.key, self.size);
        let manifest = match self.manifest_path {
            Some(p) if *choice != ParentChoice::Full => Manifest::open(p).unwrap_or_else(|e| {
                tracing::warn!("ignoring the manifest of {source_name}: {e}");
                None
            }),
            _ => None,
        };
        let chosen = choose_parent(store, choice, manifest.as_ref(), self.identity).await?;
        let parent = fitting_parent(chosen, choice, size, self.encrypted)?;
        let volume_size_gib =
            volume_size_gib(size).max(parent.as_ref().map_or(0, |p| p.volume_size_gib));
        let baseline = baseline(store, parent, manifest, self.encrypted).await?;
        Ok(Lineage {
            baseline,
            volume_size_gib,
        })
    }
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
        UnfitParent::Smaller {
            parent: p.id,
            source_bytes: size,
            parent_gib: p.volume_size_gib,
        }
    } else if encrypted && !p.encrypted {
        UnfitParent::Unencrypted { parent: p.id }
    } else {
        return Ok(Some(p));
    };
    if let ParentChoice::Snapshot(_) = choice {
        return Err(Error::UnfitParent { why });
    }
    tracing::warn!("{why}: starting a new lineage");
    Ok(None)
}

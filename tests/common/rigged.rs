//! A memory store whose calls a test can break: refused before they reach the store,
//! or with their answer lost after the store acted on them.

use async_trait::async_trait;
use ebsnap::block::{BlockIndex, Digest, HashedBlock};
use ebsnap::store::*;

/// What a rigged call does.
pub enum Then {
    /// What the store answers.
    Answer,
    /// Fails with this error.
    Fail(StoreError),
    /// Never answers (a client killed while it waits drops the call this way).
    Hang,
}

impl Then {
    async fn apply(self) -> StoreResult<()> {
        match self {
            Then::Answer => Ok(()),
            Then::Fail(e) => Err(e),
            Then::Hang => std::future::pending().await,
        }
    }
}

/// A call, as the rig sees it.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    Start,
    Put(&'a SnapshotId, BlockIndex),
    Prepare(&'a SnapshotId),
    Complete(&'a SnapshotId),
    Describe(&'a SnapshotId),
    Delete(&'a SnapshotId),
}

type Rig = Box<dyn Fn(Call) -> Then + Send + Sync>;
type StatusRig = Box<dyn Fn(&SnapshotId) -> Option<SnapshotStatus> + Send + Sync>;

pub struct Rigged {
    pub inner: MemoryStore,
    /// Before a call: other than [`Then::Answer`], the store never sees the call.
    before: Rig,
    /// After a call the store carried out: an error replaces its answer (lost on the
    /// way back, after every retry).
    after: Rig,
    /// The status a snapshot is described with, instead of the store's (one that
    /// failed while sealing, say).
    status: StatusRig,
}

impl std::fmt::Debug for Rigged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rigged")
    }
}

impl Rigged {
    pub fn new(
        before: impl Fn(Call) -> Then + Send + Sync + 'static,
        after: impl Fn(Call) -> Then + Send + Sync + 'static,
    ) -> Rigged {
        Rigged {
            inner: MemoryStore::new(),
            before: Box::new(before),
            after: Box::new(after),
            status: Box::new(|_| None),
        }
    }

    /// Describes snapshots with the status `status` gives, where it gives one.
    pub fn with_status(
        mut self,
        status: impl Fn(&SnapshotId) -> Option<SnapshotStatus> + Send + Sync + 'static,
    ) -> Rigged {
        self.status = Box::new(status);
        self
    }
}

/// A failure worth retrying later, as the network or the service gives.
pub fn unavailable() -> StoreError {
    StoreError::Unavailable {
        message: "connection reset (rigged)".into(),
    }
}

#[async_trait]
impl StoreLayer for Rigged {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn identity(&self) -> String {
        "rigged".into()
    }
    async fn start_snapshot(&self, r: StartSnapshot) -> StoreResult<SnapshotInfo> {
        (self.before)(Call::Start).apply().await?;
        let info = self.inner.start_snapshot(r).await?;
        (self.after)(Call::Start).apply().await?;
        Ok(info)
    }
    async fn put_block(
        &self,
        id: &SnapshotId,
        i: BlockIndex,
        b: HashedBlock,
        c: Digest,
    ) -> StoreResult<()> {
        (self.before)(Call::Put(id, i)).apply().await?;
        self.inner.put_block(id, i, b, c).await?;
        (self.after)(Call::Put(id, i)).apply().await
    }
    async fn prepare_completion(
        &self,
        id: &SnapshotId,
        n: u64,
        a: Option<Digest>,
    ) -> StoreResult<()> {
        (self.before)(Call::Prepare(id)).apply().await?;
        self.inner.prepare_completion(id, n, a).await?;
        (self.after)(Call::Prepare(id)).apply().await
    }
    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        n: u64,
        a: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        (self.before)(Call::Complete(id)).apply().await?;
        let status = self.inner.complete_snapshot(id, n, a).await?;
        (self.after)(Call::Complete(id)).apply().await?;
        Ok(status)
    }
    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        (self.before)(Call::Describe(id)).apply().await?;
        let mut info = self.inner.describe_snapshot(id).await?;
        if let Some(status) = (self.status)(id) {
            info.status = status;
        }
        Ok(info)
    }
    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        (self.before)(Call::Delete(id)).apply().await?;
        self.inner.delete_snapshot(id).await
    }
}

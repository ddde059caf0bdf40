//! Reading the local store: listing a snapshot's blocks and changes, and fetching a
//! block (opening it, for an encrypted snapshot).

use super::chain::Chain;
use super::encrypted;
use super::keys::NamedKey;
use super::map::{Record, ZERO_PACK};
use super::store::{Inner, Shared};
use crate::block::{BlockIndex, HashedBlock};
use crate::store::paging::{block_page, changed_page};
use crate::store::rules;
use crate::store::*;
use std::fs::File;
use std::sync::Arc;

impl Shared {
    /// A completed snapshot's chain, and the key its blocks open with: a reader of an
    /// encrypted snapshot must hold its key (as EBS asks for kms:Decrypt to list one).
    fn readable(
        &self,
        inner: &mut Inner,
        id: &SnapshotId,
    ) -> StoreResult<(SnapshotInfo, Chain, Option<Arc<NamedKey>>)> {
        let (info, chain) = inner.readable_chain(id)?;
        let key = self.snapshot_key(&inner.get(id)?.meta)?;
        Ok((info, chain, key))
    }

    pub(super) fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        let (info, chain, _) = self.readable(&mut self.lock(), id)?;
        block_page(&self.key, &info, &page, |start| {
            chain.iter_from(start).map(|r| r.index)
        })
    }

    pub(super) fn list_changed(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let (first_chain, (info, second_chain, _)) = {
            let mut inner = self.lock();
            let first_chain = match first {
                Some(f) => {
                    let first_lineage = inner.get(f)?.meta.lineage.clone();
                    if first_lineage != inner.get(second)?.meta.lineage {
                        return Err(rules::unrelated(f, second));
                    }
                    self.readable(&mut inner, f)?.1
                }
                None => Chain::default(),
            };
            (first_chain, self.readable(&mut inner, second)?)
        };
        // One lineage, one key: equal identities are equal blocks.
        changed_page(&self.key, first, &info, &page, |start| {
            (
                first_chain.iter_from(start).map(|r| (r.index, r.digest)),
                second_chain.iter_from(start).map(|r| (r.index, r.digest)),
            )
        })
    }

    pub(super) fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let (record, files, key) = {
            let mut inner = self.lock();
            let (_, chain, key) = self.readable(&mut inner, id)?;
            self.key.check_block_token(id, index, token)?;
            let record = chain.get(index).ok_or_else(|| {
                StoreError::invalid(
                    ValidationReason::InvalidBlockToken,
                    format!("snapshot {id} holds no block {index}"),
                )
            })?;
            let files = match record.location.pack {
                ZERO_PACK => None,
                pack => Some(inner.packs.files(pack, key.is_some())?),
            };
            (record, files, key)
        };
        let checksum = encrypted::checksum(key.as_deref(), &record);
        let Some((file, aead)) = files else {
            return Ok(FetchedBlock {
                data: HashedBlock::zero().data().clone(),
                checksum,
            });
        };
        let mut buf = self.read_buffers.take();
        self.read_block(&file, aead.as_deref(), key.as_deref(), &record, &mut buf)
            .map_err(|e| {
                let at = encrypted::slot_name(record.location);
                StoreError::io(format!("reading block {index} of {id} from {at}"), e)
            })?;
        Ok(FetchedBlock {
            data: self.read_buffers.freeze(buf),
            checksum,
        })
    }

    /// Reads a block's data; an encrypted one that fails its tag reads as zeros (never
    /// stored: zero blocks have no slot), so that it does not match its checksum and is
    /// reported as a damaged block, like a plain one whose data changed.
    fn read_block(
        &self,
        file: &File,
        aead: Option<&File>,
        key: Option<&NamedKey>,
        record: &Record,
        buf: &mut [u8],
    ) -> std::io::Result<()> {
        if !encrypted::read_block(file, aead, key, record, buf)? {
            tracing::error!(
                "the block at {} fails its authentication tag: damaged, or moved there",
                encrypted::slot_name(record.location)
            );
        }
        Ok(())
    }
}

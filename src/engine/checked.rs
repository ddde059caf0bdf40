//! A fetched block is checked against its checksum before anything uses it: a
//! store's word is not proof. Restore, copy and the recovery reader share this check.

use crate::block::{is_zero, BlockIndex, HashedBlock};
use crate::engine::{Error, Inconsistency, Result};
use crate::store::{FetchedBlock, SnapshotId};

/// The fetched block, hashed, if it is one whole block that matches its checksum,
/// else an error naming the snapshot and index: [`Error::Inconsistent`] for a length,
/// [`Error::BadBlock`] for a checksum. Hashes 512 KiB: call it off the async threads.
pub(crate) fn checked_block(
    id: &SnapshotId,
    index: BlockIndex,
    fetched: FetchedBlock,
) -> Result<HashedBlock> {
    let block = HashedBlock::new(fetched.data).map_err(|len| Error::Inconsistent {
        snapshot: id.clone(),
        what: Inconsistency::BlockLength { index, len },
    })?;
    if block.digest() != fetched.checksum {
        return Err(Error::BadBlock {
            snapshot: id.clone(),
            index,
            expected: fetched.checksum,
            actual: block.digest(),
        });
    }
    Ok(block)
}

/// [`checked_block`], and the block must hold nothing past `size` (the snapshot's
/// recorded size): what is read as the snapshot's data is all of it.
pub(crate) fn checked(
    id: &SnapshotId,
    index: BlockIndex,
    fetched: FetchedBlock,
    size: u64,
) -> Result<HashedBlock> {
    let block = checked_block(id, index, fetched)?;
    let kept = index.bytes_within(size);
    if !block.is_zero() && !is_zero(&block.data()[kept..]) {
        return Err(Error::Inconsistent {
            snapshot: id.clone(),
            what: Inconsistency::DataBeyondSize { index, size },
        });
    }
    Ok(block)
}

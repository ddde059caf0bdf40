//! A fetched block is checked against its checksum before anything uses it: a
//! store's word is not proof. Restore and the recovery reader share this one check.

use crate::block::{is_zero, BlockIndex, Digest, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::engine::{Error, Inconsistency, Result};
use crate::store::{FetchedBlock, SnapshotId};
use bytes::Bytes;

/// The block's data if it is one whole block that matches its checksum and holds
/// nothing past `size` (the snapshot's recorded size), else an error naming the
/// snapshot and index: [`Error::BadBlock`] for a checksum, [`Error::Inconsistent`] for
/// the rest. Hashes 512 KiB: call it off the async threads.
pub(crate) fn checked(
    id: &SnapshotId,
    index: BlockIndex,
    fetched: FetchedBlock,
    size: u64,
) -> Result<Bytes> {
    let inconsistent = |what| Error::Inconsistent {
        snapshot: id.clone(),
        what,
    };
    let len = fetched.data.len();
    if len != BLOCK_SIZE {
        return Err(inconsistent(Inconsistency::BlockLength { index, len }));
    }
    let actual = Digest::of(&fetched.data);
    if actual != fetched.checksum {
        return Err(Error::BadBlock {
            snapshot: id.clone(),
            index,
            expected: fetched.checksum,
            actual,
        });
    }
    let kept = size.saturating_sub(index.offset()).min(BLOCK_SIZE_U64) as usize;
    if !is_zero(&fetched.data[kept..]) {
        return Err(inconsistent(Inconsistency::DataBeyondSize { index, size }));
    }
    Ok(fetched.data)
}

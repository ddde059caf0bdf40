//! A fetched block is checked against its checksum before anything uses it: a
//! store's word is not proof. Restore and the recovery reader share this one check.

use crate::block::{BlockIndex, Digest};
use crate::engine::{Error, Result};
use crate::store::{FetchedBlock, SnapshotId};
use bytes::Bytes;

/// The block's data if it matches its checksum, else [`Error::BadBlock`] naming the
/// snapshot and index. Hashes 512 KiB: call it off the async threads.
pub(crate) fn checked(id: &SnapshotId, index: BlockIndex, fetched: FetchedBlock) -> Result<Bytes> {
    let actual = Digest::of(&fetched.data);
    if actual != fetched.checksum {
        return Err(Error::BadBlock {
            snapshot: id.clone(),
            index,
            expected: fetched.checksum,
            actual,
        });
    }
    Ok(fetched.data)
}

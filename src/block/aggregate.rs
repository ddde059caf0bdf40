//! The LINEAR aggregate checksum that CompleteSnapshot carries.

use super::{BlockIndex, Digest};
use sha2::{Digest as _, Sha256};

/// SHA-256 over the raw 32-byte digests of the written blocks, in ascending block index.
///
/// Fed as a stream, so memory is O(1) whatever the volume size. Blocks may be *written*
/// in any order; the caller feeds digests here in index order (the backup pipeline keeps
/// its results ordered for exactly this reason).
#[derive(Clone, Default)]
pub struct LinearAggregate {
    hasher: Sha256,
    count: u64,
    last: Option<BlockIndex>,
}

/// A digest arrived at or below the index of the previous one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("aggregate checksum fed block {got} after block {previous}: blocks must ascend")]
pub struct OutOfOrder {
    pub previous: BlockIndex,
    pub got: BlockIndex,
}

impl LinearAggregate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, index: BlockIndex, digest: &Digest) -> Result<(), OutOfOrder> {
        if let Some(previous) = self.last.filter(|&p| p >= index) {
            return Err(OutOfOrder {
                previous,
                got: index,
            });
        }
        self.hasher.update(digest.0);
        self.count += 1;
        self.last = Some(index);
        Ok(())
    }

    /// Number of blocks fed so far (the `ChangedBlocksCount`).
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> Digest {
        Digest(self.hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BLOCK_SIZE;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(BLOCK_SIZE, 0);
        v
    }

    /// Value computed independently with Python's hashlib:
    /// blocks {0: b'\x01'*524288, 3: b'abc' zero-padded, 7: bytes(range(256))*2048},
    /// sha256(b''.join(sha256(blocks[i]).digest() for i in sorted(blocks))), base64.
    #[test]
    fn matches_an_independently_computed_vector() {
        let blocks = [
            (0, vec![1u8; BLOCK_SIZE]),
            (3, padded(b"abc")),
            (7, (0..=255u8).cycle().take(BLOCK_SIZE).collect()),
        ];
        let mut agg = LinearAggregate::new();
        for (i, data) in &blocks {
            agg.push(BlockIndex(*i), &Digest::of(data)).unwrap();
        }
        assert_eq!(agg.count(), 3);
        assert_eq!(
            agg.finish().to_base64(),
            "hCxZHgpQ6AldldeardJLVwlvqe7RnW/XYC31UJQImAo="
        );
    }

    #[test]
    fn refuses_descending_or_repeated_indexes() {
        let mut agg = LinearAggregate::new();
        let d = Digest::zero_block();
        agg.push(BlockIndex(5), &d).unwrap();
        assert_eq!(
            agg.push(BlockIndex(5), &d),
            Err(OutOfOrder {
                previous: BlockIndex(5),
                got: BlockIndex(5)
            })
        );
        assert!(agg.push(BlockIndex(2), &d).is_err());
        assert!(agg.push(BlockIndex(6), &d).is_ok());
    }

    #[test]
    fn empty_aggregate_is_sha256_of_nothing() {
        assert_eq!(
            LinearAggregate::new().finish().to_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}

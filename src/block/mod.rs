//! Blocks: the unit ebsnap reads, hashes, stores and restores.
//!
//! Everything here is pure logic or plain positional file I/O on a source; nothing
//! knows about stores, the network or the UI.

mod aggregate;
mod arena;
mod digest;
pub mod identity;
pub mod manifest;
mod pool;
pub(crate) mod source;

pub use aggregate::{LinearAggregate, OutOfOrder};
pub use digest::{is_zero, Digest, HashedBlock};
pub use pool::{direct_io_fits, AlignedBuf, BlockFill, BufferPool, PastBlockEnd, BUFFER_ALIGN};
pub use source::{DataBlocks, Source, SourceKind};

use std::fmt;

/// Size of one EBS block: 512 KiB, fixed by the service.
pub const BLOCK_SIZE: usize = 524_288;
/// [`BLOCK_SIZE`] as a `u64`, for offset arithmetic.
pub const BLOCK_SIZE_U64: u64 = BLOCK_SIZE as u64;
/// One GiB, the unit of EBS volume sizes.
pub const GIB: u64 = 1 << 30;
/// Blocks in one GiB of volume.
pub const BLOCKS_PER_GIB: u64 = GIB / BLOCK_SIZE_U64;
/// Largest EBS volume: 64 TiB.
pub const MAX_VOLUME_GIB: u64 = 65_536;

/// The position of a block in a volume: byte offset / [`BLOCK_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockIndex(pub u64);

impl BlockIndex {
    /// The block holding byte `offset`.
    pub fn containing(offset: u64) -> Self {
        BlockIndex(offset / BLOCK_SIZE_U64)
    }

    /// Byte offset of the block's first byte.
    pub fn offset(self) -> u64 {
        self.0 * BLOCK_SIZE_U64
    }

    /// How many of the block's bytes lie within the first `size` bytes (0 past them).
    pub fn bytes_within(self, size: u64) -> usize {
        size.saturating_sub(self.offset()).min(BLOCK_SIZE_U64) as usize
    }

    pub fn next(self) -> Self {
        BlockIndex(self.0 + 1)
    }
}

impl fmt::Display for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Number of blocks needed to hold `bytes` (the last one zero-padded).
pub fn blocks_for_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_SIZE_U64)
}

/// The EBS volume size (GiB) for a source of `bytes`: rounded up to whole GiB, at least 1.
pub fn volume_size_gib(bytes: u64) -> u64 {
    bytes.div_ceil(GIB).max(1)
}

/// Number of blocks in a volume of `gib` GiB.
pub fn volume_blocks(gib: u64) -> u64 {
    gib * BLOCKS_PER_GIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sizes_round_up_to_whole_gib() {
        assert_eq!(volume_size_gib(0), 1);
        assert_eq!(volume_size_gib(1), 1);
        assert_eq!(volume_size_gib(GIB), 1);
        assert_eq!(volume_size_gib(GIB + 1), 2);
        assert_eq!(volume_blocks(1), 2048);
    }

    #[test]
    fn block_counts_round_up() {
        assert_eq!(blocks_for_bytes(0), 0);
        assert_eq!(blocks_for_bytes(1), 1);
        assert_eq!(blocks_for_bytes(BLOCK_SIZE_U64), 1);
        assert_eq!(blocks_for_bytes(BLOCK_SIZE_U64 + 1), 2);
        assert_eq!(
            BlockIndex::containing(BLOCK_SIZE_U64 * 3 + 5),
            BlockIndex(3)
        );
        assert_eq!(BlockIndex(3).offset(), 3 * BLOCK_SIZE_U64);
    }
}

//! SHA-256 block digests, in the base64 form the EBS direct APIs use.

use super::BLOCK_SIZE;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::sync::OnceLock;

/// A raw SHA-256 digest. Displays (and parses) as base64, like `x-amz-Checksum`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `data` (sha2 picks the CPU's SHA extensions at run time).
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Checksum of a block of [`BLOCK_SIZE`] zero bytes.
    pub fn zero_block() -> Self {
        static ZERO: OnceLock<Digest> = OnceLock::new();
        *ZERO.get_or_init(|| Digest::of(zero_block_bytes()))
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses a base64 checksum; `None` unless it decodes to exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let raw = B64.decode(text).ok()?;
        Some(Digest(raw.try_into().ok()?))
    }

    /// The first 8 bytes as an integer: a compact hash-table key.
    pub fn prefix_u64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_base64())
    }
}

/// Shared, never-written block of zeros.
pub(crate) fn zero_block_bytes() -> &'static [u8] {
    static ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
    &ZEROS
}

/// True when every byte is zero. Checks wide words so it runs at memory speed,
/// which is why zero blocks never need hashing.
pub fn is_zero(data: &[u8]) -> bool {
    let (head, words, tail) = unsafe { data.align_to::<u128>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words
            .chunks(16)
            .all(|c| c.iter().fold(0, |acc, w| acc | w) == 0)
}

/// A full block together with its SHA-256, computed from the data by this type.
///
/// The digest can only come from hashing the data (or from the known zero block), so a
/// store that receives a `HashedBlock` can check a claimed checksum against it without
/// hashing the block a second time.
#[derive(Clone)]
pub struct HashedBlock {
    data: Bytes,
    digest: Digest,
}

impl HashedBlock {
    /// Hashes `data`, which must be exactly one block.
    pub fn new(data: Bytes) -> Result<Self, usize> {
        if data.len() != BLOCK_SIZE {
            return Err(data.len());
        }
        let digest = Digest::of(&data);
        Ok(HashedBlock { data, digest })
    }

    /// The all-zero block, without hashing.
    pub fn zero() -> Self {
        HashedBlock {
            data: Bytes::from_static(zero_block_bytes()),
            digest: Digest::zero_block(),
        }
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn is_zero(&self) -> bool {
        self.digest == Digest::zero_block()
    }
}

impl fmt::Debug for HashedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedBlock({})", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block_checksum_matches_the_service() {
        assert_eq!(
            Digest::zero_block().to_base64(),
            "B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE="
        );
        assert_eq!(HashedBlock::zero().digest(), Digest::zero_block());
    }

    #[test]
    fn base64_round_trips_and_rejects_wrong_lengths() {
        let d = Digest::of(b"abc");
        assert_eq!(Digest::from_base64(&d.to_base64()), Some(d));
        assert_eq!(Digest::from_base64("AAAA"), None);
        assert_eq!(Digest::from_base64("not base64!"), None);
    }

    #[test]
    fn zero_detection_finds_a_single_set_byte_anywhere() {
        let mut block = vec![0u8; BLOCK_SIZE];
        assert!(is_zero(&block));
        for pos in [0, 1, 15, 4096, BLOCK_SIZE - 1] {
            block[pos] = 1;
            assert!(!is_zero(&block), "byte {pos}");
            block[pos] = 0;
        }
        assert!(is_zero(&block[3..77]));
        assert!(!is_zero(&[0, 0, 9][..]));
    }

    #[test]
    fn hashed_block_requires_a_full_block() {
        assert_eq!(
            HashedBlock::new(Bytes::from_static(b"short")).unwrap_err(),
            5
        );
        let b = HashedBlock::new(Bytes::from(vec![0u8; BLOCK_SIZE])).unwrap();
        assert!(b.is_zero());
    }
}

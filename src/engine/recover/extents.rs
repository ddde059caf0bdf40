//! Where a snapshot holds data and where it has holes, in bytes: what NBD's
//! `base:allocation` reports. Pure, over the bitmap of listed blocks.

use crate::block::BLOCK_SIZE_U64;
use crate::engine::bitmap::Bitmap;

/// A run of bytes that is all data or all hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    /// The snapshot holds data here (else: a hole, read as zeros).
    pub data: bool,
}

/// The extents of `offset..offset + length` (clipped to `size`), at most `max` of
/// them: runs of blocks that all hold data, or none does, merged.
pub(super) fn extents(
    data: &Bitmap,
    size: u64,
    offset: u64,
    length: u64,
    max: usize,
) -> Vec<Extent> {
    let end = offset.saturating_add(length).min(size);
    let mut out = Vec::new();
    let mut at = offset;
    while at < end && out.len() < max {
        let block = at / BLOCK_SIZE_U64;
        let is_data = data.get(crate::block::BlockIndex(block));
        let run_end = if is_data {
            data.next_clear(block)
        } else {
            data.next_set(block).unwrap_or(u64::MAX / BLOCK_SIZE_U64)
        };
        let stop = run_end.saturating_mul(BLOCK_SIZE_U64).min(end);
        out.push(Extent {
            length: stop - at,
            data: is_data,
        });
        at = stop;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockIndex;

    const B: u64 = BLOCK_SIZE_U64;

    fn map(blocks: &[u64]) -> Bitmap {
        let mut m = Bitmap::default();
        blocks.iter().for_each(|&i| m.set(BlockIndex(i)));
        m
    }

    fn ext(length: u64, data: bool) -> Extent {
        Extent { length, data }
    }

    #[test]
    fn runs_merge_and_clip_to_the_request_and_the_size() {
        let m = map(&[0, 1, 4]);
        let size = 6 * B - 100;
        assert_eq!(
            extents(&m, size, 0, u64::MAX, 100),
            vec![
                ext(2 * B, true),
                ext(2 * B, false),
                ext(B, true),
                ext(B - 100, false)
            ]
        );
        assert_eq!(
            extents(&m, size, B + 10, B, 100),
            vec![ext(B - 10, true), ext(10, false)]
        );
        assert_eq!(extents(&m, size, 0, u64::MAX, 2).len(), 2);
        assert_eq!(extents(&m, size, size, 10, 100), vec![]);
        assert_eq!(
            extents(&Bitmap::default(), 3 * B, 0, 3 * B, 9),
            vec![ext(3 * B, false)]
        );
    }
}

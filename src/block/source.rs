//! Backup sources: disk images (regular files, sparse-aware) and block devices.

use super::{blocks_for_bytes, direct_io_fits, AlignedBuf, BlockIndex, BLOCK_SIZE};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What kind of thing a source (or restore target) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    File,
    BlockDevice,
}

/// An open source, read with positional reads from any thread.
///
/// A block of a file that the page cache holds whole is copied from it; any other is read through a
/// second descriptor opened with `O_DIRECT`, where the device's DMA fills the block
/// buffer. A buffered read of a cold disk would cost a copy out of the page cache (the
/// largest kernel cost of a backup) and would fill the cache with a whole disk that
/// nobody reads again, evicting what the host's own programs use. The kernel writes
/// back dirty cached pages of the range before a direct read, so both descriptors see
/// the same data. Anything else (a tail shorter than 4 KiB, a filesystem that refuses
/// `O_DIRECT`, a regular file on tmpfs, which serves `O_DIRECT` from its page cache
/// anyway) is read through the page cache.
#[derive(Debug)]
pub struct Source {
    file: File,
    direct: Option<File>,
    path: PathBuf,
    size: u64,
    kind: SourceKind,
}

impl Source {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let (kind, size) = if meta.file_type().is_block_device() {
            (SourceKind::BlockDevice, device_size(&file)?)
        } else if meta.is_file() {
            (SourceKind::File, meta.len())
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        Ok(Source {
            direct: crate::sys::reopen_direct(&file, crate::sys::Access::Read),
            file,
            path: path.to_owned(),
            size,
            kind,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Exact size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The device number of a block device (of the descriptor open, so of the device
    /// read, whatever its path names since); `None` for a file.
    pub fn rdev(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().ok()?;
        (self.kind == SourceKind::BlockDevice).then(|| meta.rdev())
    }

    /// Number of blocks covering the source (the last one zero-padded).
    pub fn block_count(&self) -> u64 {
        blocks_for_bytes(self.size)
    }

    /// Reads block `index` into `buf` (one block long), zero-padding past the end.
    pub fn read_block(&self, index: BlockIndex, buf: &mut [u8]) -> io::Result<()> {
        assert_eq!(
            buf.len(),
            BLOCK_SIZE,
            "read_block needs a whole-block buffer"
        );
        let (offset, len) = (index.offset(), index.bytes_within(self.size));
        let (data, tail) = buf.split_at_mut(len);
        if !self.read_direct(data, offset)? {
            self.file.read_exact_at(data, offset)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Reads the blocks from `first` on, one buffer each, as [`Source::read_block`]
    /// would. Whole blocks of the source are read with one `O_DIRECT` read where
    /// they all allow it: one system call, which the block layer splits into requests
    /// the device serves at once (a network volume needs several in flight).
    pub fn read_blocks(&self, first: BlockIndex, bufs: &mut [AlignedBuf]) -> io::Result<()> {
        let len = (bufs.len() * BLOCK_SIZE) as u64;
        let within = first.offset() + len <= self.size;
        if within && bufs.len() > 1 && self.read_run_direct(first.offset(), len, bufs)? {
            return Ok(());
        }
        for (i, buf) in bufs.iter_mut().enumerate() {
            self.read_block(BlockIndex(first.0 + i as u64), buf)?;
        }
        Ok(())
    }

    /// One `O_DIRECT` read of `len` bytes at `offset` into `bufs`: `Ok(false)` where
    /// the caller must read block by block (the run cached whole, a short read, or a
    /// filesystem that refuses).
    fn read_run_direct(&self, offset: u64, len: u64, bufs: &mut [AlignedBuf]) -> io::Result<bool> {
        let Some(direct) = &self.direct else {
            return Ok(false);
        };
        if self.cached_whole(offset, len) {
            return Ok(false);
        }
        let Ok(at) = libc::off64_t::try_from(offset) else {
            return Ok(false);
        };
        let iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        loop {
            // SAFETY: each iovec covers one live, exclusively borrowed buffer, for the call.
            let n = unsafe {
                libc::preadv64(
                    direct.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    at,
                )
            };
            match n {
                n if n >= 0 => return Ok(n as u64 == len),
                _ => match io::Error::last_os_error() {
                    e if e.kind() == io::ErrorKind::Interrupted => continue,
                    e if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
                    e => return Err(e),
                },
            }
        }
    }

    /// Whether the page cache holds the range whole, so that it is copied from there
    /// (an image just written, say): cheaper than reading the disk again. Never for a
    /// device: a filesystem mounted on it writes file data past the device's page
    /// cache, which may hold pages older than the disk (read by anyone, days ago).
    fn cached_whole(&self, offset: u64, len: u64) -> bool {
        self.kind == SourceKind::File
            && crate::sys::fully_cached(&self.file, offset, len) == Some(true)
    }

    /// Reads `buf` at `offset` with `O_DIRECT` where that is possible: `Ok(false)`
    /// when the caller must read through the page cache instead.
    fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let Some(direct) = &self.direct else {
            return Ok(false);
        };
        if !direct_io_fits(buf, offset) || self.cached_whole(offset, buf.len() as u64) {
            return Ok(false);
        }
        match direct.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            // Some filesystems accept O_DIRECT at open and refuse it on read.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The blocks that may hold data, ascending. Holes of a sparse file are skipped
    /// without reading them; a device (or a filesystem without SEEK_DATA) yields every block.
    pub fn data_blocks(&self) -> DataBlocks<'_> {
        DataBlocks {
            source: self,
            pos: 0,
            run: BlockIndex(0)..BlockIndex(0),
            next_unreported: BlockIndex(0),
            seek_supported: self.kind == SourceKind::File,
        }
    }

    /// Every block of the source, holes included, ascending.
    pub fn every_block(&self) -> DataBlocks<'_> {
        DataBlocks {
            seek_supported: false,
            ..self.data_blocks()
        }
    }

    /// Next data extent at or after `pos`: `Some((start, end))`, or `None` past the last.
    fn next_extent(&self, pos: u64) -> io::Result<Option<(u64, u64)>> {
        crate::sys::next_data_extent(&self.file, pos, self.size)
    }
}

/// Size of a block device in bytes (BLKGETSIZE64).
pub(crate) fn device_size(file: &File) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer we pass.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Iterator over the blocks of a source that may hold data (see [`Source::data_blocks`]).
pub struct DataBlocks<'a> {
    source: &'a Source,
    pos: u64,
    run: std::ops::Range<BlockIndex>,
    next_unreported: BlockIndex,
    seek_supported: bool,
}

impl DataBlocks<'_> {
    /// Finds the next run of data blocks; `Ok(false)` at the end.
    fn refill(&mut self) -> io::Result<bool> {
        let total = BlockIndex(self.source.block_count());
        if !self.seek_supported {
            self.run = self.next_unreported..total;
            self.next_unreported = total;
            return Ok(!self.run.is_empty());
        }
        loop {
            if self.pos >= self.source.size {
                return Ok(false);
            }
            let extent = match self.source.next_extent(self.pos) {
                Ok(e) => e,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // No SEEK_DATA here: treat the rest as data.
                    self.seek_supported = false;
                    return self.refill();
                }
                Err(e) => return Err(e),
            };
            let Some((start, end)) = extent else {
                return Ok(false);
            };
            self.pos = end;
            if end <= start {
                continue;
            }
            // Two extents may share a block: never report a block twice.
            let first = BlockIndex::containing(start).max(self.next_unreported);
            let last = BlockIndex::containing(end - 1);
            if first <= last {
                self.run = first..last.next();
                self.next_unreported = last.next();
                return Ok(true);
            }
        }
    }
}

impl Iterator for DataBlocks<'_> {
    type Item = io::Result<BlockIndex>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.run.is_empty() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        let index = self.run.start;
        self.run.start = index.next();
        Some(Ok(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BLOCK_SIZE_U64;
    use std::io::Write;

    fn blocks(src: &Source) -> Vec<u64> {
        src.data_blocks().map(|b| b.unwrap().0).collect()
    }

    #[test]
    fn blocks_read_together_are_the_blocks_read_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        // Three whole blocks and a tail: the run reads together, the tail alone.
        let data: Vec<u8> = (0..3 * BLOCK_SIZE + 4096)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let src = Source::open(&path).unwrap();
        evict(&src.file);
        for (first, count) in [(0, 3), (1, 3), (2, 2)] {
            let mut bufs: Vec<AlignedBuf> = (0..count).map(|_| AlignedBuf::new()).collect();
            src.read_blocks(BlockIndex(first), &mut bufs).unwrap();
            for (i, buf) in bufs.iter().enumerate() {
                let mut one = vec![0xEE; BLOCK_SIZE];
                src.read_block(BlockIndex(first + i as u64), &mut one)
                    .unwrap();
                assert!(buf[..] == one[..], "block {} of the run from {first}", i);
            }
        }
    }

    #[test]
    fn sparse_file_yields_only_blocks_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = File::create(&path).unwrap();
        f.set_len(64 * BLOCK_SIZE_U64).unwrap();
        f.write_all_at(b"x", 3 * BLOCK_SIZE_U64 + 10).unwrap();
        f.write_all_at(&[7; 100], 40 * BLOCK_SIZE_U64 - 50).unwrap();
        let src = Source::open(&path).unwrap();
        assert_eq!(src.size(), 64 * BLOCK_SIZE_U64);
        // Filesystems allocate in pages, so a write straddling a block edge marks both.
        assert_eq!(blocks(&src), vec![3, 39, 40]);
    }

    /// Evicts the file's pages from the page cache (after writing them back), so
    /// that the next read of them is a disk read.
    fn evict(file: &File) {
        file.sync_all().unwrap();
        // SAFETY: a hint on our own descriptor.
        let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
    }

    /// Cold, half-cached and cached blocks read the same bytes, whichever way they
    /// are read (from the page cache, directly, or both for one block).
    #[test]
    fn cold_and_cached_blocks_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..3 * BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        let f = File::create(&path).unwrap();
        f.write_all_at(&data, 0).unwrap();
        evict(&f);
        let src = Source::open(&path).unwrap();
        // Block 1's first half is cached again; blocks 0 and 2 stay cold.
        let mut half = vec![0; BLOCK_SIZE / 2];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut half, BLOCK_SIZE_U64)
            .unwrap();
        let mut buf = crate::block::AlignedBuf::new();
        for index in [0, 1, 2, 1, 0] {
            src.read_block(BlockIndex(index), &mut buf).unwrap();
            let start = index as usize * BLOCK_SIZE;
            assert!(buf[..] == data[start..start + BLOCK_SIZE], "block {index}");
        }
    }

    #[test]
    fn last_partial_block_is_zero_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0xAB; BLOCK_SIZE + 3]).unwrap();
        let src = Source::open(&path).unwrap();
        assert_eq!(src.block_count(), 2);
        assert_eq!(blocks(&src), vec![0, 1]);
        let mut buf = vec![0xFF; BLOCK_SIZE];
        src.read_block(BlockIndex(1), &mut buf).unwrap();
        assert_eq!(&buf[..3], &[0xAB; 3]);
        assert!(buf[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn empty_file_has_no_blocks_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        File::create(&path).unwrap();
        let src = Source::open(&path).unwrap();
        assert_eq!(src.block_count(), 0);
        assert!(blocks(&src).is_empty());
        assert!(Source::open(dir.path()).is_err());
    }
}

//! The page cache: how much of a file's range it holds (`cachestat`, Linux 6.5+).

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// `cachestat`'s number: new system calls share one number on every architecture.
const SYS_CACHESTAT: libc::c_long = 451;
const PAGE: u64 = 4096;

#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct CacheStat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether the page cache holds every page of `offset..offset + len`; `None` where
/// the kernel cannot say (before Linux 6.5). Asking reads no data and starts no I/O.
pub(crate) fn fully_cached(file: &File, offset: u64, len: u64) -> Option<bool> {
    let range = CacheStatRange { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live for the call and
    // laid out as the kernel's struct cachestat_range and struct cachestat.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CacheStatRange,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    (r == 0).then(|| stat.nr_cache >= len.div_ceil(PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn written_pages_are_cached_and_evicted_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        file.write_all_at(&[1; 65536], 0).unwrap();
        let Some(cached) = fully_cached(&file, 0, 65536) else {
            eprintln!("SKIPPED: this kernel has no cachestat (Linux 6.5+)");
            return;
        };
        assert!(cached, "pages just written are in the cache");
        file.sync_all().unwrap();
        // SAFETY: a hint on our own descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(fully_cached(&file, 0, 65536), Some(false));
    }
}

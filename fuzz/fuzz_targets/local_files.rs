//! The local store's on-disk parsers, one file at a time (src/store/local/): the
//! first byte picks the kind, the rest is the file. 0: a block map, 1: a journal,
//! 2: a pack index, 3: snapshot metadata, 4: the format file and the token key
//! (split at the first newline). Damage must be an error, never a crash or a hang.
#![no_main]

use ebsnap::fuzzing::local;
use ebsnap_fuzz::scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    match kind % 5 {
        0 => {
            if let Ok(n) = local::map_file(dir, file) {
                assert_eq!(
                    n,
                    (file.len() - 16) / 48,
                    "every record of a map that opens"
                );
            }
        }
        1 => {
            if let Ok(n) = local::journal(dir, file) {
                assert!(n <= file.len() / 48);
            }
        }
        2 => {
            if let Ok(n) = local::pack_index(dir, file) {
                assert_eq!(n, (file.len() - 16) / 32);
            }
        }
        3 => {
            let _ = local::meta(file);
        }
        _ => {
            let at = file.iter().position(|&b| b == b'\n').unwrap_or(file.len());
            let (format, key) = (&file[..at], file.get(at + 1..).unwrap_or_default());
            let (_, key_ok) = local::format_and_key(dir, format, key);
            assert_eq!(key_ok, key.len() == 32);
        }
    }
});

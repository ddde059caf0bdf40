//! The keys file of `ebsnap serve --keys` (src/server/keys.rs): TOML, serde with
//! `deny_unknown_fields`, the checks of each key (id, secret, role, 12-digit owner,
//! unique ids), and errors that name the file. The entry point also checks that no
//! key's `Debug` depends on its secret.
#![no_main]

use ebsnap::fuzzing::server;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = server::keys_file(text);
});

//! The TLS handshake of `ebsnap serve --tls-cert --tls-key`: arbitrary bytes as a
//! client's first flights (a ClientHello and whatever follows), fed to the server's
//! real acceptor with the server's real configuration, through the same handshake
//! function (and timeout) that connections go through.
//!
//! Beyond not crashing or hanging: no such input completes a handshake, since that
//! needs the client to answer the server's flight, which these bytes never saw.
#![no_main]

use ebsnap::fuzzing::server;
use ebsnap_fuzz::runtime;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn tls() -> &'static ebsnap::server::Tls {
    static TLS: OnceLock<ebsnap::server::Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        server::tls(
            include_bytes!("../tls/cert.pem"),
            include_bytes!("../tls/key.pem"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let completed = runtime().block_on(server::tls_handshake(tls(), data));
    assert!(!completed, "a handshake completed without a client");
});

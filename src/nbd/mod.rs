//! `ebsnap nbd`: a read-only NBD server for one snapshot, over the engine's
//! [`BlockReader`](crate::engine::recover::BlockReader).
//!
//! No maintained Rust NBD server fits (the `nbd` crate speaks only the old
//! negotiation; `tokio-nbd` is GPL and has no structured replies), so it is small and
//! written here: the protocol's bytes in [`proto`] (pure, and fuzzed), the connection
//! in `conn`, listening in `server`.

mod conn;
mod listen;
mod options;
pub mod proto;
mod server;

pub use listen::{ListenAddr, ListenError, DEFAULT_LISTEN};
pub use server::{serve, Listener};

#[cfg(test)]
mod proto_tests;

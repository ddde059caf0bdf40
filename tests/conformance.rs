//! Runs the one conformance suite against every store.

mod memory {
    ebsnap::conformance_tests!((ebsnap::store::MemoryStore::new(), ()));
}

mod local {
    use ebsnap::store::local::{Access, LockWait};
    use ebsnap::store::LocalStore;

    fn make() -> (LocalStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            LocalStore::open(&dir.path().join("store"), Access::Write, LockWait::Fail).unwrap();
        // Encrypted snapshots need a key file: the first one creates it.
        store.set_key_file(&dir.path().join("keys.toml")).unwrap();
        (store, dir)
    }

    ebsnap::conformance_tests!(make());
}

/// The EBS store, with the real aws-sdk-ebs/aws-sdk-ec2 clients, against `ebsnap serve`.
#[path = "common/server.rs"]
mod server;

mod ebs {
    use super::server;

    async fn make() -> (ebsnap::store::EbsStore, server::TestServer) {
        let server = server::TestServer::start(true).await;
        (server.client().await, server)
    }

    ebsnap::conformance_tests!(make().await);
}

/// The same, with PutSnapshotBlock and GetSnapshotBlock through the SDK's orchestrator
/// (as where a proxy is set) instead of ebsnap's own signed requests.
mod ebs_through_the_sdk {
    use super::server;

    async fn make() -> (ebsnap::store::EbsStore, server::TestServer) {
        let server = server::TestServer::start(true).await;
        (server.client_through_the_sdk().await, server)
    }

    ebsnap::conformance_tests!(make().await);
}

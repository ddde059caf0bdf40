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
        (store, dir)
    }

    ebsnap::conformance_tests!(make());
}

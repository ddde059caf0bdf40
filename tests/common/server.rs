#![allow(dead_code)]
//! An `ebsnap serve` in the test process, on 127.0.0.1:0 over a fresh local store.

use ebsnap::server::{self, Credentials};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{EbsOptions, EbsStore, LocalStore};
use std::sync::Arc;
use tokio::sync::oneshot;

pub const KEY_ID: &str = "AKIDEBSNAPTEST";
pub const SECRET: &str = "ebsnap-test-secret/0123456789abcdefghij";

pub struct TestServer {
    pub url: String,
    store: LocalStore,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts a server; with `auth`, every request must be signed with KEY_ID/SECRET.
    pub async fn start(auth: bool) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let local =
            LocalStore::open(&dir.path().join("store"), Access::Write, LockWait::Fail).unwrap();
        let store = Arc::new(local.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let credentials = auth.then(|| Credentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, store, credentials, async {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            store: local,
            _dir: dir,
            stop: Some(stop),
        }
    }

    /// The server's own store (shared with the server: the server's view of things).
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// ebsnap's EBS store, pointed at this server.
    pub async fn client(&self) -> EbsStore {
        self.client_with_secret(SECRET).await
    }

    pub async fn client_with_secret(&self, secret: &str) -> EbsStore {
        let options = EbsOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.url.clone()),
            static_credentials: Some((KEY_ID.into(), secret.into())),
            ..EbsOptions::default()
        };
        EbsStore::connect(&options).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

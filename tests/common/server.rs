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
        Self::start_over(auth, |local| Arc::new(local)).await
    }

    /// [`start`](Self::start), the server's store being what `layer` makes of its
    /// local store (a decorator that watches the calls, say).
    pub async fn start_over(
        auth: bool,
        layer: impl FnOnce(LocalStore) -> Arc<dyn ebsnap::store::SnapshotStore>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let local =
            LocalStore::open(&dir.path().join("store"), Access::Write, LockWait::Fail).unwrap();
        local.set_key_file(&dir.path().join("keys.toml")).unwrap();
        let store = layer(local.clone());
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
        let store = EbsStore::connect(&self.options(secret)).await.unwrap();
        assert!(
            store.sends_block_calls_itself() || EbsStore::proxy_in_environment(),
            "the block calls went through the SDK"
        );
        store
    }

    /// ebsnap's EBS store with its block calls through the SDK's orchestrator.
    pub async fn client_through_the_sdk(&self) -> EbsStore {
        let options = EbsOptions {
            sdk_block_calls: true,
            ..self.options(SECRET)
        };
        let store = EbsStore::connect(&options).await.unwrap();
        assert!(!store.sends_block_calls_itself());
        store
    }

    fn options(&self, secret: &str) -> EbsOptions {
        EbsOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.url.clone()),
            static_credentials: Some((KEY_ID.into(), secret.into())),
            ..EbsOptions::default()
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A real `ebsnap serve` process on 127.0.0.1:0, signing with KEY_ID/SECRET; killed
/// when dropped. Its stderr goes to a file (`stderr()` reads it: a panic in a handler
/// does not stop the process, but it shows there).
pub struct ServeProcess {
    child: std::process::Child,
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    log: tempfile::NamedTempFile,
}

impl ServeProcess {
    /// `ebsnap serve --store STORE EXTRA...`, run from `cwd`, with XDG directories under
    /// `xdg` (so that anything it writes outside its store lands where a test can see).
    pub fn start(
        store: &std::path::Path,
        cwd: &std::path::Path,
        xdg: &std::path::Path,
        extra: &[&str],
    ) -> ServeProcess {
        Self::start_limited(store, cwd, xdg, extra, None)
    }

    /// [`ServeProcess::start`], with at most `nofile` descriptors (`ulimit -n`) if given.
    pub fn start_limited(
        store: &std::path::Path,
        cwd: &std::path::Path,
        xdg: &std::path::Path,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> ServeProcess {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("ebsnap"));
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe, and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .args(extra)
            .current_dir(cwd)
            .env("EBSNAP_ACCESS_KEY_ID", KEY_ID)
            .env("EBSNAP_SECRET_ACCESS_KEY", SECRET)
            .env("EBSNAP_LOG", "ebsnap=info")
            .env_remove("EBSNAP_STORE")
            .env("XDG_DATA_HOME", xdg.join("data"))
            .env("XDG_STATE_HOME", xdg.join("state"))
            .env("HOME", xdg.join("home"))
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("the first line names the URL: {line:?}"))
            .to_owned();
        let addr = url.split_once("://").unwrap().1.to_owned();
        ServeProcess {
            child,
            url,
            addr,
            log,
        }
    }

    /// The server's resident memory now and at its peak (VmRSS, VmHWM), in MiB.
    pub fn rss_mib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            kib / 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// ebsnap's EBS store, pointed at this server.
    pub async fn client(&self) -> EbsStore {
        self.client_trusting(None).await
    }

    /// ebsnap's EBS store, pointed at this server, trusting the CA bundle `ca` if given.
    pub async fn client_trusting(&self, ca: Option<&std::path::Path>) -> EbsStore {
        let options = EbsOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.url.clone()),
            static_credentials: Some((KEY_ID.into(), SECRET.into())),
            ca_bundle: ca.map(Into::into),
            ..EbsOptions::default()
        };
        EbsStore::connect(&options).await.unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

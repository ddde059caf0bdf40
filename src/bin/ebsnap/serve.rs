//! `ebsnap serve`: the EBS direct API on a local store, until SIGINT or SIGTERM.

use crate::args::{Global, ServeLimits};
use crate::{store_location, EXIT_FAILURE};
use ebsnap::server::faults::{FaultSpec, Faults};
use ebsnap::server::{self, Credentials};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::LocalStore;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

pub async fn run(
    g: &Global,
    listen: SocketAddr,
    no_auth: bool,
    faults: Option<(FaultSpec, u64)>,
    limits: &ServeLimits,
) -> ebsnap::Result<u8> {
    let limits = server::Limits {
        header_timeout: std::time::Duration::from_secs(limits.header_timeout),
        body_timeout: std::time::Duration::from_secs(limits.body_timeout),
    };
    if g.store.as_deref() == Some(std::path::Path::new("ebs")) {
        eprintln!("ebsnap: error: serve needs a local store directory, not `ebs`");
        return Ok(2);
    }
    let credentials = match (
        std::env::var("EBSNAP_ACCESS_KEY_ID"),
        std::env::var("EBSNAP_SECRET_ACCESS_KEY"),
    ) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
        }),
        _ if no_auth => None,
        _ => {
            eprintln!("ebsnap: error: set EBSNAP_ACCESS_KEY_ID and EBSNAP_SECRET_ACCESS_KEY (the key pair clients sign with), or pass --no-auth");
            return Ok(2);
        }
    };
    let root = store_location(g.store.clone());
    // The server is the store's one writer for as long as it runs.
    let store = Arc::new(LocalStore::open(&root, Access::Write, LockWait::Fail)?);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ebsnap: error: cannot listen on {listen}: {e}");
            return Ok(EXIT_FAILURE);
        }
    };
    let addr = listener.local_addr().map_err(|e| ebsnap::Error::Target {
        what: "listening on",
        path: listen.to_string().into(),
        source: e,
    })?;
    // The first line on stdout is the URL: scripts (and tests) read it to find the port.
    println!(
        "ebsnap serve: listening on http://{addr} (store {}, auth {})",
        root.display(),
        if credentials.is_some() {
            "SigV4"
        } else {
            "off"
        }
    );
    let _ = std::io::stdout().flush();
    let mut app = server::router_with_limits(store, credentials, &limits);
    if let Some((spec, seed)) = faults {
        eprintln!("ebsnap serve: injecting faults {spec:?} (seed {seed})");
        app = server::with_faults(app, Faults::new(spec, seed));
    }
    server::serve_router_with_limits(listener, app, &limits, shutdown_signal())
        .await
        .map_err(|e| ebsnap::Error::Target {
            what: "serving on",
            path: addr.to_string().into(),
            source: e,
        })?;
    eprintln!("ebsnap serve: stopped");
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM: the server then stops accepting and lets requests in
/// flight finish.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

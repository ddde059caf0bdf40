//! The keys `serve` accepts: the environment's admin key and the keys file
//! (`--keys`), reloaded on SIGHUP.

use crate::exit::{Failure, Result};
use ebsnap::server::{Credentials, Key, Keys};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// The keys to serve with; `None` with --no-auth and no key at all.
pub fn load(file: Option<PathBuf>, no_auth: bool) -> Result<Option<Arc<Keys>>> {
    let admin = env_key().map(Key::admin);
    if admin.is_none() && file.is_none() {
        if no_auth {
            return Ok(None);
        }
        return Err(Failure::usage("set EBSNAP_ACCESS_KEY_ID and EBSNAP_SECRET_ACCESS_KEY (the key pair clients sign with), or give --keys FILE, or pass --no-auth"));
    }
    let keys = Keys::load(file, admin).map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Some(Arc::new(keys)))
}

/// The pair of EBSNAP_ACCESS_KEY_ID and EBSNAP_SECRET_ACCESS_KEY, if both are set.
fn env_key() -> Option<Credentials> {
    let id = std::env::var("EBSNAP_ACCESS_KEY_ID").ok()?;
    let secret = std::env::var("EBSNAP_SECRET_ACCESS_KEY").ok()?;
    (!id.is_empty() && !secret.is_empty()).then_some(Credentials {
        access_key_id: id,
        secret_access_key: secret,
    })
}

/// Reads the keys file again on each SIGHUP. A valid file replaces the keys at once
/// (the next request is checked against it); an invalid one is reported and the keys
/// stay as they were, so a typo in an edit never locks every client out.
pub fn reload_on_hangup(keys: Arc<Keys>) -> Result<()> {
    let Some(path) = keys.file().map(|p| p.display().to_string()) else {
        return Ok(());
    };
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| Failure::usage(format!("cannot watch for SIGHUP to reload {path}: {e}")))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // Reading and parsing a small file: off the async threads all the same.
            let again = keys.clone();
            match tokio::task::spawn_blocking(move || again.reload()).await {
                Ok(Ok(count)) => eprintln!("ebsnap serve: reloaded {path}: {count} keys"),
                Ok(Err(e)) => tracing::error!("not reloaded, the keys stay as they were: {e}"),
                Err(e) => tracing::error!("reloading {path}: {e}"),
            }
        }
    });
    Ok(())
}

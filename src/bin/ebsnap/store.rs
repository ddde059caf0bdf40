//! Opening the store the command line names.

use crate::args::Global;
use crate::dirs;
use crate::exit::Result;
use ebsnap::store::local::Access;
use ebsnap::store::{
    EbsOptions, EbsStore, LocalStore, PacedStore, RetryPolicy, RetryStore, SnapshotStore,
};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

/// Block requests per second EBS accepts for one snapshot.
const EBS_MAX_RATE: u32 = 1000;

/// The local store's directory, unless the store is `ebs`.
pub fn local_location(g: &Global) -> Option<PathBuf> {
    match &g.store {
        Some(flag) if flag.as_os_str() == "ebs" => None,
        Some(flag) => Some(flag.clone()),
        None => Some(dirs::default_store()),
    }
}

/// Opens the store the global flags name: `ebs`, or a local directory.
pub async fn open_store(g: &Global, access: Access) -> Result<Arc<dyn SnapshotStore>> {
    let Some(location) = local_location(g) else {
        return Ok(open_ebs(g).await);
    };
    let store = LocalStore::open(&location, access, g.lock_wait())?;
    Ok(match g.max_rate {
        Some(_) => Arc::new(PacedStore::new(store, max_rate(g, 0), g.workers.into())),
        None => Arc::new(store),
    })
}

async fn open_ebs(g: &Global) -> Arc<dyn SnapshotStore> {
    let options = EbsOptions {
        region: g.region.clone(),
        profile: g.profile.clone(),
        endpoint_url: g.endpoint_url.clone(),
        ..EbsOptions::default()
    };
    // Block requests are paced (the service's per-snapshot limit); throttling, service
    // errors and the service's short memory lapses right after a start or completion
    // are retried, with backoff.
    let store = EbsStore::connect(&options).await;
    let paced = PacedStore::new(store, max_rate(g, EBS_MAX_RATE), g.workers.into());
    Arc::new(RetryStore::new(paced, RetryPolicy::default()))
}

fn max_rate(g: &Global, default: u32) -> NonZeroU32 {
    NonZeroU32::new(g.max_rate.unwrap_or(default)).unwrap_or(NonZeroU32::MIN)
}

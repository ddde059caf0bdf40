//! Opening the store the command line names: `--store LOCATION` (else $EBSNAP_STORE,
//! else the XDG data directory), parsed once into a [`StoreLocation`].

use crate::args::Global;
use crate::dirs;
use crate::exit::{Failure, Result};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{
    EbsOptions, EbsStore, LocalStore, PacedStore, RetryPolicy, RetryStore, SnapshotStore,
    StoreLocation,
};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

/// Block requests per second EBS accepts for one snapshot.
const EBS_MAX_RATE: u32 = 1000;

/// How to reach and pace a store, besides where it is: the global flags.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub lock_wait: LockWait,
    /// Block requests in flight at once, at most.
    pub workers: usize,
    pub max_rate: Option<u32>,
}

impl From<&Global> for StoreSettings {
    fn from(g: &Global) -> StoreSettings {
        StoreSettings {
            region: g.region.clone(),
            profile: g.profile.clone(),
            endpoint_url: g.endpoint_url.clone(),
            lock_wait: g.lock_wait(),
            workers: g.workers.into(),
            max_rate: g.max_rate,
        }
    }
}

/// Where the store is: `flag` (--store), else $EBSNAP_STORE (the same syntax), else
/// the XDG data directory.
pub fn location(flag: Option<StoreLocation>) -> Result<StoreLocation> {
    if let Some(location) = flag {
        return Ok(location);
    }
    match dirs::env_value("EBSNAP_STORE") {
        Some(value) => StoreLocation::parse_os(&value)
            .map_err(|e| Failure::usage(format!("EBSNAP_STORE: {e}"))),
        None => Ok(StoreLocation::Local(dirs::data_store())),
    }
}

/// The directory of a local store; `None` for the other kinds.
pub fn local_dir(location: &StoreLocation) -> Option<&Path> {
    match location {
        StoreLocation::Local(dir) => Some(dir),
        StoreLocation::Ebs { .. } | StoreLocation::Endpoint { .. } => None,
    }
}

/// Opens the store at `location`, for `access`: every command's one way to a store.
pub async fn open_store(
    location: &StoreLocation,
    settings: &StoreSettings,
    access: Access,
) -> Result<Arc<dyn SnapshotStore>> {
    let agree = |given: &str, flag: &Option<String>, name: &str| match flag {
        Some(other) if other != given => Err(Failure::usage(format!(
            "--store {location} and {name} {other} disagree: give one of them"
        ))),
        _ => Ok(Some(given.to_owned())),
    };
    let (region, endpoint_url) = match location {
        StoreLocation::Local(dir) => return open_local(dir, settings, access),
        StoreLocation::Ebs { region: None } => {
            (settings.region.clone(), settings.endpoint_url.clone())
        }
        StoreLocation::Ebs { region: Some(r) } => (
            agree(r, &settings.region, "--region")?,
            settings.endpoint_url.clone(),
        ),
        StoreLocation::Endpoint { url } => (
            settings.region.clone(),
            agree(url, &settings.endpoint_url, "--endpoint-url")?,
        ),
    };
    let options = EbsOptions {
        region,
        profile: settings.profile.clone(),
        endpoint_url,
        ..EbsOptions::default()
    };
    Ok(open_ebs(&options, settings).await)
}

fn open_local(
    dir: &Path,
    settings: &StoreSettings,
    access: Access,
) -> Result<Arc<dyn SnapshotStore>> {
    let store = LocalStore::open(dir, access, settings.lock_wait)?;
    // A local store is not paced unless asked: nothing throttles it.
    Ok(match settings.max_rate {
        Some(rate) => Arc::new(PacedStore::new(store, nonzero(rate), settings.workers)),
        None => Arc::new(store),
    })
}

async fn open_ebs(options: &EbsOptions, settings: &StoreSettings) -> Arc<dyn SnapshotStore> {
    // Block requests are paced (the service's per-snapshot limit); throttling, service
    // errors and the service's short memory lapses right after a start or completion
    // are retried, with backoff.
    let rate = settings.max_rate.unwrap_or(EBS_MAX_RATE);
    let store = EbsStore::connect(options).await;
    let paced = PacedStore::new(store, nonzero(rate), settings.workers);
    Arc::new(RetryStore::new(paced, RetryPolicy::default()))
}

fn nonzero(rate: u32) -> NonZeroU32 {
    NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN)
}

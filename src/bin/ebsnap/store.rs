//! Opening the store the command line names: `--store LOCATION` (else $EBSNAP_STORE,
//! else the XDG data directory), parsed once into a [`StoreLocation`].

use crate::args::Global;
use crate::dirs;
use crate::exit::{Failure, Result};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{
    is_amazon_endpoint, Bandwidth, EbsOptions, EbsStore, LimitedStore, LocalStore, PacedStore,
    RetryPolicy, RetryStore, SnapshotStore, StoreLocation,
};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
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
    /// --limit-upload and --limit-download: one pair of buckets for the process, shared
    /// by every store opened with these settings (and their clones: both sides of a copy).
    pub bandwidth: Bandwidth,
    /// The key file of encrypted snapshots in a local store.
    pub key_file: PathBuf,
}

impl From<&Global> for StoreSettings {
    fn from(g: &Global) -> StoreSettings {
        StoreSettings {
            region: g.region.clone(),
            profile: g.profile.clone(),
            endpoint_url: g.endpoint_url.clone(),
            lock_wait: g.lock_wait(),
            workers: g.workers(),
            max_rate: g.max_rate,
            bandwidth: Bandwidth::new(g.limit_upload.map(|r| r.0), g.limit_download.map(|r| r.0)),
            key_file: g.key_file.clone().unwrap_or_else(dirs::key_file),
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
    open_ebs(&options, settings).await
}

fn open_local(
    dir: &Path,
    settings: &StoreSettings,
    access: Access,
) -> Result<Arc<dyn SnapshotStore>> {
    let store = open_local_store(dir, access, settings)?;
    // Limited like any other: a local store can sit on a network filesystem.
    let store = LimitedStore::new(store, settings.bandwidth.clone());
    // A local store is not paced unless asked: nothing throttles it.
    Ok(match settings.max_rate {
        Some(rate) => Arc::new(PacedStore::new(
            store,
            Some(nonzero(rate)),
            settings.workers,
        )),
        None => Arc::new(store),
    })
}

/// The local store itself, with its key file.
pub fn open_local_store(
    dir: &Path,
    access: Access,
    settings: &StoreSettings,
) -> Result<LocalStore> {
    let store = LocalStore::open(dir, access, settings.lock_wait)?;
    store.set_key_file(&settings.key_file)?;
    Ok(store)
}

async fn open_ebs(
    options: &EbsOptions,
    settings: &StoreSettings,
) -> Result<Arc<dyn SnapshotStore>> {
    // Block requests are paced (Amazon's per-snapshot limit, or what --max-rate says),
    // and fewer go at once after a throttle; throttling, service errors and the
    // service's short memory lapses right after a start or completion are retried,
    // with backoff.
    let endpoint = ebs_endpoint(options.endpoint_url.as_deref(), |name| {
        dirs::env_value(name).and_then(|v| v.into_string().ok())
    });
    // Without a pace, the store keeps only its back-off from throttling, and the flow
    // finds the rate by itself (a pace it reports would be a rate to aim at).
    let rate = settings
        .max_rate
        .or_else(|| default_max_rate(endpoint.as_deref()));
    match rate {
        Some(rate) => {
            tracing::debug!("EBS endpoint {endpoint:?}: at most {rate} block requests a second")
        }
        None => tracing::debug!("EBS endpoint {endpoint:?}: no cap on block requests"),
    }
    let store = EbsStore::connect(options).await?;
    // Inside the pacing: a request waits for its bytes' turn once it has its place,
    // right before it is sent.
    let store = LimitedStore::new(store, settings.bandwidth.clone());
    let paced = PacedStore::new(store, rate.map(nonzero), settings.workers);
    Ok(Arc::new(RetryStore::new(paced, RetryPolicy::default())))
}

/// The endpoint the EBS client sends block requests to, as the AWS SDK picks it: the
/// one given, else AWS_ENDPOINT_URL_EBS, else AWS_ENDPOINT_URL. `None`: Amazon's own,
/// for the region.
fn ebs_endpoint(given: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    given
        .map(str::to_owned)
        .or_else(|| env("AWS_ENDPOINT_URL_EBS"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
}

/// Block requests per second when --max-rate is not given: EBS's limit per snapshot
/// on Amazon's endpoints (`None`: Amazon's own), no cap on any other (an EBS-compatible
/// server throttles when it must, and the pacing backs off).
fn default_max_rate(endpoint: Option<&str>) -> Option<u32> {
    match endpoint {
        Some(url) if !is_amazon_endpoint(url) => None,
        _ => Some(EBS_MAX_RATE),
    }
}

fn nonzero(rate: u32) -> NonZeroU32 {
    NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amazon_endpoints_are_paced_to_the_service_limit_and_others_are_not_capped() {
        assert_eq!(default_max_rate(None), Some(EBS_MAX_RATE));
        for amazon in [
            "https://ebs.us-east-1.amazonaws.com",
            "https://ebs-fips.us-gov-west-1.amazonaws.com",
            "https://vpce-0a1b-c2d3.ebs.us-east-1.vpce.amazonaws.com",
            "https://ebs.eu-west-1.api.aws",
        ] {
            assert_eq!(
                default_max_rate(Some(amazon)),
                Some(EBS_MAX_RATE),
                "{amazon}"
            );
        }
        for other in [
            "http://127.0.0.1:9000",
            "https://backup.example:9443",
            "https://amazonaws.com.evil.example",
        ] {
            assert_eq!(default_max_rate(Some(other)), None, "{other}");
        }
    }

    #[test]
    fn the_endpoint_given_comes_first_then_the_ebs_variable_then_the_general_one() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[
            ("AWS_ENDPOINT_URL", "http://all:1"),
            ("AWS_ENDPOINT_URL_EBS", "http://ebs:2"),
            ("AWS_ENDPOINT_URL_EC2", "http://ec2:3"),
        ]);
        assert_eq!(
            ebs_endpoint(Some("http://given:4"), both).as_deref(),
            Some("http://given:4")
        );
        assert_eq!(ebs_endpoint(None, both).as_deref(), Some("http://ebs:2"));
        let general = env(&[("AWS_ENDPOINT_URL", "http://all:1")]);
        assert_eq!(ebs_endpoint(None, general).as_deref(), Some("http://all:1"));
        // EC2's endpoint carries no block requests.
        let ec2 = env(&[("AWS_ENDPOINT_URL_EC2", "http://ec2:3")]);
        assert_eq!(ebs_endpoint(None, ec2), None);
    }
}

//! A custom CA bundle for the EBS client, found where the AWS CLI and boto3 look:
//! `AWS_CA_BUNDLE`, else the selected profile's `ca_bundle`. The Rust SDK reads
//! neither, so this does, and hands the SDK an HTTPS client that trusts it (and the
//! block requests' client, [`super::http`], the same roots).
//!
//! As with the AWS CLI (botocore passes the bundle to urllib3 as its only CA file),
//! the bundle replaces the system's roots rather than adding to them: an operator who
//! names a bundle decides exactly whom the client trusts.

use super::*;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::path::{Path, PathBuf};

/// Where a bundle was named, for errors.
#[derive(Clone, Copy, Debug)]
enum Source {
    Option,
    Environment,
    Profile,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Option => "the CA bundle",
            Source::Environment => "the CA bundle of AWS_CA_BUNDLE",
            Source::Profile => "the CA bundle of the profile's ca_bundle",
        }
    }
}

/// A bundle to trust: its certificates, and the SDK's HTTPS client trusting them.
pub(super) struct Bundle {
    pub(super) roots: Arc<rustls::RootCertStore>,
    pub(super) sdk_client: aws_sdk_ebs::config::SharedHttpClient,
}

/// The bundle `options` resolve to, if any.
pub(super) async fn bundle(options: &EbsOptions) -> StoreResult<Option<Bundle>> {
    let Some((path, source)) = bundle_path(options).await else {
        return Ok(None);
    };
    let (pem, roots) = read_bundle(&path, source)?;
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem);
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| bundle_error(&path, source, e.to_string()))?;
    Ok(Some(Bundle {
        roots: Arc::new(roots),
        sdk_client: sdk_client(context),
    }))
}

/// The SDK's HTTPS client with `context`'s roots, through the proxy the environment
/// names, as the SDK's default client goes.
fn sdk_client(context: TlsContext) -> aws_sdk_ebs::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder = aws_smithy_http_client::Connector::builder()
            .proxy_config(ProxyConfig::from_env())
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context.clone());
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.build()
    })
}

/// The bundle to trust: the option, else `AWS_CA_BUNDLE`, else the profile's
/// `ca_bundle` (the environment wins over the profile, as in botocore).
async fn bundle_path(options: &EbsOptions) -> Option<(PathBuf, Source)> {
    if let Some(path) = &options.ca_bundle {
        return Some((path.clone(), Source::Option));
    }
    if let Some(path) = std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(path), Source::Environment));
    }
    let path = profile_ca_bundle(options.profile.as_deref()).await?;
    Some((expand_home(&path), Source::Profile))
}

/// The `ca_bundle` of the selected profile (`--profile`, else `AWS_PROFILE`, else
/// `default`), read with aws-config's own parser and files (`AWS_CONFIG_FILE`, ...).
async fn profile_ca_bundle(profile: Option<&str>) -> Option<String> {
    use aws_runtime::env_config::file::EnvConfigFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    let selected = profile.map(|p| std::borrow::Cow::Owned(p.to_owned()));
    match aws_config::profile::load(
        &Fs::real(),
        &Env::real(),
        &EnvConfigFiles::default(),
        selected,
    )
    .await
    {
        Ok(profiles) => profiles.get("ca_bundle").map(str::to_owned),
        Err(e) => {
            // aws-config reports a broken profile file where it matters (credentials).
            tracing::debug!("reading the AWS profiles for ca_bundle: {e}");
            None
        }
    }
}

/// `~/…` as botocore reads it (it expands the user's home in `ca_bundle`).
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The bundle's bytes (for the SDK's client, which would panic on a certificate that
/// does not parse) and its certificates, once every one parses.
fn read_bundle(path: &Path, source: Source) -> StoreResult<(Vec<u8>, rustls::RootCertStore)> {
    let pem = std::fs::read(path).map_err(|e| StoreError::Io {
        context: format!("reading {} {}", source.as_str(), path.display()),
        source: e,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bundle_error(path, source, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bundle_error(
            path,
            source,
            "no PEM certificate in it".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| bundle_error(path, source, format!("certificate {}: {e}", n + 1)))?;
    }
    Ok((pem, roots))
}

fn bundle_error(path: &Path, source: Source, message: String) -> StoreError {
    StoreError::Io {
        context: format!("{} {}", source.as_str(), path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    }
}

//! SigV4 for the block calls: aws-sigv4 (the SDK's signer) with the settings the SDK
//! uses for them, credentials cached from the SDK's chain, and the service's clock.

use super::*;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::identity::Identity;
use std::sync::atomic::{AtomicI64, Ordering};

/// Credentials this close to their expiry are refreshed first: the SDK's identity
/// cache's margin.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// How long credentials without an expiry are used before the chain is asked again:
/// the SDK's identity cache's default.
const UNDATED_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Beyond this round trip an answer's `Date` says too little about the service's
/// clock to correct ours by (the SDK's limit).
const MAX_TRUSTED_ROUND_TRIP: Duration = Duration::from_secs(15 * 60);

pub(super) struct Signer {
    provider: SharedCredentialsProvider,
    /// The last credentials the chain gave, as the identity aws-sigv4 signs with (made
    /// once per refresh, not once per call), and until when (on the service's clock)
    /// they are used: read by every call, written by a refresh.
    cached: std::sync::RwLock<Option<(Identity, SystemTime)>>,
    /// Held by the one refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    region: String,
    /// How far the service's clock is ahead of ours, in milliseconds.
    skew_ms: AtomicI64,
}

impl Signer {
    pub fn new(provider: SharedCredentialsProvider, region: String) -> Signer {
        Signer {
            provider,
            cached: std::sync::RwLock::default(),
            refreshing: tokio::sync::Mutex::default(),
            region,
            skew_ms: AtomicI64::new(0),
        }
    }

    /// Signs `request` in its headers; the local time it was signed at (for
    /// [`Signer::learn_skew`]).
    pub async fn sign(
        &self,
        request: &mut ::http::Request<SdkBody>,
        context: &str,
    ) -> StoreResult<SystemTime> {
        let identity = self.identity(context).await?;
        let now = SystemTime::now();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ebs")
            .time(self.service_time(now))
            .settings(settings(request.method()))
            .build()
            .map_err(|e| unsignable(context, &e))?
            .into();
        let signable = signable(request).map_err(|e| unsignable(context, &e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| unsignable(context, &e))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(now)
    }

    /// Credentials from the cache, or fresh from the chain once they are due: a chain
    /// that asks IMDS or STS must not be asked once per block. Calls that find them due
    /// together wait for one refresh.
    async fn identity(&self, context: &str) -> StoreResult<Identity> {
        if let Some(c) = self.cached_until_due() {
            return Ok(c);
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(c) = self.cached_until_due() {
            return Ok(c);
        }
        let loaded = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| no_credentials(context, &e))?;
        let due = due(&loaded, self.service_time(SystemTime::now()));
        let identity = Identity::from(loaded);
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        *cached = Some((identity.clone(), due));
        Ok(identity)
    }

    fn cached_until_due(&self) -> Option<Identity> {
        let now = self.service_time(SystemTime::now());
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        let (identity, due) = cached.as_ref()?;
        (*due > now).then(|| identity.clone())
    }

    /// Our time, corrected by what the service's answers said of its clock.
    fn service_time(&self, now: SystemTime) -> SystemTime {
        let skew = self.skew_ms.load(Ordering::Relaxed);
        let shift = Duration::from_millis(skew.unsigned_abs());
        let shifted = if skew >= 0 {
            now.checked_add(shift)
        } else {
            now.checked_sub(shift)
        };
        shifted.unwrap_or(now)
    }

    /// Learns the service's clock from an answer's `Date`, as the SDK does from every
    /// answer: the service's time against the middle of the round trip. A cached answer
    /// (`Age`) or a slow one says nothing reliable.
    pub fn learn_skew(&self, sent: SystemTime, received: SystemTime, headers: &::http::HeaderMap) {
        if headers.contains_key("age") {
            return;
        }
        let Some(server) = server_time(headers) else {
            return;
        };
        let Ok(round_trip) = received.duration_since(sent) else {
            return;
        };
        if round_trip > MAX_TRUSTED_ROUND_TRIP {
            return;
        }
        let midpoint = sent + round_trip / 2;
        self.skew_ms
            .store(signed_ms(server, midpoint), Ordering::Relaxed);
    }
}

/// When credentials loaded at `now` are asked for again: shortly before they expire,
/// or, where they say no expiry, after the SDK's default lifetime (a profile's keys
/// may be rotated, a `credential_process` may answer otherwise).
fn due(credentials: &Credentials, now: SystemTime) -> SystemTime {
    match credentials.expiry() {
        Some(expiry) => expiry.checked_sub(EXPIRY_MARGIN).unwrap_or(expiry),
        None => now + UNDATED_LIFETIME,
    }
}

fn server_time(headers: &::http::HeaderMap) -> Option<SystemTime> {
    let date = headers.get("date")?.to_str().ok()?;
    let parsed =
        aws_smithy_types::DateTime::from_str(date, aws_smithy_types::date_time::Format::HttpDate);
    SystemTime::try_from(parsed.ok()?).ok()
}

/// `a - b` in milliseconds, signed.
fn signed_ms(a: SystemTime, b: SystemTime) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match a.duration_since(b) {
        Ok(ahead) => ms(ahead),
        Err(behind) => -ms(behind.duration()),
    }
}

/// The SDK's settings for these calls: a put signs `UNSIGNED-PAYLOAD` and says so in
/// `x-amz-content-sha256`; a get signs its empty body without that header. Both
/// double-encode and normalize the path (aws-sigv4's defaults).
fn settings(method: &::http::Method) -> SigningSettings {
    let mut settings = SigningSettings::default();
    if method == ::http::Method::PUT {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    settings
}

fn signable(request: &::http::Request<SdkBody>) -> Result<SignableRequest<'_>, BoxError> {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| Ok((name.as_str(), value.to_str()?)))
        .collect::<Result<Vec<_>, ::http::header::ToStrError>>()?;
    let body = if request.method() == ::http::Method::PUT {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(&[])
    };
    let uri = request.uri().to_string();
    Ok(SignableRequest::new(
        request.method().as_str(),
        uri,
        headers.into_iter(),
        body,
    )?)
}

fn unsignable(context: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::invalid(
        ValidationReason::InvalidParameterValue,
        format!("{context}: cannot sign the request: {e}"),
    )
}

/// A chain set up wrong will not have credentials on the next attempt; one that found
/// none, or failed to reach its source (IMDS, STS, SSO), may.
fn no_credentials(context: &str, e: &CredentialsError) -> StoreError {
    let why = aws_smithy_types::error::display::DisplayErrorContext(e);
    let message = format!("{context}: no credentials to sign with: {why}");
    match e {
        CredentialsError::InvalidConfiguration(_) => StoreError::AccessDenied { message },
        // Not loaded is also what IMDS says when it cannot be reached: at an hourly
        // refresh, a blip that the next attempt may not meet.
        _ => StoreError::Unavailable { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let credentials = Credentials::new("AKID", "secret", None, None, "test");
        Signer::new(
            SharedCredentialsProvider::new(credentials),
            "us-east-1".into(),
        )
    }

    fn dated(date: &str) -> ::http::HeaderMap {
        let mut headers = ::http::HeaderMap::new();
        headers.insert("date", date.parse().unwrap());
        headers
    }

    #[test]
    fn the_services_clock_is_learned_from_the_middle_of_the_round_trip() {
        let signer = signer();
        // Sun, 06 Nov 1994 08:49:37 GMT
        let server = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        let sent = server - Duration::from_secs(3600);
        let received = sent + Duration::from_secs(2);
        signer.learn_skew(sent, received, &dated("Sun, 06 Nov 1994 08:49:37 GMT"));
        let expected = Duration::from_secs(3599);
        assert_eq!(signer.service_time(sent + Duration::from_secs(1)), server);
        assert_eq!(
            signer.skew_ms.load(Ordering::Relaxed),
            expected.as_millis() as i64
        );
        // A clock ahead of the service's is corrected back.
        signer.learn_skew(
            server + expected,
            server + expected,
            &dated("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            signer.service_time(server + Duration::from_secs(5)),
            server + Duration::from_secs(5) - expected
        );
    }

    #[test]
    fn a_cached_slow_or_undated_answer_teaches_nothing() {
        let signer = signer();
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777 - 600);
        let mut cached = dated("Sun, 06 Nov 1994 08:49:37 GMT");
        cached.insert("age", "30".parse().unwrap());
        signer.learn_skew(sent, sent, &cached);
        let slow = sent + MAX_TRUSTED_ROUND_TRIP + Duration::from_secs(1);
        signer.learn_skew(sent, slow, &dated("Sun, 06 Nov 1994 08:49:37 GMT"));
        signer.learn_skew(sent, sent, &dated("yesterday"));
        signer.learn_skew(sent, sent, &::http::HeaderMap::new());
        assert_eq!(signer.skew_ms.load(Ordering::Relaxed), 0);
    }

    /// A chain that counts its calls, handing out credentials that expire `lasting`
    /// from now.
    #[derive(Debug)]
    struct Counting {
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        lasting: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let expiry = SystemTime::now() + self.lasting;
            let credentials = Credentials::new("AKID", "secret", None, Some(expiry), "test");
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
        }
    }

    async fn calls_for_three_signatures(lasting: Duration) -> usize {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let chain = Counting {
            calls: calls.clone(),
            lasting,
        };
        let signer = Signer::new(SharedCredentialsProvider::new(chain), "us-east-1".into());
        for _ in 0..3 {
            let mut request = ::http::Request::get("https://ebs.us-east-1.amazonaws.com/snapshots")
                .body(SdkBody::empty())
                .unwrap();
            signer.sign(&mut request, "test").await.unwrap();
            assert!(request.headers().contains_key("authorization"));
        }
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn the_chain_is_asked_again_only_when_its_credentials_are_about_to_expire() {
        assert_eq!(
            calls_for_three_signatures(Duration::from_secs(3600)).await,
            1
        );
        assert_eq!(calls_for_three_signatures(Duration::from_secs(5)).await, 3);
    }

    #[test]
    fn credentials_are_due_shortly_before_they_expire_or_after_a_while() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiry = now + Duration::from_secs(60);
        let expiring = Credentials::new("A", "s", None, Some(expiry), "t");
        assert_eq!(due(&expiring, now), expiry - EXPIRY_MARGIN);
        let undated = Credentials::new("A", "s", None, None, "t");
        assert_eq!(due(&undated, now), now + UNDATED_LIFETIME);
    }

    #[test]
    fn a_chain_that_found_nothing_may_next_time_and_one_set_up_wrong_will_not() {
        use aws_credential_types::provider::error::CredentialsError as E;
        let unavailable = no_credentials("c", &E::not_loaded("IMDS is not reachable"));
        assert!(
            matches!(unavailable, StoreError::Unavailable { .. }),
            "{unavailable:?}"
        );
        let wrong = no_credentials("c", &E::invalid_configuration("a loop of profiles"));
        assert!(
            matches!(wrong, StoreError::AccessDenied { .. }),
            "{wrong:?}"
        );
    }
}

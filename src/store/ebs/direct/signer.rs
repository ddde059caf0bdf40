//! SigV4 for the block calls: aws-sigv4 (the SDK's signer) with the settings the SDK
//! uses for them, credentials cached from the SDK's chain, and the service's clock.

use super::*;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_smithy_runtime_api::client::identity::Identity;
use std::sync::atomic::{AtomicI64, Ordering};

/// Credentials this close to their expiry are refreshed first: the SDK's identity
/// cache's margin.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Beyond this round trip an answer's `Date` says too little about the service's
/// clock to correct ours by (the SDK's limit).
const MAX_TRUSTED_ROUND_TRIP: Duration = Duration::from_secs(15 * 60);

pub(super) struct Signer {
    provider: SharedCredentialsProvider,
    /// The last credentials the chain gave; one refresh at a time.
    cached: tokio::sync::Mutex<Option<Credentials>>,
    region: String,
    /// How far the service's clock is ahead of ours, in milliseconds.
    skew_ms: AtomicI64,
}

impl Signer {
    pub fn new(provider: SharedCredentialsProvider, region: String) -> Signer {
        Signer {
            provider,
            cached: tokio::sync::Mutex::default(),
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
        let identity = Identity::from(self.credentials(context).await?);
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

    /// Credentials from the cache, or fresh from the chain where they are about to
    /// expire: a chain that asks IMDS or STS must not be asked once per block.
    async fn credentials(&self, context: &str) -> StoreResult<Credentials> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached.as_ref().filter(|c| fresh(c, now)) {
            return Ok(c.clone());
        }
        let loaded = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| no_credentials(context, &e))?;
        *cached = Some(loaded.clone());
        Ok(loaded)
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

fn fresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials
        .expiry()
        .is_none_or(|expiry| expiry > now + EXPIRY_MARGIN)
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn unsignable(context: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::invalid(
        ValidationReason::InvalidParameterValue,
        format!("{context}: cannot sign the request: {e}"),
    )
}

/// A chain that has no credentials, or is set up wrong, will not have them on the next
/// attempt; one that failed to reach its source (IMDS, STS, SSO) may.
fn no_credentials(context: &str, e: &CredentialsError) -> StoreError {
    let why = aws_smithy_types::error::display::DisplayErrorContext(e);
    let message = format!("{context}: no credentials to sign with: {why}");
    match e {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            StoreError::AccessDenied { message }
        }
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
    fn credentials_near_their_expiry_are_not_fresh() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiring =
            |s| Credentials::new("A", "s", None, Some(now + Duration::from_secs(s)), "t");
        assert!(fresh(&Credentials::new("A", "s", None, None, "t"), now));
        assert!(fresh(&expiring(60), now));
        assert!(!fresh(&expiring(5), now));
    }
}

//! PutSnapshotBlock and GetSnapshotBlock, signed and sent by ebsnap itself on the block
//! client's connections instead of through the SDK's orchestrator.
//!
//! Why: a backup or a restore makes 2048 of these calls per GiB, and the orchestrator's
//! work around each (its interceptors, config bags, endpoint rules, the stalled-stream
//! body wrappers, tracing spans) cost a sixth of a backup's CPU and a tenth of a
//! restore's, measured through `ebsnap serve` on loopback (see the issue 9 note).
//!
//! What these calls need of the SDK, they keep: its endpoint rules, resolved once with
//! its own resolver and the same settings ([`endpoint`]); its credential chain, whose
//! answer is cached until shortly before it expires; SigV4 as aws-sigv4 signs for the
//! SDK (double-encoded, normalized paths; `UNSIGNED-PAYLOAD` for a put's body, whose
//! signed `x-amz-Checksum` protects it); its clock-skew correction, learned from each
//! answer's `Date`; its reading of error answers (`x-amzn-ErrorType`, then the body's
//! `__type` or `code`); and one limit over a whole attempt. Each call makes one attempt:
//! `RetryStore` is the one retry policy, as for the SDK's calls. Everything else (EC2,
//! StartSnapshot, the listings, CompleteSnapshot) stays with the SDK, and so do these two
//! calls where a proxy is set (the SDK's client goes through it; this one does not).

mod answer;
mod signer;

use super::http::{self, DirectClient};
use super::*;
use crate::block::BufferPool;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection};
use signer::Signer;
use std::time::SystemTime;

/// What a percent-encoded query value keeps as is: RFC 3986's unreserved characters
/// (as the SDK encodes query values).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The most of an error answer's body that is read: enough for any JSON error the
/// service sends, and a bound on what a hostile or broken endpoint can make us hold.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The two block calls, on their own connection pool.
pub(super) struct BlockCalls {
    client: DirectClient,
    /// The resolved endpoint, without a trailing `/`.
    base: String,
    /// The endpoint as errors name it.
    endpoint: String,
    signer: Signer,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for BlockCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCalls")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What `BlockCalls::new` needs of the store's set-up.
pub(super) struct Setup<'a> {
    pub config: &'a aws_types::SdkConfig,
    pub roots: &'a http::Roots,
    pub endpoint: &'a str,
    pub attempt_timeout: Duration,
}

impl BlockCalls {
    /// The calls for `setup`; none where a proxy is set, where the configuration has
    /// no credentials to sign with, or where the SDK's endpoint rules give no endpoint
    /// (the SDK's calls then say what is wrong, EBS's only).
    pub async fn new(setup: Setup<'_>) -> Option<BlockCalls> {
        let client = http::direct_client(setup.roots)?;
        let credentials = setup.config.credentials_provider()?;
        let region = setup.config.region()?.to_string();
        let base = match endpoint::resolve(setup.config, &region).await {
            Ok(base) => base,
            Err(why) => {
                tracing::debug!("block calls go through the SDK: {why}");
                return None;
            }
        };
        tracing::debug!("block calls: signed and sent by ebsnap to {base}");
        Some(BlockCalls {
            client,
            base,
            endpoint: setup.endpoint.to_owned(),
            signer: Signer::new(credentials, region),
            attempt_timeout: setup.attempt_timeout,
        })
    }

    /// PutSnapshotBlock; the checksum the service computed, where it says one.
    pub async fn put(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: &HashedBlock,
        checksum: Digest,
    ) -> StoreResult<Option<Digest>> {
        let context = format!("PutSnapshotBlock {id} block {index}");
        let request = ::http::Request::put(self.block_uri(id, index)?)
            .header("content-type", "application/octet-stream")
            .header("content-length", BLOCK_SIZE)
            .header("x-amz-data-length", BLOCK_SIZE)
            .header("x-amz-checksum", checksum.to_base64())
            .header("x-amz-checksum-algorithm", "SHA256")
            .body(SdkBody::from(block.data().clone()));
        let read = |answer: Answer| async move {
            let computed =
                answer::header(answer.headers(), "x-amz-checksum").and_then(Digest::from_base64);
            // A body after the head is read (as far as the limit) before the call
            // ends: hyper gives the connection to the next call only then, else it
            // opens another, TLS and all. The block has landed: a body that stalls
            // costs the connection, never a second put.
            let drained = answer::read_limited(answer.into_body(), ERROR_BODY_LIMIT);
            let _ = tokio::time::timeout(DRAIN_LIMIT, drained).await;
            Ok(computed)
        };
        self.attempt(request, &context, read).await
    }

    /// GetSnapshotBlock, its body gathered into a buffer of `buffers`, taken when the
    /// answer's head has come: a call waiting for its answer holds no block's memory.
    pub async fn get(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
        buffers: &Arc<BufferPool>,
    ) -> StoreResult<FetchedBlock> {
        let context = format!("GetSnapshotBlock {id} block {index}");
        let token = percent_encoding::utf8_percent_encode(&token.0, UNRESERVED);
        let uri = format!("{}?blockToken={token}", self.block_uri(id, index)?);
        let request = ::http::Request::get(uri).body(SdkBody::empty());
        let read = |answer: Answer| async {
            let checksum = answer::header(answer.headers(), "x-amz-checksum")
                .and_then(Digest::from_base64)
                .ok_or_else(|| super::no_checksum(&context))?;
            let data = super::gather(buffers.fill(), answer.into_body(), &context).await?;
            Ok(FetchedBlock { data, checksum })
        };
        self.attempt(request, &context, read).await
    }

    /// The block's URI; an index the service's `i32` cannot hold is refused here, as
    /// the SDK's calls refuse it. A `SnapshotId` is `snap-` and hex digits, nothing
    /// to encode.
    fn block_uri(&self, id: &SnapshotId, index: BlockIndex) -> StoreResult<String> {
        let index = sdk_index(index)?;
        Ok(format!("{}/snapshots/{id}/blocks/{index}", self.base))
    }

    /// One attempt: `request` signed and sent, an error answer read for what it means,
    /// and `read` of a successful one, all under the attempt limit (connecting, the
    /// credential chain, the answer and its body).
    async fn attempt<T, Reading>(
        &self,
        request: Result<::http::Request<SdkBody>, ::http::Error>,
        context: &str,
        read: impl FnOnce(Answer) -> Reading,
    ) -> StoreResult<T>
    where
        Reading: std::future::Future<Output = StoreResult<T>>,
    {
        let mut request = request.map_err(|e| {
            let message = format!("{context}: {e}");
            StoreError::invalid(ValidationReason::InvalidParameterValue, message)
        })?;
        let connection = capture_connection(&mut request);
        let call = async {
            let answer = self.send(request, context).await?;
            read(self.expect_success(answer, context).await?).await
        };
        let limit = self.attempt_timeout;
        let outcome = tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            let endpoint = &self.endpoint;
            Err(StoreError::Unavailable {
                message: format!(
                    "{context}: the EBS endpoint {endpoint} did not finish in {limit:?}"
                ),
            })
        });
        poison_if_transient(&outcome, &connection);
        outcome
    }

    /// Signs and sends `request`; its answer, whatever its status.
    async fn send(
        &self,
        mut request: ::http::Request<SdkBody>,
        context: &str,
    ) -> StoreResult<Answer> {
        request
            .headers_mut()
            .insert("user-agent", ::http::HeaderValue::from_static(USER_AGENT));
        let sent = self.signer.sign(&mut request, context).await?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|e| errors::transport_error(&self.endpoint, context, &e))?;
        self.signer
            .learn_skew(sent, SystemTime::now(), answer.headers());
        Ok(answer)
    }

    /// `answer` if it is a success; else what its error says.
    async fn expect_success(&self, answer: Answer, context: &str) -> StoreResult<Answer> {
        if answer.status().is_success() {
            return Ok(answer);
        }
        let (parts, body) = answer.into_parts();
        let body = answer::read_limited(body, ERROR_BODY_LIMIT).await;
        Err(answer::error(context, &parts, &body))
    }
}

type Answer = ::http::Response<hyper::body::Incoming>;

/// How long a put's answer body, after a success, is waited for.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// After a transient failure (a 5xx, a clock refused, the attempt limit, a body cut
/// short), the attempt's connection is not used again, as the SDK poisons one after a
/// transient failure: the next attempt opens another, which may reach a healthier host
/// behind the endpoint, and an HTTP/2 connection whose stream stalled is left.
fn poison_if_transient<T>(outcome: &StoreResult<T>, connection: &CaptureConnection) {
    if matches!(outcome, Err(StoreError::Unavailable { .. })) {
        if let Some(connected) = connection.connection_metadata().as_ref() {
            connected.poison();
        }
    }
}

/// ebsnap's name on its requests, as the SDK's calls carry the SDK's.
const USER_AGENT: &str = concat!("ebsnap/", env!("CARGO_PKG_VERSION"));

mod endpoint {
    use aws_sdk_ebs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};

    /// The endpoint the SDK's EBS client reaches, by the SDK's own rules and resolver:
    /// an endpoint URL from the EBS-specific setting (`AWS_ENDPOINT_URL_EBS`, a
    /// profile's `services` section) or the general one, else the region's, FIPS and
    /// dual-stack included.
    pub(super) async fn resolve(
        config: &aws_types::SdkConfig,
        region: &str,
    ) -> Result<String, String> {
        let params = Params::builder()
            .region(region)
            .set_use_fips(config.use_fips())
            .set_use_dual_stack(config.use_dual_stack())
            .set_endpoint(configured_url(config))
            .build()
            .map_err(|e| e.to_string())?;
        let found = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| e.to_string())?;
        base_of(found.url()).ok_or_else(|| "the endpoint the SDK's rules gave is not a URL".into())
    }

    /// What the block calls' paths follow: the endpoint's scheme, host and path, less
    /// one trailing `/` (and any query, which the SDK drops too).
    ///
    /// Any `user:password@` is left out: hyper sends no such thing in `Host`, and the
    /// signature must cover the `Host` it sends.
    pub(super) fn base_of(url: &str) -> Option<String> {
        let uri: ::http::Uri = url.parse().ok()?;
        let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_owned(),
        };
        let path = uri.path();
        let path = path.strip_suffix('/').unwrap_or(path);
        Some(format!("{scheme}://{host}{path}"))
    }

    /// The endpoint URL as `aws_sdk_ebs::config::Builder::from(&SdkConfig)` picks it.
    fn configured_url(config: &aws_types::SdkConfig) -> Option<String> {
        if config.get_origin("endpoint_url").is_client_config() {
            return config.endpoint_url().map(str::to_owned);
        }
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id("EBS")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .expect("every field is set");
        config
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| config.endpoint_url().map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{answer, answering, answering_in_pieces};
    use super::*;
    use std::sync::atomic::Ordering;

    /// The store on `url`; none where a proxy is set (the calls are then the SDK's).
    async fn connect(url: &str, attempt_timeout: Duration) -> Option<EbsStore> {
        let options = EbsOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(url.to_owned()),
            static_credentials: Some(("AKIDTEST".into(), "secret".into())),
            attempt_timeout: Some(attempt_timeout),
            ..EbsOptions::default()
        };
        let store = EbsStore::connect(&options).await.unwrap();
        if http::proxied() {
            eprintln!("SKIPPED: a proxy is set, so the block calls are the SDK's");
            return None;
        }
        assert!(store.direct.is_some(), "the block calls are not ours");
        Some(store)
    }

    fn id() -> SnapshotId {
        "snap-0123456789abcdef0".parse().unwrap()
    }

    async fn get(store: &EbsStore) -> StoreResult<FetchedBlock> {
        let token = BlockToken("AAAB+/==".into());
        store.get_block(&id(), BlockIndex(7), &token).await
    }

    const ZERO_CHECKSUM: &str = "x-amz-checksum: B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=";

    #[tokio::test]
    async fn a_throttle_keeps_the_connection_and_a_server_error_poisons_it() {
        let throttled = answer(
            "HTTP/1.1 400 Bad Request\r\nx-amzn-errortype: RequestThrottledException",
            br#"{"message":"slow","Reason":"ACCOUNT_THROTTLED"}"#,
        );
        let (url, accepted) = answering(throttled).await;
        let Some(store) = connect(&url, Duration::from_secs(5)).await else {
            return;
        };
        for _ in 0..2 {
            let e = get(&store).await.unwrap_err();
            assert!(matches!(e, StoreError::Throttled { .. }), "{e:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not reused");
        let failed = answer(
            "HTTP/1.1 500 Internal Server Error\r\nx-amzn-errortype: InternalServerException",
            b"{}",
        );
        let (url, accepted) = answering(failed).await;
        let store = connect(&url, Duration::from_secs(5)).await.unwrap();
        for _ in 0..2 {
            let e = get(&store).await.unwrap_err();
            assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the failed one was reused"
        );
    }

    /// A put's answer with a body that comes after its head: read to its end, so that
    /// the connection serves the next put.
    #[tokio::test]
    async fn a_put_answered_with_a_body_keeps_its_connection() {
        let head = format!("HTTP/1.1 201 Created\r\n{ZERO_CHECKSUM}\r\ncontent-length: 2\r\n\r\n");
        let (url, accepted) = answering_in_pieces(vec![head.into_bytes(), b"{}".to_vec()]).await;
        let Some(store) = connect(&url, Duration::from_secs(5)).await else {
            return;
        };
        let zero = HashedBlock::new(Bytes::from(vec![0u8; BLOCK_SIZE])).unwrap();
        for index in 0..3 {
            let digest = zero.digest();
            store
                .put_block(&id(), BlockIndex(index), zero.clone(), digest)
                .await
                .unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not reused");
    }

    /// Headers that arrive and a body that never ends: the attempt limit covers the
    /// body too (the SDK's covers the answer's head only).
    #[tokio::test]
    async fn a_body_that_stalls_is_cut_at_the_attempt_limit() {
        let head = format!(
            "HTTP/1.1 200 OK\r\n{ZERO_CHECKSUM}\r\ncontent-length: 524288\r\n\r\nonly this"
        );
        let (url, _) = answering(head.into_bytes()).await;
        let Some(store) = connect(&url, Duration::from_millis(300)).await else {
            return;
        };
        let started = std::time::Instant::now();
        let e = get(&store).await.unwrap_err();
        let StoreError::Unavailable { message } = &e else {
            panic!("{e:?}");
        };
        assert!(message.contains("did not finish in 300ms"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_body_longer_or_shorter_than_a_block_is_refused() {
        for (len, said) in [
            (9, "9 bytes instead of 524288"),
            (BLOCK_SIZE + 1, "more than 524288 bytes"),
        ] {
            let (url, _) = answering(answer(
                &format!("HTTP/1.1 200 OK\r\n{ZERO_CHECKSUM}"),
                &vec![0; len],
            ))
            .await;
            let Some(store) = connect(&url, Duration::from_secs(5)).await else {
                return;
            };
            let e = get(&store).await.unwrap_err();
            assert!(e.to_string().contains(said), "{e}");
        }
    }

    #[test]
    fn the_calls_follow_the_endpoints_path_less_a_trailing_slash_and_its_query() {
        let base = |url| endpoint::base_of(url).unwrap();
        assert_eq!(
            base("https://ebs.us-east-1.amazonaws.com"),
            "https://ebs.us-east-1.amazonaws.com"
        );
        assert_eq!(
            base("https://ebs.us-east-1.amazonaws.com/"),
            "https://ebs.us-east-1.amazonaws.com"
        );
        assert_eq!(
            base("http://127.0.0.1:8080/prefix/?x=1"),
            "http://127.0.0.1:8080/prefix"
        );
        assert_eq!(base("http://[::1]:9/"), "http://[::1]:9");
        assert_eq!(base("http://user:secret@host:8080/p"), "http://host:8080/p");
        assert_eq!(endpoint::base_of("not a url"), None);
    }
}

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
use crate::block::BlockFill;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::capture_connection;
use signer::Signer;
use std::time::SystemTime;

/// What a percent-encoded piece of a request's path or query keeps as is: RFC 3986's
/// unreserved characters (as the SDK encodes labels and query values).
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
    /// The calls for `setup`; none where a proxy is set, or where the configuration
    /// has no credentials to sign with (the SDK's calls then say what is missing).
    pub async fn new(setup: Setup<'_>) -> StoreResult<Option<BlockCalls>> {
        let (Some(client), Some(credentials)) = (
            http::direct_client(setup.roots),
            setup.config.credentials_provider(),
        ) else {
            return Ok(None);
        };
        let region = setup.config.region().map(|r| r.to_string());
        let region = region.unwrap_or_else(|| "us-east-1".to_owned());
        Ok(Some(BlockCalls {
            client,
            base: endpoint::resolve(setup.config, &region).await?,
            endpoint: setup.endpoint.to_owned(),
            signer: Signer::new(credentials, region),
            attempt_timeout: setup.attempt_timeout,
        }))
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
        let request = ::http::Request::put(self.block_uri(id, index))
            .header("content-type", "application/octet-stream")
            .header("content-length", BLOCK_SIZE)
            .header("x-amz-data-length", BLOCK_SIZE)
            .header("x-amz-checksum", checksum.to_base64())
            .header("x-amz-checksum-algorithm", "SHA256")
            .body(SdkBody::from(block.data().clone()));
        let call = async {
            let answer = self.send(request, &context).await?;
            let checksum = answer::header(&answer, "x-amz-checksum").map(Digest::from_base64);
            self.expect_success(answer, &context).await?;
            Ok(checksum.flatten())
        };
        self.limited(call, &context).await
    }

    /// GetSnapshotBlock, its body gathered into `fill`.
    pub async fn get(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
        fill: BlockFill,
    ) -> StoreResult<FetchedBlock> {
        let context = format!("GetSnapshotBlock {id} block {index}");
        let token = percent_encoding::utf8_percent_encode(&token.0, UNRESERVED);
        let uri = format!("{}?blockToken={token}", self.block_uri(id, index));
        let request = ::http::Request::get(uri).body(SdkBody::empty());
        let call = async {
            let answer = self.send(request, &context).await?;
            let checksum = answer::header(&answer, "x-amz-checksum").and_then(Digest::from_base64);
            let answer = self.expect_success(answer, &context).await?;
            let checksum = checksum.ok_or_else(|| StoreError::Unavailable {
                message: format!("{context}: no checksum in the answer"),
            })?;
            let data = super::gather(fill, answer.into_body(), &context).await?;
            Ok(FetchedBlock { data, checksum })
        };
        self.limited(call, &context).await
    }

    fn block_uri(&self, id: &SnapshotId, index: BlockIndex) -> String {
        let id = percent_encoding::utf8_percent_encode(id.as_str(), UNRESERVED);
        format!("{}/snapshots/{id}/blocks/{index}", self.base)
    }

    /// One attempt of `call`, under the attempt limit: connecting, signing (the
    /// credential chain included), the answer and its body.
    async fn limited<T>(
        &self,
        call: impl std::future::Future<Output = StoreResult<T>>,
        context: &str,
    ) -> StoreResult<T> {
        let limit = self.attempt_timeout;
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                message: format!("{context}: no answer from {} in {limit:?}", self.endpoint),
            })
        })
    }

    /// Signs and sends `request`; its answer, whatever its status.
    async fn send(
        &self,
        request: Result<::http::Request<SdkBody>, ::http::Error>,
        context: &str,
    ) -> StoreResult<::http::Response<hyper::body::Incoming>> {
        let mut request = request.map_err(|e| {
            StoreError::invalid(
                ValidationReason::InvalidParameterValue,
                format!("{context}: {e}"),
            )
        })?;
        request
            .headers_mut()
            .insert("user-agent", ::http::HeaderValue::from_static(USER_AGENT));
        let sent = self.signer.sign(&mut request, context).await?;
        let connection = capture_connection(&mut request);
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|e| errors::transport_error(&self.endpoint, context, &e))?;
        self.signer
            .learn_skew(sent, SystemTime::now(), answer.headers());
        if answer.status().is_server_error() {
            // As the SDK does after a transient failure: the next attempt opens another
            // connection, which may reach a healthier host behind the endpoint.
            if let Some(connected) = connection.connection_metadata().as_ref() {
                connected.poison();
            }
        }
        Ok(answer)
    }

    /// `answer` if it is a success; else what its error says.
    async fn expect_success(
        &self,
        answer: ::http::Response<hyper::body::Incoming>,
        context: &str,
    ) -> StoreResult<::http::Response<hyper::body::Incoming>> {
        if answer.status().is_success() {
            return Ok(answer);
        }
        let (parts, body) = answer.into_parts();
        let body = answer::read_limited(body, ERROR_BODY_LIMIT).await;
        Err(answer::error(context, &parts, &body))
    }
}

/// ebsnap's name on its requests, as the SDK's calls carry the SDK's.
const USER_AGENT: &str = concat!("ebsnap/", env!("CARGO_PKG_VERSION"));

mod endpoint {
    use super::*;
    use aws_sdk_ebs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};

    /// The endpoint the SDK's EBS client reaches, by the SDK's own rules and resolver:
    /// an endpoint URL from the EBS-specific setting (`AWS_ENDPOINT_URL_EBS`, a
    /// profile's `services` section) or the general one, else the region's, FIPS and
    /// dual-stack included.
    pub(super) async fn resolve(
        config: &aws_types::SdkConfig,
        region: &str,
    ) -> StoreResult<String> {
        let params = Params::builder()
            .region(region)
            .set_use_fips(config.use_fips())
            .set_use_dual_stack(config.use_dual_stack())
            .set_endpoint(configured_url(config))
            .build()
            .map_err(|e| unusable(e.to_string()))?;
        let found = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        Ok(found.url().trim_end_matches('/').to_owned())
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

    fn unusable(why: String) -> StoreError {
        StoreError::invalid(
            ValidationReason::InvalidParameterValue,
            format!("no EBS endpoint: {why}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every request with `answer`, and counts its connections.
    async fn answering(answer: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn connect(url: &str, attempt_timeout: Duration) -> EbsStore {
        let options = EbsOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(url.to_owned()),
            static_credentials: Some(("AKIDTEST".into(), "secret".into())),
            attempt_timeout: Some(attempt_timeout),
            ..EbsOptions::default()
        };
        let store = EbsStore::connect(&options).await.unwrap();
        assert!(
            store.direct.is_some(),
            "no proxy is set: the calls are ours"
        );
        store
    }

    async fn get(store: &EbsStore) -> StoreResult<FetchedBlock> {
        let id: SnapshotId = "snap-0123456789abcdef0".parse().unwrap();
        let token = BlockToken("AAAB+/==".into());
        store.get_block(&id, BlockIndex(7), &token).await
    }

    const THROTTLED: &str =
        "HTTP/1.1 400 Bad Request\r\nx-amzn-errortype: RequestThrottledException\r\n\
        content-length: 47\r\n\r\n{\"message\":\"slow\",\"Reason\":\"ACCOUNT_THROTTLED\"}";
    const FAILED: &str = "HTTP/1.1 500 Internal Server Error\r\n\
        x-amzn-errortype: InternalServerException\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn a_throttle_keeps_the_connection_and_a_server_error_poisons_it() {
        let (url, accepted) = answering(THROTTLED).await;
        let store = connect(&url, Duration::from_secs(5)).await;
        for _ in 0..2 {
            let e = get(&store).await.unwrap_err();
            assert!(matches!(e, StoreError::Throttled { .. }), "{e:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not reused");
        let (url, accepted) = answering(FAILED).await;
        let store = connect(&url, Duration::from_secs(5)).await;
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

    /// Headers that arrive and a body that never ends: the attempt limit covers the
    /// body too (the SDK's covers the answer's head only).
    #[tokio::test]
    async fn a_body_that_stalls_is_cut_at_the_attempt_limit() {
        let stalled =
            "HTTP/1.1 200 OK\r\nx-amz-checksum: B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=\r\n\
            content-length: 524288\r\n\r\nonly this";
        let (url, _) = answering(stalled).await;
        let store = connect(&url, Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let e = get(&store).await.unwrap_err();
        let StoreError::Unavailable { message } = &e else {
            panic!("{e:?}");
        };
        assert!(
            message.contains("no answer from") && message.contains("300ms"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_body_longer_or_shorter_than_a_block_is_refused() {
        let long =
            "HTTP/1.1 200 OK\r\nx-amz-checksum: B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=\r\n\
            content-length: 9\r\n\r\nonly this";
        let (url, _) = answering(long).await;
        let e = get(&connect(&url, Duration::from_secs(5)).await)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("9 bytes instead of 524288"), "{e}");
    }
}

//! The HTTP client of the EBS direct APIs: hyper's, as the SDK's own, but with a small
//! read buffer on each connection.
//!
//! hyper grows a connection's read buffer to 408 KiB while a 512 KiB block arrives,
//! and the connection keeps that buffer while it waits in the pool. At 100 ms and 1000
//! requests a second a restore holds 120 to 140 connections: 50 to 57 MiB of buffers,
//! most of hyper's 66 MiB at the restore's peak. The SDK's client does not let the
//! buffer be sized (its hyper builder is not public), so the EBS client gets this one,
//! both under the SDK (its EBS calls) and beside it (the block calls ebsnap sends
//! itself, `direct.rs`, on a pool of their own); EC2 and the credential chain keep the
//! SDK's. Like the SDK's, it speaks rustls with
//! aws-lc-rs, offers HTTP/2 (where an endpoint takes it, hyper's h2 windows bound the
//! buffering instead; `ebsnap serve` speaks HTTP/1.1, where the figures above are
//! from), puts one connect timeout over DNS, TCP and TLS, and lets the SDK poison a
//! connection after a transient failure. Unlike it, it reports no connection
//! addresses or telemetry, and goes through no proxy: where one is set, the SDK's
//! client stays ([`proxied`]). A block's body still arrives in pieces that
//! [`super::gather`] copies into one pooled buffer: a smaller buffer only cuts it into
//! more pieces.

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection};
use hyper_util::client::legacy::{connect::HttpConnector as TcpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most a connection buffers of an answer: a block arrives in eight reads, where
/// hyper's default would keep 408 KiB on every pooled connection.
const READ_BUFFER: usize = 64 * 1024;

/// Whether the environment names a proxy (the variables the SDK's client follows):
/// then the block requests keep that client, which goes through it. Any of them counts,
/// whatever `NO_PROXY` says: reading too much here costs only the smaller buffers.
pub(super) fn proxied() -> bool {
    names_a_proxy(|name| std::env::var_os(name))
}

fn names_a_proxy(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY"]
        .iter()
        .flat_map(|name| [name.to_string(), name.to_lowercase()])
        .any(|name| var(&name).is_some_and(|v| !v.is_empty()))
}

/// Whom the client trusts: the system's roots, or a CA bundle's instead of them (as
/// `ca_bundle` read and checked it).
#[derive(Clone, Debug)]
pub(super) enum Roots {
    System,
    Bundle(Arc<rustls::RootCertStore>),
}

/// The system's roots, read once a process (as the SDK does) and only when needed.
static SYSTEM_ROOTS: LazyLock<Arc<rustls::RootCertStore>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!("loading the system's CA certificates: {:?}", found.errors);
    }
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    Arc::new(store)
});

/// The client: one connector per distinct pair of timeouts the SDK asks for (in
/// practice one), each with its own pool.
#[derive(Debug)]
struct EbsClient {
    roots: Roots,
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

type Timeouts = (Option<Duration>, Option<Duration>);

/// The EBS requests' client under the SDK, trusting `roots`; none where a proxy is set
/// (they keep the SDK's client then).
pub(super) fn ebs_client(roots: Roots) -> Option<SharedHttpClient> {
    if proxied() {
        tracing::debug!("a proxy is set: EBS requests go through the SDK's client");
        return None;
    }
    let kib = READ_BUFFER / 1024;
    tracing::debug!("EBS requests: ebsnap's client, {kib} KiB read buffers");
    Some(SharedHttpClient::new(EbsClient {
        roots,
        connectors: Mutex::default(),
    }))
}

/// rustls with aws-lc-rs, the provider the SDK's client uses.
fn tls_config(roots: &Roots) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs speaks TLS 1.2 and 1.3")
        .with_root_certificates(match roots {
            Roots::System => SYSTEM_ROOTS.clone(),
            Roots::Bundle(store) => store.clone(),
        })
        .with_no_client_auth()
}

impl HttpClient for EbsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        let made = connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Connector::new(&self.roots, key)));
        made.clone()
    }
}

/// The client of the block calls ebsnap sends itself (`direct.rs`): hyper's, on the
/// connector below, under the SDK's connect limit; none where a proxy is set.
pub(super) type DirectClient = Client<Timed, SdkBody>;

pub(super) fn direct_client(roots: &Roots) -> Option<DirectClient> {
    if proxied() {
        tracing::debug!("a proxy is set: block calls go through the SDK");
        return None;
    }
    Some(Connector::new(roots, (Some(CONNECT_TIMEOUT), None)).client)
}

/// The limit on connecting (DNS, TCP, TLS), the SDK's calls' and the block calls'.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One pool of connections, with the SDK's connect and read timeouts.
struct Connector {
    client: Client<Timed, SdkBody>,
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    fn new(roots: &Roots, (connect_timeout, read_timeout): Timeouts) -> Connector {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(roots))
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            // The pool's idle timeout needs a timer.
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER)
            .build(Timed {
                inner: https,
                limit: connect_timeout,
            });
        Connector {
            client,
            read_timeout,
        }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&captured));
        }
        let answer = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, answer)
                    .await
                    .map_err(|_| ConnectorError::timeout(TimedOut::Answer(limit).into()))?,
                None => answer.await,
            };
            let response = response.map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// What the SDK asks of the connection a request went out on: a way to poison it, so
/// that after a transient failure (a 5xx, a timeout) the next attempt opens another.
fn connection_metadata(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    captured.connection_metadata().as_ref()?;
    let captured = captured.clone();
    let poison = move || {
        if let Some(connected) = captured.connection_metadata().as_ref() {
            connected.poison();
        }
    };
    Some(
        ConnectionMetadata::builder()
            .proxied(false)
            .poison_fn(poison)
            .build(),
    )
}

/// hyper's failures by meaning, as the SDK's client sorts them: one of our timeouts; a
/// request hyper refused to send (a user error, not worth another attempt); else an
/// I/O failure (a refused or broken connection, TLS among them), worth another.
fn connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
    if super::errors::find::<TimedOut>(&e).is_some() {
        ConnectorError::timeout(e.into())
    } else if super::errors::find::<hyper::Error>(&e).is_some_and(hyper::Error::is_user) {
        ConnectorError::user(e.into())
    } else {
        ConnectorError::io(e.into())
    }
}

/// A limit that ran out.
#[derive(Debug)]
enum TimedOut {
    Connect(Duration),
    Answer(Duration),
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimedOut::Connect(limit) => write!(f, "no connection (DNS, TCP, TLS) in {limit:?}"),
            TimedOut::Answer(limit) => write!(f, "no answer in {limit:?}"),
        }
    }
}

impl std::error::Error for TimedOut {}

/// The HTTPS connector under one limit for all of connecting, as the SDK's: hyper's
/// own connect timeout covers only TCP, and splits it among the addresses.
#[derive(Clone)]
pub(super) struct Timed {
    inner: HttpsConnector<TcpConnector>,
    limit: Option<Duration>,
}

type Connection = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

impl tower_service::Service<http::Uri> for Timed {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match limit {
                Some(limit) => tokio::time::timeout(limit, connecting)
                    .await
                    .map_err(|_| BoxError::from(TimedOut::Connect(limit)))?,
                None => connecting.await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{answer, answering};
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::net::TcpListener;

    fn connector(connect_timeout: Option<Duration>) -> Connector {
        let nobody = Arc::new(rustls::RootCertStore::empty());
        Connector::new(&Roots::Bundle(nobody), (connect_timeout, None))
    }

    fn get(url: &str, capture: Option<&CaptureSmithyConnection>) -> HttpRequest {
        let mut request = http::Request::get(url).body(SdkBody::empty()).unwrap();
        if let Some(capture) = capture {
            request.extensions_mut().insert(capture.clone());
        }
        HttpRequest::try_from(request).unwrap()
    }

    async fn answered(connector: &Connector, request: HttpRequest) {
        let response = connector.call(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body = aws_smithy_types::byte_stream::ByteStream::new(response.into_body());
        assert_eq!(&body.collect().await.unwrap().into_bytes()[..], b"ok");
    }

    #[tokio::test]
    async fn a_connection_is_reused_until_the_sdk_poisons_it() {
        let (url, accepted) = answering(answer("HTTP/1.1 200 OK", b"ok")).await;
        let url = format!("{url}/");
        let connector = connector(None);
        answered(&connector, get(&url, None)).await;
        answered(&connector, get(&url, None)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not reused");
        let capture = CaptureSmithyConnection::new();
        answered(&connector, get(&url, Some(&capture))).await;
        capture.get().expect("the connection was captured").poison();
        answered(&connector, get(&url, None)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the poisoned one was reused"
        );
    }

    /// A server that accepts and never answers the TLS handshake: the connect timeout
    /// covers it, as the SDK's does (hyper's own covers only TCP).
    #[tokio::test]
    async fn the_connect_timeout_covers_a_stalled_tls_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let connector = connector(Some(Duration::from_millis(200)));
        let started = std::time::Instant::now();
        let err = connector.call(get(&url, None)).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        let said = aws_smithy_types::error::display::DisplayErrorContext(&err).to_string();
        assert!(
            said.contains("no connection (DNS, TCP, TLS) in 200ms"),
            "{said}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        held.abort();
    }

    #[test]
    fn a_proxy_in_the_environment_is_seen() {
        let set = |names: &'static [&'static str]| {
            move |name: &str| names.contains(&name).then(|| "http://proxy:3128".into())
        };
        assert!(names_a_proxy(set(&["https_proxy"])));
        assert!(names_a_proxy(set(&["ALL_PROXY"])));
        assert!(!names_a_proxy(set(&["NO_PROXY", "no_proxy"])));
        assert!(!names_a_proxy(|_| Some("".into())), "empty is unset");
    }
}

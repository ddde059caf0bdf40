//! `ebsnap serve`: the EBS direct API (and the EC2 calls that go with it) over HTTP, on
//! top of any [`SnapshotStore`]: an on-prem EBS target, and the peer that ebsnap's own
//! EBS backend, boto3 and coldsnap are tested against.
//!
//! Every request is SigV4-verified against one key pair (unless auth is off), then
//! routed: EBS operations by path, EC2 Query actions at `POST /`.

mod ebs;
mod ec2;
mod error;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod sigv4;

pub use sigv4::Credentials;

use crate::block::BLOCK_SIZE;
use crate::store::SnapshotStore;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::{Bytes, BytesMut};
use error::{EbsError, Ec2Error};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Largest request body: one block plus room for headers-in-body APIs (EC2 forms).
const MAX_BODY: usize = BLOCK_SIZE + 64 * 1024;
/// The account id the server reports as owner of every snapshot.
pub const OWNER_ID: &str = "000000000000";
/// Requests handled at once. Each may hold a block (512 KiB) in memory, so this bounds
/// the server's memory whatever the number of clients: about 64 MiB of bodies. Further
/// requests wait for a turn (their bytes wait in the socket buffers).
const MAX_IN_FLIGHT: usize = 128;

/// How long the server waits for slow clients (`ebsnap serve --header-timeout
/// --body-timeout`). Without them a client that opens connections and sends nothing, or
/// trickles a body, would hold sockets (and, for a body, a turn) for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's head (request line and headers), counted
    /// from when the server starts waiting for it; an idle keep-alive connection is
    /// closed after as long.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once the request has its turn.
    pub body_timeout: Duration,
}

impl Limits {
    /// The default head timeout, in seconds (`serve --header-timeout`).
    pub const HEADER_TIMEOUT_SECS: u64 = 30;
    /// The default body timeout, in seconds (`serve --body-timeout`).
    pub const BODY_TIMEOUT_SECS: u64 = 60;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(Self::HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(Self::BODY_TIMEOUT_SECS),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn SnapshotStore>,
    credentials: Option<Arc<Credentials>>,
    owner_id: String,
    in_flight: Arc<Semaphore>,
    body_timeout: Duration,
}

/// The HTTP application: routes, auth, body limits.
pub fn router(store: Arc<dyn SnapshotStore>, credentials: Option<Credentials>) -> Router {
    router_with_limits(store, credentials, &Limits::default())
}

/// [`router`], with the given time limits for slow clients.
pub fn router_with_limits(
    store: Arc<dyn SnapshotStore>,
    credentials: Option<Credentials>,
    limits: &Limits,
) -> Router {
    let state = AppState {
        store,
        credentials: credentials.map(Arc::new),
        owner_id: OWNER_ID.to_owned(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        body_timeout: limits.body_timeout,
    };
    Router::new()
        .route("/snapshots", post(ebs::start_snapshot))
        .route("/snapshots/completion/{id}", post(ebs::complete_snapshot))
        .route("/snapshots/{id}/blocks", get(ebs::list_blocks))
        .route(
            "/snapshots/{id}/blocks/{index}",
            put(ebs::put_block).get(ebs::get_block),
        )
        .route(
            "/snapshots/{id}/changedblocks",
            get(ebs::list_changed_blocks),
        )
        .route("/", post(ec2::query))
        .fallback(unknown_operation)
        // A known path with another method (DELETE /snapshots) is an unknown operation
        // too; axum's own answer would be a bare 405 without the AWS error shape.
        .method_not_allowed_fallback(unknown_operation)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn SnapshotStore>,
    credentials: Option<Credentials>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(store, credentials), shutdown).await
}

/// Serves an application made by [`router`] (with layers added, such as faults).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router_with_limits(listener, app, &Limits::default(), shutdown).await
}

/// Serves `app` over HTTP/1.1 until `shutdown` resolves, then lets requests in flight
/// finish.
///
/// This is hyper's HTTP/1.1 server driven directly rather than `axum::serve`, which
/// sets no timer: hyper's header-read timeout then never fires, and a client that
/// opens connections and sends nothing (or half a request line) keeps them, and their
/// sockets, for ever. HTTP/1.1 only: every EBS client speaks it, and it is the protocol
/// whose limits (head size, header count, head timeout) are configured here.
pub async fn serve_router_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset while queued:
                    // the listener is fine. Pause a little so that running out of
                    // descriptors does not spin, then go on.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Clients that go away, send garbage or time out: theirs to notice.
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Adds fault injection in front of an application made by [`router`].
pub fn with_faults(app: Router, faults: Arc<faults::Faults>) -> Router {
    app.layer(middleware::from_fn_with_state(faults, faults::inject))
}

async fn unknown_operation(request: Request) -> Response {
    let message = format!(
        "no operation at {} {}",
        request.method(),
        request.uri().path()
    );
    EbsError::new(StatusCode::NOT_FOUND, "UnknownOperationException", message).into_response()
}

/// Whether a request is an EC2 Query call (errors then take EC2's XML shape).
fn is_ec2(request: &Request) -> bool {
    request.uri().path() == "/"
}

/// Admits a request. The cheap checks of its signature come first (key, scope, date:
/// nothing is read for a request that cannot be genuine); then it waits for a turn
/// among the requests in flight; then its body is read, bounded in size and in time
/// (a slow client cannot hold a turn for long); then the signature itself is checked.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ec2 = is_ec2(&request);
    let service = if ec2 { "ec2" } else { "ebs" };
    // PutSnapshotBlock alone sends an unsigned body (its checksum header is signed).
    let put_block = request.method() == Method::PUT && request.uri().path().contains("/blocks/");
    if let Some(credentials) = &state.credentials {
        if let Err(e) = sigv4::precheck(request.headers(), credentials, SystemTime::now(), service)
        {
            return refusal(ec2, &request, e);
        }
    }
    // A required header that is missing is the client's modeled mistake, named as
    // such, not a signature that fails to match for want of it.
    for required in put_block
        .then_some(["x-amz-checksum", "x-amz-checksum-algorithm"])
        .into_iter()
        .flatten()
    {
        if !request.headers().contains_key(required) {
            return EbsError::validation(
                crate::store::ValidationReason::InvalidParameterValue,
                format!("PutSnapshotBlock needs the {required} header"),
            )
            .into_response();
        }
    }
    // A body announced larger than the limit is refused before it is waited for.
    let declared = declared_length(&request);
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return body_error(ec2, BodyError::TooLarge);
    }
    let _turn = state.in_flight.acquire().await.expect("never closed");
    let (parts, body) = request.into_parts();
    let read = read_body(body, declared.unwrap_or(0) as usize);
    let body = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return body_error(ec2, e),
        Err(_) => return body_error(ec2, BodyError::Timeout(state.body_timeout)),
    };
    if let Some(credentials) = &state.credentials {
        let signed = sigv4::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body: &body,
            unsigned_payload_allowed: put_block,
        };
        if let Err(e) = sigv4::verify(&signed, credentials, SystemTime::now(), service) {
            let request = Request::from_parts(parts, Body::empty());
            return refusal(ec2, &request, e);
        }
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn refusal(ec2: bool, request: &Request, e: sigv4::AuthError) -> Response {
    tracing::info!("refused {} {}: {e}", request.method(), request.uri().path());
    if ec2 {
        Ec2Error {
            status: StatusCode::UNAUTHORIZED,
            code: "AuthFailure".into(),
            message: e.to_string(),
        }
        .into_response()
    } else {
        EbsError::new(StatusCode::FORBIDDEN, e.error_type(), e.to_string()).into_response()
    }
}

/// Why a request's body could not be taken.
enum BodyError {
    /// Over [`MAX_BODY`], as announced or as sent.
    TooLarge,
    /// Cut short (the client closed mid-body) or badly framed (bad chunk sizes).
    Malformed(String),
    /// Not received within the body timeout.
    Timeout(Duration),
}

/// The request's `Content-Length`, if it has a valid one (hyper has already refused
/// the request if it has several that disagree, or one that is not a number).
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a body of at most [`MAX_BODY`] bytes, into a buffer of its announced length
/// (`declared`, already checked against the limit: a block is copied once). A body
/// without a length (chunked) is counted as it arrives and refused as soon as it passes
/// the limit, so a client can never make the server hold more than that.
async fn read_body(body: Body, declared: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut out = BytesMut::with_capacity(declared);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Malformed(e.to_string()))?;
        if out.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// A body refusal in the API's error shape. EBS: the types AWS services use for these
/// HTTP-level failures (the SDKs retry a RequestTimeoutException); EC2: InvalidRequest.
fn body_error(ec2: bool, e: BodyError) -> Response {
    let (status, error_type, message) = match e {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
            format!("the request body is larger than {MAX_BODY} bytes"),
        ),
        BodyError::Malformed(e) => (
            StatusCode::BAD_REQUEST,
            "MalformedHttpRequestException",
            format!("the request body is incomplete or badly framed: {e}"),
        ),
        BodyError::Timeout(t) => (
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            format!("the request body was not received within {} s", t.as_secs()),
        ),
    };
    tracing::info!("refused a request body: {message}");
    if ec2 {
        Ec2Error {
            status,
            code: "InvalidRequest".into(),
            message,
        }
        .into_response()
    } else {
        EbsError::new(status, error_type, message).into_response()
    }
}

/// Seconds since the epoch, as the JSON number EBS uses for timestamps.
fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A fresh request id, for EC2 responses.
fn request_id() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("the OS random source works");
    let h = hex::encode(raw);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

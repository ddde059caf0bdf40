//! `ebsnap serve`: the EBS direct API (and the EC2 calls that go with it) over HTTP, on
//! top of any [`SnapshotStore`]: an on-prem EBS target, and the peer that ebsnap's own
//! EBS backend, boto3 and coldsnap are tested against.
//!
//! Every request is SigV4-verified against the key its access key id names (unless
//! auth is off), checked against that key's role, then routed: EBS operations by path,
//! EC2 Query actions at `POST /`. Handlers see only the snapshots of the key's owner
//! (all of them for an admin).

pub mod access;
mod admit;
mod connections;
mod ebs;
mod ec2;
mod error;
pub mod faults;
mod filters;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod owners;
pub mod sigv4;
mod tags;
pub mod tls;

pub use keys::{Key, Keys};
pub use sigv4::Credentials;
pub use tls::{Tls, TlsError};

use crate::block::BLOCK_SIZE;
use crate::store::SnapshotStore;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use error::EbsError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

pub use connections::MAX_HEAD_BYTES;

/// Largest request body: one block plus room for headers-in-body APIs (EC2 forms).
const MAX_BODY: usize = BLOCK_SIZE + 64 * 1024;
/// The account id that owns the snapshots of the environment's key
/// (EBSNAP_ACCESS_KEY_ID), and those that existed before keys had owners.
pub const OWNER_ID: &str = "000000000000";

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
    /// Connections open at once (`serve --max-connections`); at the limit, the oldest
    /// that has not proven itself is closed to make room.
    pub max_connections: usize,
}

impl Limits {
    /// The default head timeout, in seconds (`serve --header-timeout`).
    pub const HEADER_TIMEOUT_SECS: u64 = 30;
    /// The default body timeout, in seconds (`serve --body-timeout`).
    pub const BODY_TIMEOUT_SECS: u64 = 60;
    /// The default connection limit (`serve --max-connections`): at most
    /// [`MAX_HEAD_BYTES`] of head each, 32 MiB in all.
    pub const MAX_CONNECTIONS: usize = 512;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(Self::HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(Self::BODY_TIMEOUT_SECS),
            max_connections: Self::MAX_CONNECTIONS,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn SnapshotStore>,
    /// The keys requests may be signed with; `None`: auth is off.
    keys: Option<Arc<Keys>>,
    /// Held by CreateTags and DeleteTags from their checks to their writes.
    tag_edits: Arc<tokio::sync::Mutex<()>>,
    in_flight: Arc<Semaphore>,
    /// Bytes of body held by requests whose signature can be checked only with it.
    unproven: Arc<Semaphore>,
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
    let keys = credentials.map(|c| Arc::new(Keys::single(Key::admin(c))));
    router_with_keys(store, keys, limits)
}

/// [`router_with_limits`], accepting the keys of `keys` (reloadable, with roles and
/// owners); `None`: no authentication.
pub fn router_with_keys(
    store: Arc<dyn SnapshotStore>,
    keys: Option<Arc<Keys>>,
    limits: &Limits,
) -> Router {
    let state = AppState {
        store,
        keys,
        tag_edits: Default::default(),
        in_flight: Arc::new(Semaphore::new(admit::MAX_IN_FLIGHT)),
        unproven: Arc::new(Semaphore::new(admit::UNPROVEN_BYTES)),
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
        .layer(middleware::from_fn_with_state(state.clone(), admit::admit))
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
pub async fn serve_router_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router_tls(listener, app, limits, None, shutdown).await
}

/// [`serve_router_with_limits`], over TLS when `tls` is given.
///
/// This is hyper's HTTP/1.1 server driven directly rather than `axum::serve`, which
/// sets no timer: hyper's header-read timeout then never fires, and a client that
/// opens connections and sends nothing (or half a request line) keeps them, and their
/// sockets, for ever. HTTP/1.1 only: every EBS client speaks it, and it is the protocol
/// whose limits (head size, header count, head timeout) are configured here.
pub async fn serve_router_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let protocol = Arc::new(connections::Protocol {
        tls,
        http,
        header_timeout: limits.header_timeout,
        stopping: tokio_util::sync::CancellationToken::new(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = connections::Connections::new(limits.max_connections);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            () = &mut shutdown => break,
        };
        let place = tokio::select! {
            place = connections.admit() => place,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The connection's mark travels with its requests: admission marks it proven.
        let app = app.clone().layer(axum::Extension(place.mark.clone()));
        // Watched from its start, handshake included: shutdown waits for it too.
        let watcher = graceful.watcher();
        tokio::spawn(connections::drive(
            stream,
            protocol.clone(),
            app,
            watcher,
            place,
        ));
    }
    drop(listener);
    protocol.stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// The next connection.
async fn accept(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => return stream,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset while queued: the
                // listener is fine. Pause a little so that running out of descriptors
                // does not spin, then go on.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
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

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
pub mod sigv4;

pub use sigv4::Credentials;

use crate::block::BLOCK_SIZE;
use crate::store::SnapshotStore;
use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use error::{EbsError, Ec2Error};
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Largest request body: one block plus room for headers-in-body APIs (EC2 forms).
const MAX_BODY: usize = BLOCK_SIZE + 64 * 1024;
/// The account id the server reports as owner of every snapshot.
pub const OWNER_ID: &str = "000000000000";
/// Requests handled at once. Each may hold a block (512 KiB) in memory, so this bounds
/// the server's memory whatever the number of clients: about 64 MiB of bodies. Further
/// requests wait for a turn (their bytes wait in the socket buffers).
const MAX_IN_FLIGHT: usize = 128;
/// Time a client has to send a request's body once it has its turn.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn SnapshotStore>,
    credentials: Option<Arc<Credentials>>,
    owner_id: String,
    in_flight: Arc<Semaphore>,
}

/// The HTTP application: routes, auth, body limits.
pub fn router(store: Arc<dyn SnapshotStore>, credentials: Option<Credentials>) -> Router {
    let state = AppState {
        store,
        credentials: credentials.map(Arc::new),
        owner_id: OWNER_ID.to_owned(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
    let _turn = state.in_flight.acquire().await.expect("never closed");
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_BODY)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return body_error(
                ec2,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body unreadable or larger than {MAX_BODY} bytes: {e}"),
            )
        }
        Err(_) => {
            return body_error(
                ec2,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        }
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

fn body_error(ec2: bool, status: StatusCode, message: String) -> Response {
    if ec2 {
        Ec2Error {
            status,
            code: "InvalidRequest".into(),
            message,
        }
        .into_response()
    } else {
        EbsError::new(status, "ValidationException", message).into_response()
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

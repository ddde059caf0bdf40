//! Admitting a request: its signature, its turn among the requests in flight, its body.
//!
//! A request's turn is taken only once it has proven who sent it, where its head can
//! prove that: a forged request must never hold one of the [`MAX_IN_FLIGHT`] turns
//! while the server waits for a body that never comes. (130 forged requests announcing
//! 512 KiB and sending nothing made a genuine call wait a minute.) A head proves itself
//! when it names the payload's hash (`x-amz-content-sha256`, covered by the signature:
//! PutSnapshotBlock's UNSIGNED-PAYLOAD, whose checksum header is signed) or has no body.
//! Other requests (EC2 forms, whose signature covers the body's own hash) hold what
//! their body has sent so far in a small separate budget, [`UNPROVEN_BYTES`], and take
//! a turn once the signature is checked. The budget counts bytes received, not
//! requests: forged requests that announce a large body and send nothing cost nothing,
//! and cannot crowd out a genuine EC2 call.

use super::access::{Caller, Operation};
use super::error::{EbsError, Ec2Error};
use super::{connections, sigv4, AppState, Key, MAX_BODY};
use crate::block::{BufferPool, BLOCK_SIZE};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

/// Requests handled at once. Each may hold a block (512 KiB) in memory, so this bounds
/// the server's memory whatever the number of clients: about 64 MiB of bodies. Further
/// requests wait for a turn (their bytes wait in the socket buffers).
pub(super) const MAX_IN_FLIGHT: usize = 128;
/// Bytes of body held at once by requests whose signature can be checked only with
/// their body: what a client without the secret can make the server hold.
pub(super) const UNPROVEN_BYTES: usize = 16 * MAX_BODY;

/// How far a head goes in proving its request genuine.
enum Proof {
    /// No authentication is configured.
    Open,
    /// The signature of this key is good; the body must hash to this (unless
    /// UNSIGNED-PAYLOAD).
    Head(String, Arc<Key>),
    /// The signature covers the body's own hash: checked once the body is read.
    NeedsBody(Arc<Key>),
}

impl Proof {
    /// Who the request will be handled for, once proven.
    fn caller(&self) -> Caller {
        match self {
            Proof::Open => Caller::open(),
            Proof::Head(_, key) | Proof::NeedsBody(key) => Caller::of(key),
        }
    }
}

/// The request as seen by admission: which API, whether it is PutSnapshotBlock.
#[derive(Clone, Copy)]
struct Kind {
    ec2: bool,
    put_block: bool,
}

impl Kind {
    fn of(request: &Request) -> Kind {
        Kind {
            ec2: request.uri().path() == "/",
            // PutSnapshotBlock alone sends an unsigned body (its checksum header is signed).
            put_block: request.method() == Method::PUT && request.uri().path().contains("/blocks/"),
        }
    }

    fn service(self) -> &'static str {
        if self.ec2 {
            "ec2"
        } else {
            "ebs"
        }
    }
}

/// Admits a request: the checks of its head (key, scope, date, required headers,
/// announced size, and the signature itself where the head can prove it), then a turn
/// and its body (bounded in size and in time), then what is left of the signature. The
/// key's role is checked as soon as the signature is: a refused call takes no turn, and
/// an EBS call's body is not even read. (EC2 calls name their action in the body: their
/// handler checks it, before any store work.)
pub(super) async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let kind = Kind::of(&request);
    let proof = match check_head(&state, &request, kind) {
        Ok(proof) => proof,
        Err(refused) => return *refused,
    };
    let caller = proof.caller();
    // A head that proved itself proves its connection at once: a genuine client's
    // connection is then not among those closed to make room while its body arrives.
    if !matches!(proof, Proof::NeedsBody(_)) {
        connections::mark_proven(request.extensions());
        if let Err(refused) = check_role(&caller, &request, kind) {
            return *refused;
        }
    }
    let (mut parts, body) = request.into_parts();
    let declared = declared_length(&parts).unwrap_or(0) as usize;
    let admitted = match proof {
        Proof::NeedsBody(_) => read_then_verify(&state, &parts, body, kind, &caller).await,
        proof => take_turn_then_read(&state, &parts, body, declared, kind, proof).await,
    };
    let (_turn, body) = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    connections::mark_proven(&parts.extensions);
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Refuses an EBS call the caller's role does not allow (AccessDeniedException).
fn check_role(caller: &Caller, request: &impl Described, kind: Kind) -> Result<(), Refused> {
    if kind.ec2 {
        return Ok(());
    }
    match request.operation() {
        Some(op) if !caller.role.allows(op) => Err(caller
            .ebs_denied(&format!("ebs:{op:?}"))
            .into_response()
            .into()),
        _ => Ok(()),
    }
}

type Turn = tokio::sync::OwnedSemaphorePermit;
/// The answer to a request refused at admission (boxed: a `Response` is large).
type Refused = Box<Response>;

/// A request proven by its head (or with auth off): its turn, then its body.
async fn take_turn_then_read(
    state: &AppState,
    parts: &Parts,
    body: Body,
    declared: usize,
    kind: Kind,
    proof: Proof,
) -> Result<(Turn, Bytes), Refused> {
    let turn = state
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("never closed");
    let body = timed_read(state, body, declared, kind).await?;
    if let Proof::Head(claimed, _) = proof {
        sigv4::check_payload(&claimed, &body).map_err(|e| refusal(kind, parts, e))?;
    }
    Ok((turn, body))
}

/// A request that cannot prove itself before its body is read: what its body sends is
/// held in the small budget of unproven bytes, and it takes a turn once its signature
/// is good.
async fn read_then_verify(
    state: &AppState,
    parts: &Parts,
    body: Body,
    kind: Kind,
    caller: &Caller,
) -> Result<(Turn, Bytes), Refused> {
    // Nothing is reserved for the announced length: only what arrives is held.
    let read = read_unproven(state, body);
    let (body, unproven) = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(read) => read.map_err(|e| body_error(kind, e))?,
        Err(_) => return Err(body_error(kind, BodyError::Timeout(state.body_timeout))),
    };
    let key = state.keys.as_ref().expect("only with auth").current();
    let key = key.get(&caller.access_key_id).ok_or_else(|| {
        // Revoked (a reload) while its body arrived: refused as any unknown key.
        refusal(kind, parts, sigv4::AuthError::UnknownKey)
    })?;
    let signed = signed_request(parts, &body, kind);
    sigv4::verify(&signed, &key.credentials, SystemTime::now(), kind.service())
        .map_err(|e| refusal(kind, parts, e))?;
    check_role(caller, parts, kind)?;
    let turn = state
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("never closed");
    drop(unproven);
    Ok((turn, body))
}

/// Everything that can be checked before a body is read.
fn check_head(state: &AppState, request: &Request, kind: Kind) -> Result<Proof, Refused> {
    let Some(keys) = &state.keys else {
        check_required(request, kind)?;
        return check_size(request, kind).map(|()| Proof::Open);
    };
    let key = known_key(&keys.current(), request).map_err(|e| refusal(kind, request, e))?;
    let credentials = &key.credentials;
    let (now, service) = (SystemTime::now(), kind.service());
    sigv4::precheck(request.headers(), credentials, now, service)
        .map_err(|e| refusal(kind, request, e))?;
    // A required header that is missing is the client's modeled mistake, named as
    // such, not a signature that fails to match for want of it.
    check_required(request, kind)?;
    check_size(request, kind)?;
    let signed = sigv4::Request {
        method: request.method().as_str(),
        path: request.uri().path(),
        query: request.uri().query().unwrap_or(""),
        headers: request.headers(),
        body: b"",
        unsigned_payload_allowed: kind.put_block,
    };
    let refused = |e| refusal(kind, request, e);
    match sigv4::verify_head(&signed, credentials, now, service).map_err(refused)? {
        Some(claimed) => Ok(Proof::Head(claimed, key)),
        // No body: its hash is the empty body's, known now.
        None if !has_body(request) => sigv4::verify(&signed, credentials, now, service)
            .map(|()| Proof::Head(sigv4::empty_payload_hash(), key.clone()))
            .map_err(refused),
        None => Ok(Proof::NeedsBody(key)),
    }
}

/// The key the request names, in the key set of the moment.
fn known_key(keys: &super::keys::KeySet, request: &Request) -> Result<Arc<Key>, sigv4::AuthError> {
    let id = sigv4::access_key_id(request.headers())?;
    keys.get(id).cloned().ok_or(sigv4::AuthError::UnknownKey)
}

/// Whether the request has a body at all (hyper reads none without a length or a
/// transfer encoding).
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(axum::http::header::TRANSFER_ENCODING)
        || declared(headers).is_some_and(|n| n > 0)
}

/// PutSnapshotBlock's checksum headers: missing, a 400 ValidationException naming it.
fn check_required(request: &Request, kind: Kind) -> Result<(), Refused> {
    let required = ["x-amz-checksum", "x-amz-checksum-algorithm"];
    for name in required.into_iter().filter(|_| kind.put_block) {
        if !request.headers().contains_key(name) {
            return Err(EbsError::validation(
                crate::store::ValidationReason::InvalidParameterValue,
                format!("PutSnapshotBlock needs the {name} header"),
            )
            .into_response()
            .into());
        }
    }
    Ok(())
}

/// A body announced larger than the limit is refused before it is waited for.
fn check_size(request: &Request, kind: Kind) -> Result<(), Refused> {
    match declared(request.headers()) {
        Some(n) if n > MAX_BODY as u64 => Err(body_error(kind, BodyError::TooLarge)),
        _ => Ok(()),
    }
}

fn signed_request<'a>(parts: &'a Parts, body: &'a [u8], kind: Kind) -> sigv4::Request<'a> {
    sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
        unsigned_payload_allowed: kind.put_block,
    }
}

/// Something that names a request in a log line, and its EBS operation.
trait Described {
    fn describe(&self) -> String;
    fn operation(&self) -> Option<Operation>;
}

impl Described for Request {
    fn describe(&self) -> String {
        format!("{} {}", self.method(), self.uri().path())
    }

    fn operation(&self) -> Option<Operation> {
        Operation::of_ebs(self.method(), self.uri().path())
    }
}

impl Described for Parts {
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri.path())
    }

    fn operation(&self) -> Option<Operation> {
        Operation::of_ebs(&self.method, self.uri.path())
    }
}

fn refusal(kind: Kind, request: &impl Described, e: sigv4::AuthError) -> Refused {
    tracing::info!("refused {}: {e}", request.describe());
    if kind.ec2 {
        Ec2Error {
            status: StatusCode::UNAUTHORIZED,
            code: "AuthFailure".into(),
            message: e.to_string(),
        }
        .into_response()
        .into()
    } else {
        EbsError::new(StatusCode::FORBIDDEN, e.error_type(), e.to_string())
            .into_response()
            .into()
    }
}

/// Why a request's body could not be taken.
#[derive(Debug)]
enum BodyError {
    /// Over [`MAX_BODY`], as announced or as sent.
    TooLarge,
    /// Cut short (the client closed mid-body) or badly framed (bad chunk sizes).
    Malformed(String),
    /// Not received within the body timeout.
    Timeout(Duration),
}

/// The `Content-Length`, if valid (hyper has already refused the request if it has
/// several that disagree, or one that is not a number).
fn declared(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn declared_length(parts: &Parts) -> Option<u64> {
    declared(&parts.headers)
}

/// The body, within the body timeout.
async fn timed_read(
    state: &AppState,
    body: Body,
    declared: usize,
    kind: Kind,
) -> Result<Bytes, Refused> {
    match tokio::time::timeout(state.body_timeout, read_body(body, declared)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(body_error(kind, e)),
        Err(_) => Err(body_error(kind, BodyError::Timeout(state.body_timeout))),
    }
}

/// A block's body (PutSnapshotBlock's), into a block buffer of the arena rather than
/// the heap: glibc keeps a freed 512 KiB allocation in its per-thread heaps once its
/// mmap threshold has risen past it, and an idle `serve` held 27 + 8 MiB of them after
/// one 1 GiB backup. The arena gives wholly free chunks back (see `block/arena.rs`).
/// The buffer is also aligned, so an unencrypted local store on a disk writes it with
/// `O_DIRECT`, where a heap buffer's block went through the page cache (an encrypted
/// store writes its own aligned copy either way). The slot is taken before the first
/// byte comes: a stalled body holds 512 KiB, as many as [`MAX_IN_FLIGHT`] allows.
async fn read_block_body(body: Body) -> Result<Bytes, BodyError> {
    /// Keeps no spares of its own: the arena keeps some slots warm already.
    static BLOCK_BODIES: LazyLock<Arc<BufferPool>> = LazyLock::new(|| BufferPool::new(0));
    let mut stream = body.into_data_stream();
    let mut fill = BLOCK_BODIES.fill();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Malformed(e.to_string()))?;
        fill.push(&chunk).map_err(|_| BodyError::TooLarge)?;
    }
    // Shorter than announced: hyper has refused it already; the handler sees the length.
    Ok(fill.freeze())
}

/// Reads the body of a request not yet proven: each chunk takes its size from the
/// budget of unproven bytes (waiting while it is spent), given back when the request is
/// proven or refused.
async fn read_unproven(
    state: &AppState,
    body: Body,
) -> Result<(Bytes, Vec<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    let mut stream = body.into_data_stream();
    let (mut out, mut held) = (BytesMut::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Malformed(e.to_string()))?;
        if out.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        let n = u32::try_from(chunk.len()).expect("at most MAX_BODY");
        let permit = state.unproven.clone().acquire_many_owned(n).await;
        held.push(permit.expect("never closed"));
        out.extend_from_slice(&chunk);
    }
    Ok((out.freeze(), held))
}

/// Reads a body of at most [`MAX_BODY`] bytes, into a buffer of its announced length
/// (`declared`, already checked against the limit: a block is copied once). A body
/// without a length (chunked) is counted as it arrives and refused as soon as it passes
/// the limit, so a client can never make the server hold more than that.
async fn read_body(body: Body, declared: usize) -> Result<Bytes, BodyError> {
    if declared == BLOCK_SIZE {
        return read_block_body(body).await;
    }
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
fn body_error(kind: Kind, e: BodyError) -> Refused {
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
    if kind.ec2 {
        Ec2Error {
            status,
            code: "InvalidRequest".into(),
            message,
        }
        .into_response()
        .into()
    } else {
        EbsError::new(status, error_type, message)
            .into_response()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(pieces: Vec<Vec<u8>>) -> Body {
        let stream = futures::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_block_body_arrives_whole_from_its_pieces_in_an_aligned_buffer() {
        let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        let pieces = data.chunks(64 * 1024 + 3).map(<[u8]>::to_vec).collect();
        let got = read_body(body_of(pieces), BLOCK_SIZE).await.unwrap();
        assert_eq!(&got[..], &data[..]);
        assert!(
            crate::block::direct_io_fits(&got, 0),
            "aligned for O_DIRECT"
        );
    }

    #[tokio::test]
    async fn a_block_body_past_its_length_is_refused_and_a_short_one_keeps_its_length() {
        let long = vec![vec![1; BLOCK_SIZE], vec![2]];
        let refused = read_body(body_of(long), BLOCK_SIZE).await;
        assert!(matches!(refused, Err(BodyError::TooLarge)));
        let short = read_body(body_of(vec![vec![3; 1000]]), BLOCK_SIZE).await;
        assert_eq!(
            short.unwrap().len(),
            1000,
            "the handler sees the short length"
        );
    }
}

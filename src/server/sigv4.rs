//! AWS Signature Version 4, verified (the server's side of it).
//!
//! The server recomputes the signature of each request from what arrived (method, the
//! path as sent, the query, the signed headers, the payload hash) with the key pair
//! its access key id names, and compares. Both aws-sdk-rust and boto3 canonicalise the way the
//! specification says; for the EBS paths (ids, numbers) single and double URI encoding
//! coincide.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use percent_encoding::{
    percent_decode_str, percent_encode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC,
};
use sha2::{Digest as _, Sha256};
use std::time::{Duration, SystemTime};

/// How far a request's `x-amz-date` may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// RFC 3986 unreserved characters stay as they are; everything else is %XX.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
const PATH: &AsciiSet = &STRICT.remove(b'/');

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ..)", self.access_key_id)
    }
}

/// The parts of a request that are signed.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as it arrived (already percent-encoded once by the client).
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Whether the body may go unsigned (`UNSIGNED-PAYLOAD`): PutSnapshotBlock only,
    /// and then its `x-amz-checksum` header must be signed.
    pub unsigned_payload_allowed: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Malformed(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("Signature expired: {0} is more than 15 minutes from the server's time")]
    Expired(String),
    #[error("Credential should be scoped to correct service: '{0}'.")]
    WrongService(String),
    #[error("The request signature we calculated does not match the signature you provided.")]
    BadSignature,
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    BadPayloadHash,
}

impl AuthError {
    /// The AWS error type a client sees.
    pub fn error_type(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            _ => "InvalidSignatureException",
        }
    }
}

/// The fields of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_owned());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("Authorization header requires AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential
        .ok_or_else(|| malformed("Authorization header requires 'Credential' parameter"))?;
    let signed = signed
        .ok_or_else(|| malformed("Authorization header requires 'SignedHeaders' parameter"))?;
    let signature = signature
        .ok_or_else(|| malformed("Authorization header requires 'Signature' parameter"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(malformed(
            "Credential must be AKID/date/region/service/aws4_request",
        ));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// The access key id a request claims to be signed with (not yet checked): the key
/// to verify it with is looked up by it.
pub fn access_key_id(headers: &HeaderMap) -> Result<&str, AuthError> {
    let raw = headers.get("authorization").ok_or(AuthError::Missing)?;
    let raw = raw.to_str().map_err(|_| {
        AuthError::Malformed("the Authorization header is not printable ASCII".into())
    })?;
    parse_authorization(raw).map(|auth| auth.access_key_id)
}

/// The checks that need no body: a signature from the right key, for the right
/// service, made recently, covering the Host header. Passing them costs the server
/// nothing; a request that fails them is refused before its body is read.
pub fn precheck(
    headers: &HeaderMap,
    creds: &Credentials,
    now: SystemTime,
    service: &str,
) -> Result<(), AuthError> {
    checked_authorization(headers, creds, now, service).map(|_| ())
}

fn checked_authorization<'h>(
    headers: &'h HeaderMap,
    creds: &Credentials,
    now: SystemTime,
    service: &str,
) -> Result<Authorization<'h>, AuthError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let raw = headers.get("authorization").ok_or(AuthError::Missing)?;
    // Present but not ASCII: a malformed signature, not a missing one.
    let raw = raw.to_str().map_err(|_| {
        AuthError::Malformed("the Authorization header is not printable ASCII".into())
    })?;
    let auth = parse_authorization(raw)?;
    if auth.access_key_id != creds.access_key_id {
        return Err(AuthError::UnknownKey);
    }
    if auth.service != service {
        return Err(AuthError::WrongService(service.to_owned()));
    }
    let amz_date = header("x-amz-date")
        .ok_or_else(|| AuthError::Malformed("x-amz-date header is missing".into()))?;
    check_clock(amz_date, now)?;
    if !amz_date.starts_with(auth.date) {
        return Err(AuthError::Malformed(
            "the credential date does not match x-amz-date".into(),
        ));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(AuthError::Malformed(
            "'Host' must be a signed header".into(),
        ));
    }
    Ok(auth)
}

/// Checks a request's signature; `service` is the signing name the endpoint expects.
pub fn verify(
    req: &Request<'_>,
    creds: &Credentials,
    now: SystemTime,
    service: &str,
) -> Result<(), AuthError> {
    let claimed = req
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok());
    let payload_hash = payload_hash(req.body, claimed)?;
    verify_with_hash(req, creds, now, service, &payload_hash)
}

/// Checks a request's signature from its head alone (`req.body` is not looked at),
/// when the head names the payload's hash (`x-amz-content-sha256`, which the signature
/// then covers): so a forged request is refused before its body is waited for. Returns
/// that hash, which the body must then match ([`check_payload`]). `None` when the head
/// names no hash: the signature covers the body's own hash, and needs the body.
pub fn verify_head(
    req: &Request<'_>,
    creds: &Credentials,
    now: SystemTime,
    service: &str,
) -> Result<Option<String>, AuthError> {
    let Some(claimed) = req.headers.get("x-amz-content-sha256") else {
        return Ok(None);
    };
    let claimed = claimed
        .to_str()
        .map_err(|_| AuthError::Malformed("x-amz-content-sha256 is not ASCII".into()))?;
    verify_with_hash(req, creds, now, service, claimed)?;
    Ok(Some(claimed.to_owned()))
}

/// The payload hash of an empty body.
pub fn empty_payload_hash() -> String {
    hex::encode(Sha256::digest(b""))
}

/// Whether a body matches the payload hash its head's signature covered.
pub fn check_payload(claimed: &str, body: &[u8]) -> Result<(), AuthError> {
    payload_hash(body, Some(claimed)).map(|_| ())
}

fn verify_with_hash(
    req: &Request<'_>,
    creds: &Credentials,
    now: SystemTime,
    service: &str,
    payload_hash: &str,
) -> Result<(), AuthError> {
    let auth = checked_authorization(req.headers, creds, now, service)?;
    let amz_date = req.headers["x-amz-date"].to_str().expect("checked");
    if payload_hash == UNSIGNED_PAYLOAD {
        if !req.unsigned_payload_allowed {
            return Err(AuthError::Malformed(
                "UNSIGNED-PAYLOAD is accepted only for PutSnapshotBlock".into(),
            ));
        }
        if !auth.signed_headers.contains(&"x-amz-checksum") {
            return Err(AuthError::Malformed(
                "with UNSIGNED-PAYLOAD, x-amz-checksum must be a signed header".into(),
            ));
        }
    }
    let canonical = canonical_request(req, &auth.signed_headers, payload_hash);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(&canonical))
    );
    let key = signing_key(
        &creds.secret_access_key,
        auth.date,
        auth.region,
        auth.service,
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    let claimed = hex::decode(auth.signature).map_err(|_| AuthError::BadSignature)?;
    mac.verify_slice(&claimed)
        .map_err(|_| AuthError::BadSignature)
}

/// The payload hash the signature covers: the header's value (checked against the body
/// unless it is UNSIGNED-PAYLOAD), else the body's SHA-256.
fn payload_hash(body: &[u8], header: Option<&str>) -> Result<String, AuthError> {
    let actual = || hex::encode(Sha256::digest(body));
    match header {
        Some(UNSIGNED_PAYLOAD) => Ok(UNSIGNED_PAYLOAD.to_owned()),
        Some(claimed) if claimed.eq_ignore_ascii_case(&actual()) => Ok(claimed.to_owned()),
        Some(_) => Err(AuthError::BadPayloadHash),
        None => Ok(actual()),
    }
}

fn check_clock(amz_date: &str, now: SystemTime) -> Result<(), AuthError> {
    let bad = || AuthError::Malformed(format!("x-amz-date {amz_date:?} is not YYYYMMDDTHHMMSSZ"));
    if amz_date.len() != 16 {
        return Err(bad());
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &amz_date[0..4],
        &amz_date[4..6],
        &amz_date[6..8],
        &amz_date[9..11],
        &amz_date[11..13],
        &amz_date[13..15]
    );
    let when = humantime::parse_rfc3339(&iso).map_err(|_| bad())?;
    let skew = now
        .duration_since(when)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > MAX_CLOCK_SKEW {
        return Err(AuthError::Expired(amz_date.to_owned()));
    }
    Ok(())
}

/// The canonical request, as bytes: header values are signed as they arrived, so two
/// requests that differ in any byte (even bytes that are not UTF-8) never share one.
fn canonical_request(req: &Request<'_>, signed_headers: &[&str], payload_hash: &str) -> Vec<u8> {
    let path = if req.path.is_empty() { "/" } else { req.path };
    // The path arrives encoded once; the canonical form encodes it again.
    let canonical_path = utf8_percent_encode(path, PATH).to_string();
    let mut out = format!(
        "{}\n{canonical_path}\n{}\n",
        req.method,
        canonical_query(req.query)
    )
    .into_bytes();
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (n, value) in req.headers.get_all(*name).iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&collapse(value.as_bytes()));
        }
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n{}\n{payload_hash}", signed_headers.join(";")).as_bytes());
    out
}

/// Query pairs decoded, re-encoded strictly, sorted by name then value. Decoding is to
/// bytes, not text: `%FF` and `%FE` (neither of them UTF-8) must stay distinct, or a
/// signature made for one would pass for the other.
fn canonical_query(query: &str) -> String {
    let recode = |s: &str| {
        let raw: Vec<u8> = percent_decode_str(&s.replace('+', "%20")).collect();
        percent_encode(&raw, STRICT).to_string()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (recode(k), recode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Header value with surrounding space trimmed and inner runs of spaces collapsed
/// (other bytes as they are).
fn collapse(value: &[u8]) -> Vec<u8> {
    value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(&b' ')
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let step = |key: &[u8], data: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let k = step(format!("AWS4{secret}").as_bytes(), date);
    let k = step(&k, region);
    let k = step(&k, service);
    step(&k, "aws4_request")
}

#[cfg(test)]
mod tests;

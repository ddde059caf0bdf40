//! The verifier against the AWS test suite's vector, and the ways a signature can fail.

use super::*;
use axum::http::HeaderValue;

fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
    }
}

fn at(iso: &str) -> SystemTime {
    humantime::parse_rfc3339(iso).unwrap()
}

/// The "get-vanilla" case of AWS's SigV4 test suite.
fn vanilla(signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
    h.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    let auth = format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}");
    h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    h
}

const VANILLA: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

#[test]
fn accepts_the_aws_test_suite_vector() {
    let headers = vanilla(VANILLA);
    let req = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
        unsigned_payload_allowed: false,
    };
    assert_eq!(
        verify(&req, &creds(), at("2015-08-30T12:40:00Z"), "service"),
        Ok(())
    );
}

#[test]
fn refuses_wrong_signature_key_service_and_stale_dates() {
    let bad = VANILLA.replace('5', "6");
    let headers = vanilla(&bad);
    let req = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
        unsigned_payload_allowed: false,
    };
    let now = at("2015-08-30T12:40:00Z");
    assert_eq!(
        verify(&req, &creds(), now, "service"),
        Err(AuthError::BadSignature)
    );
    let headers = vanilla(VANILLA);
    let req = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
        unsigned_payload_allowed: false,
    };
    assert_eq!(
        verify(&req, &creds(), now, "ebs"),
        Err(AuthError::WrongService("ebs".into()))
    );
    assert!(matches!(
        verify(&req, &creds(), at("2015-08-30T13:00:00Z"), "service"),
        Err(AuthError::Expired(_))
    ));
    let other = Credentials {
        access_key_id: "AKIDOTHER".into(),
        ..creds()
    };
    assert_eq!(
        verify(&req, &other, now, "service"),
        Err(AuthError::UnknownKey)
    );
    let tampered = Request {
        method: "POST",
        ..req
    };
    assert_eq!(
        verify(&tampered, &creds(), now, "service"),
        Err(AuthError::BadSignature)
    );
    let empty = HeaderMap::new();
    let unsigned = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &empty,
        body: b"",
        unsigned_payload_allowed: false,
    };
    assert_eq!(
        verify(&unsigned, &creds(), now, "service"),
        Err(AuthError::Missing)
    );
}

#[test]
fn unsigned_payloads_only_where_allowed_and_with_a_signed_checksum() {
    let mut headers = vanilla(VANILLA);
    headers.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static(UNSIGNED_PAYLOAD),
    );
    let now = at("2015-08-30T12:40:00Z");
    let req = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"x",
        unsigned_payload_allowed: false,
    };
    assert!(
        matches!(verify(&req, &creds(), now, "service"), Err(AuthError::Malformed(m)) if m.contains("PutSnapshotBlock"))
    );
    let put = Request {
        unsigned_payload_allowed: true,
        ..req
    };
    assert!(
        matches!(verify(&put, &creds(), now, "service"), Err(AuthError::Malformed(m)) if m.contains("x-amz-checksum"))
    );
}

#[test]
fn canonical_query_sorts_and_encodes() {
    assert_eq!(canonical_query("b=2&a=x%20y&a=1&c"), "a=1&a=x%20y&b=2&c=");
    assert_eq!(
        canonical_query("pageToken=ab%2Bc%3D%3D"),
        "pageToken=ab%2Bc%3D%3D"
    );
    assert_eq!(canonical_query("a=%c3%a9"), "a=%C3%A9");
}

/// Bytes that are not UTF-8 are signed as they are: were they decoded lossily, a
/// signature for `%FF` would also pass for `%FE` (both U+FFFD).
#[test]
fn bytes_that_are_not_utf8_stay_distinct() {
    assert_eq!(canonical_query("t=%FF"), "t=%FF");
    assert_ne!(canonical_query("t=%FF"), canonical_query("t=%FE"));
    let with = |value: &[u8]| {
        let mut h = HeaderMap::new();
        h.insert("x-amz-meta", HeaderValue::from_bytes(value).unwrap());
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
            unsigned_payload_allowed: false,
        };
        canonical_request(&req, &["x-amz-meta"], "h")
    };
    assert_ne!(with(b"a\xff"), with(b"a\xfe"));
    assert!(with(b"  a   b ").starts_with(b"GET\n/\n\nx-amz-meta:a b\n"));
}

#[test]
fn an_authorization_header_that_is_not_ascii_is_malformed() {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_bytes(b"AWS4-HMAC-SHA256 \xff").unwrap(),
    );
    assert!(matches!(
        precheck(&h, &creds(), at("2015-08-30T12:40:00Z"), "service"),
        Err(AuthError::Malformed(_))
    ));
}

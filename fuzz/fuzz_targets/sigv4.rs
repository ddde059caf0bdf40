//! SigV4 verification (src/server/sigv4.rs): the Authorization header's parsing, the
//! cheap checks, the canonical request (path, query, signed headers, payload hash) and
//! the signature, on a request in ebsnap_fuzz's text format. The clock is fixed at the
//! date of AWS's "get-vanilla" test vector, which the seeds start from, so that
//! mutations get past the date check.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ebsnap::fuzzing::sigv4::{self, Credentials};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let Some(raw) = ebsnap_fuzz::parse_request(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &raw.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let (Ok(method), Ok(path), Ok(query)) = (
        std::str::from_utf8(&raw.method),
        std::str::from_utf8(raw.path()),
        std::str::from_utf8(raw.query()),
    ) else {
        return;
    };
    let credentials = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
    };
    // 2015-08-30T12:36:00Z
    let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    for service in ["service", "ebs", "ec2"] {
        for unsigned_payload_allowed in [false, true] {
            let request = sigv4::Request {
                method,
                path,
                query,
                headers: &headers,
                body: &raw.body,
                unsigned_payload_allowed,
            };
            let checked = sigv4::precheck(&headers, &credentials, now, service);
            let verified = sigv4::verify(&request, &credentials, now, service);
            // A signature that verifies has passed the cheap checks too.
            assert!(verified.is_err() || checked.is_ok());
            if let Err(e) = verified {
                let _ = (e.error_type(), e.to_string());
            }
        }
    }
});

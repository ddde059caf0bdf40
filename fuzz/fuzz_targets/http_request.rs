//! The whole application (routing, the admission layer, every handler, the error
//! shapes) over a memory store, on one request in ebsnap_fuzz's text format, with
//! authentication off. `{A}`, `{P}` and `{T}` in the input stand for the store's
//! completed snapshot, its pending snapshot and a genuine block token, so that seeds
//! reach the handlers' deeper paths.
//!
//! Beyond not crashing: no answer is a 5xx (the memory store has no internal
//! failures), and every refusal has an AWS error shape, EBS's (`x-amzn-ErrorType` and a
//! JSON `message`) or EC2's (an XML `Response/Errors/Error/Code`).
#![no_main]

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use ebsnap::fuzzing::server;
use ebsnap_fuzz::{parse_request, runtime, substitute};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let app = server::app().await;
        let data = substitute(data, b"{A}", app.completed.as_str().as_bytes());
        let data = substitute(&data, b"{P}", app.pending.as_str().as_bytes());
        let data = substitute(&data, b"{T}", app.block_token.as_bytes());
        let Some(raw) = parse_request(&data) else {
            return;
        };
        let (Ok(method), Ok(uri)) = (
            Method::from_bytes(&raw.method),
            Uri::try_from(raw.target.as_slice()),
        ) else {
            return;
        };
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in &raw.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                request = request.header(n, v);
            }
        }
        let Ok(request) = request.body(Body::from(raw.body.clone())) else {
            return;
        };
        let response = app.router.oneshot(request).await.unwrap();
        let status = response.status();
        assert!(!status.is_server_error(), "{status} for {raw:?}");
        if status.is_client_error() {
            let ebs = response.headers().contains_key("x-amzn-errortype");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            if method == Method::HEAD {
                return;
            }
            if ebs {
                let json: serde_json::Value =
                    serde_json::from_slice(&body).expect("an EBS error body is JSON");
                assert!(json["message"].is_string(), "{json}");
            } else {
                let text = String::from_utf8_lossy(&body);
                assert!(
                    text.contains("<Response><Errors><Error><Code>"),
                    "{status} without an AWS error shape: {text:?} for {raw:?}"
                );
            }
        }
    });
});

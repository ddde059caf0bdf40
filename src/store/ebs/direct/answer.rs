//! Reading the service's answers to the block calls: a header, and what an error says,
//! as the SDK's JSON protocols read them.

use super::*;
use http_body_util::BodyExt;

/// A header's value, where it is text.
pub(super) fn header<'a>(headers: &'a ::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// Up to `limit` bytes of `body`; what arrived before a failure, if it fails.
pub(super) async fn read_limited(mut body: hyper::body::Incoming, limit: usize) -> Vec<u8> {
    let mut read = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let room = limit - read.len();
            read.extend_from_slice(&data[..data.len().min(room)]);
            if read.len() == limit {
                break;
            }
        }
    }
    read
}

/// What an error answer means, read as the SDK's JSON protocols read it: its type
/// from `x-amzn-ErrorType`, else the body's `code`, else its `__type`, less any `:url`
/// suffix and `namespace#` prefix; its message and `Reason` from the body, and the
/// request id for a support case. An answer with no type (a proxy's error page) is
/// judged by its status.
pub(super) fn error(context: &str, head: &::http::response::Parts, body: &[u8]) -> StoreError {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| json.as_ref()?.get(name)?.as_str().map(str::to_owned);
    let code = header(&head.headers, "x-amzn-errortype")
        .map(str::to_owned)
        .or_else(|| field("code"))
        .or_else(|| field("__type"))
        .unwrap_or_default();
    let message = ["message", "Message", "errorMessage"]
        .into_iter()
        .find_map(field)
        .unwrap_or_else(|| "no message".to_owned());
    let message = match header(&head.headers, "x-amzn-requestid") {
        Some(id) => format!("{context}: {message} (request {id})"),
        None => format!("{context}: {message}"),
    };
    let code = aws_smithy_schema::error_envelope::sanitize_error_code(&code);
    let reason = json.as_ref().and_then(errors::reason_of);
    errors::by_code(code, head.status.as_u16(), message, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, error_type: Option<&str>, body: &str) -> StoreError {
        let mut head = ::http::Response::builder().status(status);
        if let Some(t) = error_type {
            head = head.header("x-amzn-errortype", t);
        }
        let (parts, ()) = head.body(()).unwrap().into_parts();
        error("GetSnapshotBlock snap-0 block 1", &parts, body.as_bytes())
    }

    #[test]
    fn the_type_comes_from_the_header_then_the_body() {
        let throttled = answer(
            400,
            Some("RequestThrottledException:http://internal.amazon.com/"),
            r#"{"message":"slow down","Reason":"ACCOUNT_THROTTLED"}"#,
        );
        assert!(
            matches!(throttled, StoreError::Throttled { .. }),
            "{throttled:?}"
        );
        let typed = answer(
            404,
            None,
            r#"{"__type":"com.amazon.ebs#ResourceNotFoundException","message":"gone"}"#,
        );
        assert!(
            matches!(&typed, StoreError::NotFound { what } if what.contains("gone")),
            "{typed:?}"
        );
        let both = answer(
            400,
            Some("RequestThrottledException"),
            r#"{"__type":"ValidationException","message":"m"}"#,
        );
        assert!(matches!(both, StoreError::Throttled { .. }), "{both:?}");
        let suffixed = answer(
            400,
            None,
            r#"{"__type":"a.b#RequestThrottledException:http://x/"}"#,
        );
        assert!(
            matches!(suffixed, StoreError::Throttled { .. }),
            "{suffixed:?}"
        );
        let coded = answer(
            403,
            None,
            r#"{"code":"AccessDeniedException","Message":"no"}"#,
        );
        assert!(
            matches!(coded, StoreError::AccessDenied { .. }),
            "{coded:?}"
        );
    }

    #[test]
    fn an_error_names_its_request() {
        let (head, ()) = ::http::Response::builder()
            .status(500)
            .header("x-amzn-requestid", "2af8f013-250a")
            .body(())
            .unwrap()
            .into_parts();
        let e = error(
            "PutSnapshotBlock snap-0 block 1",
            &head,
            br#"{"errorMessage":"oops"}"#,
        );
        let StoreError::Unavailable { message } = &e else {
            panic!("{e:?}");
        };
        assert!(
            message.contains("oops (request 2af8f013-250a)"),
            "{message}"
        );
    }

    #[test]
    fn a_validation_error_keeps_its_reason() {
        let e = answer(
            400,
            Some("ValidationException"),
            r#"{"message":"bad token","Reason":"INVALID_BLOCK_TOKEN"}"#,
        );
        assert!(
            matches!(&e, StoreError::Invalid { reason: ValidationReason::InvalidBlockToken, message } if message.contains("bad token")),
            "{e:?}"
        );
    }

    #[test]
    fn an_answer_without_a_type_is_judged_by_its_status() {
        let page = answer(502, None, "<html>Bad Gateway</html>");
        assert!(matches!(page, StoreError::Unavailable { .. }), "{page:?}");
        let refused = answer(403, None, "");
        assert!(
            matches!(refused, StoreError::AccessDenied { .. }),
            "{refused:?}"
        );
    }
}

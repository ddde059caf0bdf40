//! SDK failures, mapped into the store's error by meaning: the service's codes, and
//! what went wrong below them (an untrusted certificate, an answer that does not
//! parse), said plainly and naming the endpoint.

use super::*;
use aws_runtime::retries::classifiers::THROTTLING_ERRORS;
use aws_sdk_ebs::config::http::HttpResponse;
use std::error::Error as StdError;

/// The EC2 Query operations: their answers are XML (EBS's are JSON).
const EC2_OPERATIONS: &[&str] = &[
    "DescribeSnapshots",
    "CreateTags",
    "DeleteTags",
    "DeleteSnapshot",
];

/// Maps an SDK failure of the call `context` (its operation name first) to `endpoint`.
pub(super) fn sdk_error<E>(
    endpoint: &str,
    context: &str,
    err: SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if let Some(tls) = find::<rustls::Error>(&err) {
        return tls_error(endpoint, context, tls);
    }
    if let Some(e) = find::<super::xml_check::NotXml>(&err) {
        return unreadable_answer(endpoint, context, e.status, format!("not valid XML: {e}"));
    }
    match &err {
        SdkError::ServiceError(ctx) => {
            if let Some(e) = unreadable(context, ctx.err()) {
                return unreadable_answer(endpoint, context, ctx.raw().status().as_u16(), e);
            }
            service_error(context, ctx.err(), ctx.raw())
        }
        SdkError::ResponseError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match unreadable(context, &err) {
                Some(e) => unreadable_answer(endpoint, context, status, e),
                None => unavailable(context, &err),
            }
        }
        SdkError::ConstructionFailure(_) => StoreError::invalid(
            ValidationReason::InvalidParameterValue,
            format!("{context}: {}", display(&err)),
        ),
        _ => unavailable(context, &err),
    }
}

/// A block call (`direct.rs`) that got no answer: TLS that failed, said plainly; else
/// a connection that failed, was refused, went away or timed out connecting, worth
/// another attempt (as the SDK's calls take every dispatch failure).
pub(super) fn transport_error(
    endpoint: &str,
    context: &str,
    err: &(dyn StdError + 'static),
) -> StoreError {
    match find::<rustls::Error>(err) {
        Some(tls) => tls_error(endpoint, context, tls),
        None => unavailable(context, err),
    }
}

fn unavailable(context: &str, err: &(dyn StdError + 'static)) -> StoreError {
    StoreError::Unavailable {
        message: format!("{context}: {}", display(err)),
    }
}

fn display(err: &(dyn StdError + 'static)) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(err).to_string()
}

/// A TLS failure: never worth retrying as is (an untrusted certificate stays
/// untrusted), and nothing like a generic dispatch failure to the one who must fix it.
fn tls_error(endpoint: &str, context: &str, e: &rustls::Error) -> StoreError {
    let message = match e {
        rustls::Error::InvalidCertificate(why) => format!(
            "{context}: the TLS certificate of the EBS endpoint {endpoint} is not trusted \
             ({why:?}): point AWS_CA_BUNDLE (or the profile's ca_bundle) at the CA that \
             signed it"
        ),
        other => format!("{context}: TLS with the EBS endpoint {endpoint} failed: {other}"),
    };
    StoreError::AccessDenied { message }
}

/// Why the answer to `context` could not be read, if that is what failed: XML that
/// does not parse (EC2), or JSON (EBS).
fn unreadable(context: &str, err: &(dyn StdError + 'static)) -> Option<String> {
    let operation = context.split_whitespace().next().unwrap_or_default();
    if EC2_OPERATIONS.contains(&operation) {
        find::<aws_smithy_xml::decode::XmlDecodeError>(err).map(|e| format!("not valid XML: {e}"))
    } else {
        find::<aws_smithy_json::deserialize::error::DeserializeError>(err)
            .map(|e| format!("not valid JSON: {e}"))
    }
}

/// An answer that does not parse: a proxy's error page is worth another try (5xx); a
/// 2xx that does not parse (a tag the server let in that XML forbids) will not get
/// better by asking again.
fn unreadable_answer(endpoint: &str, context: &str, status: u16, why: String) -> StoreError {
    let message =
        format!("the EBS endpoint {endpoint} sent an answer that is {why} (HTTP {status})");
    if status >= 500 {
        return StoreError::Unavailable {
            message: format!("{context}: {message}"),
        };
    }
    StoreError::Corrupt {
        what: format!("the answer to {context}"),
        message,
    }
}

/// The first error of type `T` in `err`'s chain, looking inside I/O errors too (whose
/// `source` skips the error they wrap).
pub(super) fn find<'e, T: StdError + 'static>(err: &'e (dyn StdError + 'static)) -> Option<&'e T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find::<T>(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

/// What the service said, by its error code.
fn service_error<E: ProvideErrorMetadata>(
    context: &str,
    err: &E,
    raw: &HttpResponse,
) -> StoreError {
    let code = err.code().unwrap_or("");
    let msg = format!("{context}: {}", err.message().unwrap_or("no message"));
    let status = raw.status().as_u16();
    let body = raw
        .body()
        .bytes()
        .and_then(|b| serde_json::from_slice(b).ok());
    by_code(code, status, msg, body.as_ref().and_then(reason_of))
}

/// The `Reason` an EBS error answer's JSON body gives.
pub(super) fn reason_of(body: &serde_json::Value) -> Option<ValidationReason> {
    body["Reason"].as_str()?.parse().ok()
}

/// What an error answer means, from its code (and its status where the code is not
/// known). ebsnap makes one attempt per SDK call and retries in `RetryStore`, so a
/// code the SDK's own retries took for throttling or clock skew must say so here.
pub(super) fn by_code(
    code: &str,
    status: u16,
    msg: String,
    reason: Option<ValidationReason>,
) -> StoreError {
    match code {
        "ResourceNotFoundException" | "InvalidSnapshot.NotFound" => {
            StoreError::NotFound { what: msg }
        }
        "ValidationException" => StoreError::Invalid {
            reason: reason.unwrap_or(ValidationReason::InvalidParameterValue),
            message: msg,
        },
        "InvalidSnapshotID.Malformed" => {
            StoreError::invalid(ValidationReason::InvalidSnapshotId, msg)
        }
        "InvalidParameterValue"
        | "InvalidParameter"
        | "InvalidParameterCombination"
        | "MissingParameter" => StoreError::invalid(ValidationReason::InvalidParameterValue, msg),
        "InvalidSnapshot.InUse" => {
            StoreError::invalid(ValidationReason::InvalidDependencyRequest, msg)
        }
        "InvalidTagKey.Malformed" => StoreError::invalid(ValidationReason::InvalidTag, msg),
        "ConflictException" => StoreError::Conflict { message: msg },
        "TagLimitExceeded" => StoreError::limit(Quota::TagsPerSnapshot, msg),
        // EBS's ConcurrentLimitExceededException is its throttle of concurrent calls
        // (the pending-snapshot cap included): worth another try after a while.
        "ConcurrentLimitExceededException" | "ServiceQuotaExceededException" => {
            StoreError::Throttled { message: msg }
        }
        // Every throttling code the SDK's own retries knew (they are off: RetryStore
        // is the one retry policy).
        c if THROTTLING_ERRORS.contains(&c) => StoreError::Throttled { message: msg },
        // A clock this far off is corrected from the answer's Date (the SDK's
        // clock-skew interceptor): the next attempt is signed at the service's time.
        "RequestTimeTooSkewed" => clock_off(msg, code, status),
        // Expired session credentials: another attempt with them cannot succeed.
        "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired" => {
            StoreError::AccessDenied {
                message: format!("{msg} ({code}: the credentials expired; refresh them)"),
            }
        }
        "InvalidSignatureException" | "SignatureDoesNotMatch" | "AuthFailure" if skewed(&msg) => {
            clock_off(msg, code, status)
        }
        // The server gave up waiting for the request's body: worth another try.
        "RequestTimeoutException" | "RequestTimeout" => StoreError::Unavailable {
            message: format!("{msg} ({code}, HTTP {status})"),
        },
        _ => by_status(msg, code, status),
    }
}

/// Whether a signature was refused for its time, not its key: "Signature expired",
/// or a request time too far from the service's (not "the security token is
/// expired": new credentials cure that, not another attempt).
fn skewed(msg: &str) -> bool {
    let msg = msg.to_ascii_lowercase();
    msg.contains("signature expired") || msg.contains("skew")
}

/// A request refused for this host's clock: worth another attempt.
fn clock_off(msg: String, code: &str, status: u16) -> StoreError {
    StoreError::Unavailable {
        message: format!("{msg} ({code}, HTTP {status}: this host's clock is off)"),
    }
}

fn by_status(msg: String, code: &str, status: u16) -> StoreError {
    match status {
        429 => StoreError::Throttled {
            message: format!("{msg} ({code}, HTTP 429)"),
        },
        401 | 403 => StoreError::AccessDenied {
            message: format!("{msg} ({code})"),
        },
        500.. => StoreError::Unavailable {
            message: format!("{msg} ({code}, HTTP {status})"),
        },
        _ => StoreError::invalid(
            ValidationReason::InvalidParameterValue,
            format!("{msg} ({code}, HTTP {status})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(code: &str, status: u16, msg: &str) -> StoreError {
        by_code(code, status, msg.to_owned(), None)
    }

    /// The block calls' failures without an answer: an untrusted certificate, however
    /// deep in the chain, is refused plainly (not retried); anything else is retried.
    #[test]
    fn a_block_call_without_an_answer_is_retried_unless_tls_refused_it() {
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, untrusted);
        let refused = transport_error("https://h:1", "GetSnapshotBlock snap-0 block 1", &wrapped);
        let StoreError::AccessDenied { message } = &refused else {
            panic!("{refused:?}");
        };
        assert!(
            message.contains("https://h:1") && message.contains("AWS_CA_BUNDLE"),
            "{message}"
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let retried = transport_error("https://h:1", "PutSnapshotBlock snap-0 block 1", &reset);
        assert!(
            matches!(retried, StoreError::Unavailable { .. }),
            "{retried:?}"
        );
    }

    #[test]
    fn every_throttling_code_the_sdk_retried_is_a_throttle() {
        for code in [
            "ThrottlingException",
            "TooManyRequestsException",
            "SlowDown",
        ] {
            assert!(
                matches!(mapped(code, 400, "m"), StoreError::Throttled { .. }),
                "{code}"
            );
        }
        assert!(matches!(
            mapped("Unknown", 429, "m"),
            StoreError::Throttled { .. }
        ));
    }

    #[test]
    fn a_skewed_clock_is_worth_another_attempt_and_a_bad_key_is_not() {
        let expired = "Signature expired: 20261201T000000Z is now earlier than 20261201T001500Z";
        let retried = |e: StoreError| matches!(e, StoreError::Unavailable { .. });
        assert!(retried(mapped("InvalidSignatureException", 403, expired)));
        assert!(retried(mapped("RequestTimeTooSkewed", 403, "m")));
        for (code, msg) in [
            (
                "InvalidSignatureException",
                "The request signature we calculated does not match",
            ),
            (
                "AuthFailure",
                "The security token included in the request is expired",
            ),
            (
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ),
        ] {
            let mapped = mapped(code, 403, msg);
            assert!(
                matches!(mapped, StoreError::AccessDenied { .. }),
                "{code}: {mapped:?}"
            );
        }
    }
}

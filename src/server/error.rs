//! Errors as the two APIs put them on the wire: EBS (rest-json: `x-amzn-ErrorType`
//! header, JSON body with `message` and `Reason`) and EC2 (Query: an XML `Response`).

use crate::store::{Quota, StoreError, ValidationReason};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;

/// An EBS direct-API error.
#[derive(Debug)]
pub struct EbsError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub reason: Option<&'static str>,
    pub message: String,
}

impl EbsError {
    pub fn validation(reason: ValidationReason, message: impl Into<String>) -> Self {
        EbsError {
            status: StatusCode::BAD_REQUEST,
            error_type: "ValidationException",
            reason: Some(reason.as_str()),
            message: message.into(),
        }
    }

    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        EbsError {
            status,
            error_type,
            reason: None,
            message: message.into(),
        }
    }
}

impl From<StoreError> for EbsError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        let with = |status, error_type, reason: Option<&'static str>| EbsError {
            status,
            error_type,
            reason,
            message: message.clone(),
        };
        match &e {
            StoreError::NotFound { .. } => with(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                Some("SNAPSHOT_NOT_FOUND"),
            ),
            StoreError::Invalid { reason, .. } => with(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                Some(reason.as_str()),
            ),
            StoreError::Conflict { .. } => with(StatusCode::CONFLICT, "ConflictException", None),
            StoreError::Throttled { .. } => with(
                StatusCode::BAD_REQUEST,
                "RequestThrottledException",
                Some("ACCOUNT_THROTTLED"),
            ),
            StoreError::AccessDenied { .. } => with(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                Some("UNAUTHORIZED_ACCOUNT"),
            ),
            StoreError::LimitExceeded {
                quota: Quota::PendingSnapshots,
                ..
            } => with(
                StatusCode::BAD_REQUEST,
                "ConcurrentLimitExceededException",
                None,
            ),
            StoreError::LimitExceeded {
                quota: Quota::TagsPerSnapshot,
                ..
            } => with(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                Some(ValidationReason::InvalidTag.as_str()),
            ),
            StoreError::Locked { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Io { .. }
            | StoreError::Unavailable { .. } => {
                tracing::error!("internal error: {e}");
                with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerException",
                    None,
                )
            }
        }
    }
}

/// Axum's own refusals of a path or query it cannot parse, in the EBS error shape.
impl From<axum::extract::rejection::PathRejection> for EbsError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        EbsError::validation(
            ValidationReason::InvalidParameterValue,
            format!("invalid path: {e}"),
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for EbsError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        EbsError::validation(
            ValidationReason::InvalidParameterValue,
            format!("invalid query string: {e}"),
        )
    }
}

impl IntoResponse for EbsError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "message": self.message });
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(self.error_type),
        );
        response
    }
}

/// An EC2 Query API error.
#[derive(Debug)]
pub struct Ec2Error {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Ec2Error {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Ec2Error {
            status: StatusCode::BAD_REQUEST,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A failure of the server itself (500 InternalError).
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!("internal error: {message}");
        Ec2Error {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError".into(),
            message,
        }
    }

    pub fn from_store(e: StoreError, id: &str) -> Self {
        match e {
            StoreError::NotFound { .. } => Ec2Error::new(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{id}' does not exist."),
            ),
            StoreError::Invalid {
                reason: ValidationReason::InvalidSnapshotId,
                ..
            } => Ec2Error::new(
                "InvalidSnapshotID.Malformed",
                format!("Invalid id: \"{id}\""),
            ),
            StoreError::Invalid {
                reason: ValidationReason::InvalidDependencyRequest,
                message,
            } => Ec2Error::new("InvalidSnapshot.InUse", message),
            StoreError::Invalid {
                reason: ValidationReason::InvalidTag,
                message,
            } => Ec2Error::new("InvalidTagKey.Malformed", message),
            StoreError::Invalid { message, .. } => Ec2Error::new("InvalidParameterValue", message),
            StoreError::LimitExceeded {
                quota: Quota::TagsPerSnapshot,
                message,
            } => Ec2Error::new("TagLimitExceeded", message),
            StoreError::LimitExceeded { message, .. } => {
                Ec2Error::new("ConcurrentSnapshotLimitExceeded", message)
            }
            StoreError::Throttled { message } => Ec2Error {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "RequestLimitExceeded".into(),
                message,
            },
            StoreError::AccessDenied { message } => Ec2Error {
                status: StatusCode::FORBIDDEN,
                code: "UnauthorizedOperation".into(),
                message,
            },
            other => {
                tracing::error!("internal error: {other}");
                Ec2Error {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "InternalError".into(),
                    message: other.to_string(),
                }
            }
        }
    }
}

impl IntoResponse for Ec2Error {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
            escape(&self.code),
            escape(&self.message),
            super::request_id()
        );
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml;charset=UTF-8"),
        );
        response
    }
}

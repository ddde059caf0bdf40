//! The one error type every store maps its failures into, by meaning.

use std::fmt;
use std::path::PathBuf;

pub type StoreResult<T> = Result<T, StoreError>;

/// Why a request was invalid: the EBS `Reason` values of a ValidationException.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationReason {
    InvalidPageToken,
    InvalidBlockToken,
    InvalidSnapshotId,
    UnrelatedSnapshots,
    InvalidBlock,
    InvalidParameterValue,
    InvalidVolumeSize,
    InvalidDependencyRequest,
    WriteRequestTimeout,
    InvalidTag,
    /// The KMS key named cannot be used (the local store: no such key).
    InvalidCustomerKey,
}

impl ValidationReason {
    /// The wire spelling of the reason.
    pub fn as_str(self) -> &'static str {
        use ValidationReason::*;
        match self {
            InvalidPageToken => "INVALID_PAGE_TOKEN",
            InvalidBlockToken => "INVALID_BLOCK_TOKEN",
            InvalidSnapshotId => "INVALID_SNAPSHOT_ID",
            UnrelatedSnapshots => "UNRELATED_SNAPSHOTS",
            InvalidBlock => "INVALID_BLOCK",
            InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            InvalidVolumeSize => "INVALID_VOLUME_SIZE",
            InvalidDependencyRequest => "INVALID_DEPENDENCY_REQUEST",
            WriteRequestTimeout => "WRITE_REQUEST_TIMEOUT",
            InvalidTag => "INVALID_TAG",
            InvalidCustomerKey => "INVALID_CUSTOMER_KEY",
        }
    }
}

impl std::str::FromStr for ValidationReason {
    type Err = ();

    /// Parses a wire reason; reasons ebsnap has no use for are `Err`.
    fn from_str(s: &str) -> Result<Self, ()> {
        use ValidationReason::*;
        [
            InvalidPageToken,
            InvalidBlockToken,
            InvalidSnapshotId,
            UnrelatedSnapshots,
            InvalidBlock,
            InvalidParameterValue,
            InvalidVolumeSize,
            InvalidDependencyRequest,
            WriteRequestTimeout,
            InvalidTag,
            InvalidCustomerKey,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or(())
    }
}

impl fmt::Display for ValidationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The snapshot (or another named thing) does not exist.
    #[error("{what} not found")]
    NotFound { what: String },

    /// The request breaks a rule of the API; retrying it cannot help.
    #[error("{message} ({reason})")]
    Invalid {
        reason: ValidationReason,
        message: String,
    },

    /// Same client token, different parameters.
    #[error("conflict: {message}")]
    Conflict { message: String },

    /// The service asked us to slow down; retry later.
    #[error("throttled: {message}")]
    Throttled { message: String },

    #[error("access denied: {message}")]
    AccessDenied { message: String },

    /// Another process holds the store.
    #[error("store {path} is locked by another ebsnap process{holder}")]
    Locked { path: PathBuf, holder: String },

    /// Stored data or metadata failed a check.
    #[error("store is damaged: {what}: {message}")]
    Corrupt { what: String, message: String },

    /// An I/O error, with what was being done and on which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A transient failure of the service (5xx, reset); retrying may help.
    #[error("service error: {message}")]
    Unavailable { message: String },

    /// A quota is reached (pending snapshots, tags on a snapshot): the request is
    /// refused until something is completed, deleted or removed.
    #[error("limit exceeded: {message}")]
    LimitExceeded { quota: Quota, message: String },
}

/// The quotas a store enforces, as EBS and EC2 do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    /// Snapshots pending at once (EBS: 100 per account): ConcurrentLimitExceededException.
    PendingSnapshots,
    /// Tags on one snapshot (EC2: 50): TagLimitExceeded.
    TagsPerSnapshot,
}

impl StoreError {
    pub fn invalid(reason: ValidationReason, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            reason,
            message: message.into(),
        }
    }

    pub fn snapshot_not_found(id: impl fmt::Display) -> Self {
        StoreError::NotFound {
            what: format!("snapshot {id}"),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            message: message.into(),
        }
    }

    pub fn limit(quota: Quota, message: impl Into<String>) -> Self {
        StoreError::LimitExceeded {
            quota,
            message: message.into(),
        }
    }

    /// The validation reason, when this is a validation error.
    pub fn reason(&self) -> Option<ValidationReason> {
        match self {
            StoreError::Invalid { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

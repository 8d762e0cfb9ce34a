//! The one mapping from failures to HTTP responses.
//!
//! Every route answers errors in Vault's shape, `{"errors": ["..."]}`, so
//! Vault clients report them properly. Messages are written for the person
//! reading them and never contain secret values, tokens or shares; internal
//! details are logged (with the request id) rather than returned.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::barrier::BarrierError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    /// Unauthenticated or unauthorised; deliberately says nothing more, as in
    /// Vault, so that probing reveals nothing.
    #[error("permission denied")]
    PermissionDenied,
    /// A 403 that names what was denied, for callers who may know it: the
    /// references of a `sys/resolve` request the caller sent itself.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("Zafe is sealed")]
    Sealed,
    #[error("Zafe is not initialized")]
    NotInitialized,
    #[error("Zafe is already initialized")]
    AlreadyInitialized,
    #[error("request body too large: the limit is {0} bytes")]
    PayloadTooLarge(usize),
    /// A stored record failed authentication: tampering, a moved or
    /// rolled-back row, or the wrong key. Loud on purpose.
    #[error("integrity check failed for a stored record: the storage may have been tampered with")]
    Integrity { key: String },
    #[error("storage is unavailable")]
    StorageUnavailable(String),
    /// The audit entry of a request could not be written: the request fails
    /// (R-AUD-1). The detail names the sink, never request data.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
    /// A compare-and-swap write lost to a concurrent writer (and the caller
    /// did not, or could no longer, retry). Typed so that callers can retry.
    #[error("the data was changed by another request at the same time; retry")]
    Conflict { key: String },
    #[error("internal error")]
    Internal(String),
    /// The request conflicts with the current state (a name that is taken,
    /// the last admin of a project): 409 with a message saying why.
    #[error("{0}")]
    StateConflict(String),
    /// An identity provider failed or answered nonsense; the message names
    /// which call, never what it carried.
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    TooManyRequests(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::AlreadyInitialized | Error::NotInitialized => {
                StatusCode::BAD_REQUEST
            }
            Error::PermissionDenied | Error::Denied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Conflict { .. } | Error::StateConflict(_) => StatusCode::CONFLICT,
            Error::Sealed | Error::StorageUnavailable(_) | Error::AuditUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Integrity { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }
}

impl From<BarrierError> for Error {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Sealed => Error::Sealed,
            BarrierError::Integrity { key } => Error::Integrity { key },
            BarrierError::Conflict { key } => Error::Conflict { key },
            BarrierError::InvalidKey(msg) => Error::BadRequest(msg),
            BarrierError::Storage(e) => Error::StorageUnavailable(e.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Error::Integrity { key } => {
                tracing::error!(record = %key, "stored record failed its integrity check: possible tampering")
            }
            Error::StorageUnavailable(detail) => tracing::error!(%detail, "storage error"),
            Error::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
        (status, Json(json!({ "errors": [self.to_string()] }))).into_response()
    }
}

//! The one error type of the request path (engines and core).
//!
//! Messages are written for the person reading them and never contain secret values, tokens or
//! shares; internal details ride in the variant and are logged by the HTTP edge, never returned.
//! The mapping to HTTP is [`Error::status`] plus Vault's `{"errors": [...]}` body, built at the
//! edge and nowhere else.

use crate::status::Status;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something impossible: 400 with the reason.
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
    /// Nothing at that path: 404.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not for this operation: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The server is sealed: 503.
    #[error("Zafe is sealed")]
    Sealed,
    /// The server has not been initialised yet.
    #[error("Zafe is not initialized")]
    NotInitialized,
    /// `sys/init` on an initialised server.
    #[error("Zafe is already initialized")]
    AlreadyInitialized,
    /// The body is over the limit (in bytes): 413.
    #[error("request body too large: the limit is {0} bytes")]
    PayloadTooLarge(usize),
    /// A stored record failed authentication: tampering, a moved or
    /// rolled-back row, or the wrong key. Loud on purpose.
    #[error("integrity check failed for a stored record: the storage may have been tampered with")]
    Integrity {
        /// The storage key of the record (logged, never returned).
        key: String,
    },
    /// Storage failed; the detail is logged, never returned: 503.
    #[error("storage is unavailable")]
    StorageUnavailable(String),
    /// The audit entry of a request could not be written: the request fails
    /// (R-AUD-1). The detail names the sink, never request data.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
    /// A compare-and-swap write lost to a concurrent writer (and the caller
    /// did not, or could no longer, retry). Typed so that callers can retry.
    #[error("the data was changed by another request at the same time; retry")]
    Conflict {
        /// The storage key both writers wanted.
        key: String,
    },
    /// A bug or an impossible state; the detail is logged, never returned: 500.
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
    /// Rate limited: 429.
    #[error("{0}")]
    TooManyRequests(String),
}

/// The result of engine and core operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The HTTP status this error is answered with (the edge maps it, nowhere else).
    pub fn status(&self) -> Status {
        match self {
            Error::BadRequest(_) | Error::AlreadyInitialized | Error::NotInitialized => {
                Status::BAD_REQUEST
            }
            Error::PermissionDenied | Error::Denied(_) => Status::FORBIDDEN,
            Error::NotFound(_) => Status::NOT_FOUND,
            Error::MethodNotAllowed(_) => Status::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge(_) => Status::PAYLOAD_TOO_LARGE,
            Error::Conflict { .. } | Error::StateConflict(_) => Status::CONFLICT,
            Error::Sealed | Error::StorageUnavailable(_) | Error::AuditUnavailable(_) => {
                Status::SERVICE_UNAVAILABLE
            }
            Error::Integrity { .. } | Error::Internal(_) => Status::INTERNAL_SERVER_ERROR,
            Error::Upstream(_) => Status::BAD_GATEWAY,
            Error::TooManyRequests(_) => Status::TOO_MANY_REQUESTS,
        }
    }

    /// A [`Error::BadRequest`] with this message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }
}

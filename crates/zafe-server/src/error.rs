//! Errors: the request path's one error type is [`zafe_engine::Error`] (engines and core share
//! it); this module adds what only the server knows: how a barrier failure reads as one. The
//! mapping to HTTP is in [`crate::http`], in one place.

pub(crate) use zafe_engine::{Error, Result};

use crate::barrier::BarrierError;

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

//! The daemon's error type and the one place that maps errors to wire codes.
//!
//! Malformed frames and lines never get here: the transport answers them
//! with `bad_request` itself, since no request was decoded.

use crate::redis::{LinkError, RedisFailure};
use crate::store::StoreError;
use seqd_protocol::{ErrorCode, WireError};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A well-formed request with an unacceptable value.
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Redis(#[from] RedisFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
    /// A limit of this seqd or a backend that is down.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The one mapping from errors to wire codes.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Redis(RedisFailure::Logic(_)) => ErrorCode::Internal,
            Error::Redis(_) => ErrorCode::Unavailable,
            Error::Store(StoreError::Exhausted(_)) => ErrorCode::InvalidArgument,
            Error::Store(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::TooLarge(_) => ErrorCode::TooLarge,
        };
        WireError::new(code, self.to_string())
    }

    /// What kind of failure this is, for the failure log's classes.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Redis(f) => f.class(),
            Error::Store(StoreError::Exhausted(_)) => "exhausted",
            Error::Store(_) => "store",
            Error::Internal(_) => "internal",
            Error::Unavailable(_) => "unavailable",
            Error::Forbidden(_) => "forbidden",
            Error::TooLarge(_) => "too_large",
        }
    }
}

/// A Redis operation that did not happen, as a request's error: breaker
/// open and transport failures answer `unavailable`, logic errors
/// `internal` (through [`Error::to_wire`]). The one conversion; every
/// capability uses it.
impl From<LinkError> for Error {
    fn from(e: LinkError) -> Error {
        match e {
            LinkError::Failed(f) => Error::Redis(f),
            LinkError::BreakerOpen(state) => {
                Error::Unavailable(format!("Redis circuit breaker is {state}"))
            }
        }
    }
}

//! The daemon's error type and the one place that maps errors to wire codes.

use crate::backend::store::StoreError;
use seqd_protocol::{ErrorCode, WireError};

/// Why a Redis operation failed, sorted the way the breaker needs it:
/// transport failures and timeouts say Redis is unhealthy; logic errors
/// (`WRONGTYPE`, a script error) say nothing about its health.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis operation timed out after {0} ms")]
    Timeout(u64),
    #[error("redis unreachable: {0}")]
    Transport(String),
    #[error("redis refused the operation: {0}")]
    Logic(String),
}

impl RedisFailure {
    /// Sorts an error of the redis crate.
    pub fn classify(e: &redis::RedisError) -> RedisFailure {
        if e.is_timeout() {
            RedisFailure::Timeout(0)
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            RedisFailure::Transport(e.to_string())
        } else {
            RedisFailure::Logic(e.to_string())
        }
    }

    /// True for failures that count against Redis's health.
    pub fn is_transport(&self) -> bool {
        !matches!(self, RedisFailure::Logic(_))
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed request (syntax, framing).
    #[error("{0}")]
    BadRequest(String),
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
    /// An error that already carries its wire code (from a parser).
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The one mapping from errors to wire codes.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Redis(RedisFailure::Logic(_)) => ErrorCode::Internal,
            Error::Redis(_) => ErrorCode::Unavailable,
            Error::Store(StoreError::Exhausted(_)) => ErrorCode::InvalidArgument,
            Error::Store(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::TooLarge(_) => ErrorCode::TooLarge,
            Error::Wire(w) => return w.clone(),
        };
        WireError::new(code, self.to_string())
    }
}

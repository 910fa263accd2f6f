//! Redis errors, sorted the way the breaker and the fallback need them.
//!
//! [`RedisFailure`] says why one operation failed: transport failures and
//! timeouts count against Redis's health, logic errors (`WRONGTYPE`, a
//! script error) do not. [`LinkError`] adds the breaker's refusal: an
//! operation that was never tried.

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

/// Why [`RedisLink::call`](super::RedisLink::call) did not return a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The breaker is not closed; Redis was not tried.
    #[error("Redis circuit breaker is {0}")]
    BreakerOpen(&'static str),
    #[error(transparent)]
    Failed(#[from] RedisFailure),
}

impl LinkError {
    /// True when the caller should answer without Redis (fall back):
    /// breaker open, transport failure or timeout. Logic errors are not.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LinkError::BreakerOpen(_) => true,
            LinkError::Failed(f) => f.is_transport(),
        }
    }

    /// The metrics label of a fallback caused by this error.
    pub fn fallback_reason(&self) -> &'static str {
        match self {
            LinkError::BreakerOpen(_) => "breaker_open",
            LinkError::Failed(_) => "redis_failed",
        }
    }
}

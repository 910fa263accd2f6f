//! Redis errors, sorted the way the breaker and the fallback need them.
//!
//! [`RedisFailure`] says why one operation failed. Transport failures,
//! timeouts, and a Redis that answers but cannot serve (out of memory,
//! read-only, loading, busy, a wrong password, ...) count against Redis's
//! health: the breaker opens and requests fall back. Logic errors — one
//! key holding something that is not a counter, a script error — fail
//! that request only and say nothing about Redis's health.
//! [`LinkError`] adds the breaker's refusal: an operation never tried.

/// Why a Redis operation failed, sorted the way the breaker needs it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis operation timed out after {0} ms")]
    Timeout(u64),
    #[error("redis unreachable: {0}")]
    Transport(String),
    /// Redis answered, but refuses to serve anything now (`OOM`,
    /// `READONLY`, `MASTERDOWN`, `MISCONF`, `LOADING`, `BUSY`, `NOAUTH`,
    /// `WRONGPASS`, ...): no number can come from it.
    #[error("redis cannot serve: {0}")]
    Refused(String),
    #[error("redis refused the operation: {0}")]
    Logic(String),
    /// The node seqd is connected to is not the master any more
    /// (`READONLY`: it was demoted in a failover), or a new connection
    /// found a node that is not one.
    #[error("redis node is not the master: {0}")]
    WrongNode(String),
    /// A new connection reached another master than the one seqd wrote to
    /// (a failover, or a restarted Redis): recovery must run against it
    /// before requests do.
    #[error("{0}")]
    MasterChanged(String),
    /// A cluster still redirected the operation (`MOVED`, `ASK`) after the
    /// redis crate's own retries, as during a slot migration: this request
    /// is answered without Redis, but it says nothing about Redis's health.
    #[error("redis cluster redirected the operation: {0}")]
    Redirected(String),
    /// Too few replicas acknowledged a fenced write (`NOREPLICAS`, from
    /// `--redis-wait-replicas` or Redis's own `min-replicas-to-write`): no
    /// number may come from this master until it has its replicas back.
    #[error("redis replicas missing: {0}")]
    Unacknowledged(String),
}

/// Error codes with which Redis refuses service as a whole, whatever the
/// key: they say Redis is unhealthy for seqd's purpose. (`READONLY` is
/// [`RedisFailure::WrongNode`], `NOREPLICAS`
/// [`RedisFailure::Unacknowledged`].)
const REFUSING_SERVICE: &[&str] = &[
    "OOM",
    "MASTERDOWN",
    "MISCONF",
    "LOADING",
    "BUSY",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "CLUSTERDOWN",
    "TRYAGAIN",
];

impl RedisFailure {
    /// Sorts an error of the redis crate. A reply that does not convert to
    /// the expected type (`ErrorKind::Parse` from a value, or an unexpected
    /// return type) is a logic error of that key: the pipe reports broken
    /// framing as an I/O error, never as a parse error.
    pub fn classify(e: &redis::RedisError) -> RedisFailure {
        use redis::ErrorKind;
        if e.is_timeout() {
            return RedisFailure::Timeout(0);
        }
        let text = e.to_string();
        match e.kind() {
            ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::InvalidClientConfig => RedisFailure::Transport(text),
            ErrorKind::AuthenticationFailed => RedisFailure::Refused(text),
            _ if e.code() == Some("READONLY") => RedisFailure::WrongNode(text),
            _ if matches!(e.code(), Some("MOVED" | "ASK")) => RedisFailure::Redirected(text),
            _ if e.code() == Some("NOREPLICAS") => RedisFailure::Unacknowledged(text),
            _ if e.code().is_some_and(|c| REFUSING_SERVICE.contains(&c)) => {
                RedisFailure::Refused(text)
            }
            _ => RedisFailure::Logic(text),
        }
    }

    /// True for failures that count against Redis's health (everything but
    /// a logic error).
    pub fn counts_against_health(&self) -> bool {
        !matches!(self, RedisFailure::Logic(_) | RedisFailure::Redirected(_))
    }

    /// True when the connection used may be broken or hung and must not be
    /// used again.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            RedisFailure::Timeout(_) | RedisFailure::Transport(_) | RedisFailure::WrongNode(_)
        )
    }

    /// True when the master seqd wrote to is gone, replaced, or without
    /// the replicas fencing needs: the breaker opens at once (not after K
    /// failures), so that every connection is dropped, requests answer
    /// locally without waiting, and recovery runs against the (new) master
    /// before requests go to it again.
    pub fn opens_at_once(&self) -> bool {
        matches!(
            self,
            RedisFailure::WrongNode(_)
                | RedisFailure::MasterChanged(_)
                | RedisFailure::Unacknowledged(_)
        )
    }
}

/// A Redis error reply `line` (`CODE message`) as Redis would send it, for
/// answers seqd makes up on Redis's behalf (the fence's `NOREPLICAS`).
pub(super) fn server_error(line: &str) -> redis::RedisError {
    let raw = format!("-{line}\r\n");
    match redis::parse_redis_value(raw.as_bytes()).map(redis::Value::extract_error) {
        Ok(Err(e)) => e,
        _ => redis::RedisError::from((redis::ErrorKind::Client, "unparsable error", line.into())),
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
            LinkError::Failed(f) => {
                f.counts_against_health() || matches!(f, RedisFailure::Redirected(_))
            }
        }
    }

    /// The failure, for recovery code (which runs whatever the breaker
    /// says, so a refusal by the breaker is reported as Redis failing).
    pub fn into_failure(self) -> RedisFailure {
        match self {
            LinkError::BreakerOpen(state) => {
                RedisFailure::Transport(format!("Redis circuit breaker is {state}"))
            }
            LinkError::Failed(f) => f,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_errors_keep_their_code_and_sort_as_refusals() {
        let e = server_error("NOREPLICAS 0 of 1");
        assert_eq!(e.code(), Some("NOREPLICAS"));
        let unfenced = RedisFailure::classify(&e);
        assert!(unfenced.counts_against_health() && unfenced.opens_at_once());
        let ro = server_error("READONLY You can't write against a read only replica.");
        assert!(RedisFailure::classify(&ro).opens_at_once());
        // A redirect the cluster client gave up on: this request falls
        // back; the breaker does not count it.
        let ask = LinkError::Failed(RedisFailure::classify(&server_error(
            "ASK 12205 127.0.0.1:1",
        )));
        assert!(ask.is_unavailable());
        assert!(matches!(&ask, LinkError::Failed(f) if !f.counts_against_health()));
    }
}

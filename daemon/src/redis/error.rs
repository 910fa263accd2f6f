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
    /// `MASTERDOWN`, `MISCONF`, `LOADING`, `BUSY`, `NOAUTH`, `WRONGPASS`,
    /// `NOPERM`, ...): no number can come from it. `class` names the
    /// refusal for `HEALTH` and the logs (`oom`, `auth`, `noperm`, ...).
    #[error("redis cannot serve: {message}")]
    Refused {
        class: &'static str,
        message: String,
    },
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
/// key, and the class `HEALTH` reports for each: they say Redis is
/// unhealthy for seqd's purpose. (`READONLY` is
/// [`RedisFailure::WrongNode`], `NOREPLICAS`
/// [`RedisFailure::Unacknowledged`].)
const REFUSING_SERVICE: &[(&str, &str)] = &[
    ("OOM", "oom"),
    ("MASTERDOWN", "masterdown"),
    ("MISCONF", "misconf"),
    ("LOADING", "loading"),
    ("BUSY", "busy"),
    ("NOAUTH", "auth"),
    ("WRONGPASS", "auth"),
    ("NOPERM", "noperm"),
    ("CLUSTERDOWN", "clusterdown"),
    ("TRYAGAIN", "tryagain"),
];

impl RedisFailure {
    /// Sorts an error of the redis crate. A reply that does not convert to
    /// the expected type (`ErrorKind::Parse` from a value, or an unexpected
    /// return type) is a logic error of that key: the pipe reports broken
    /// framing as an I/O error, never as a parse error.
    ///
    /// A pipeline or transaction reports one error per command that
    /// failed (an `OOM` while queueing `INCR`, then `EXECABORT`): the
    /// gravest of them decides, so a refusal inside `MULTI`/`EXEC` is a
    /// refusal like any other. A script's refusal keeps its code (`OOM
    /// ... script: ...`) and sorts by it.
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
            ErrorKind::AuthenticationFailed => RedisFailure::Refused {
                class: "auth",
                message: text,
            },
            _ => match e.clone().into_server_errors() {
                Some(items) => items
                    .iter()
                    .map(|(_, item)| by_code(Some(item.code()), &text))
                    .max_by_key(RedisFailure::gravity)
                    .unwrap_or(RedisFailure::Logic(text)),
                None => by_code(e.code(), &text),
            },
        }
    }

    /// Which failure of a pipeline decides its outcome: one that says the
    /// node or its replicas are wrong, then a refusal, then a redirect; a
    /// logic error only when nothing else failed.
    fn gravity(&self) -> u8 {
        match self {
            RedisFailure::Logic(_) => 0,
            RedisFailure::Redirected(_) => 1,
            RedisFailure::Refused { .. } => 2,
            RedisFailure::Timeout(_) | RedisFailure::Transport(_) => 3,
            RedisFailure::Unacknowledged(_) => 4,
            RedisFailure::WrongNode(_) | RedisFailure::MasterChanged(_) => 5,
        }
    }

    /// The failure's class, as `HEALTH` (`last_error_class`) and the logs
    /// name it.
    pub fn class(&self) -> &'static str {
        match self {
            RedisFailure::Timeout(_) => "timeout",
            RedisFailure::Transport(_) => "io",
            RedisFailure::Refused { class, .. } => class,
            RedisFailure::Logic(_) => "logic",
            RedisFailure::WrongNode(_) => "readonly",
            RedisFailure::MasterChanged(_) => "master_changed",
            RedisFailure::Redirected(_) => "redirected",
            RedisFailure::Unacknowledged(_) => "noreplicas",
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

/// Sorts a Redis error reply by its code; `text` is the whole error.
fn by_code(code: Option<&str>, text: &str) -> RedisFailure {
    let text = text.to_string();
    match code {
        Some("READONLY") => RedisFailure::WrongNode(text),
        Some("MOVED" | "ASK") => RedisFailure::Redirected(text),
        Some("NOREPLICAS") => RedisFailure::Unacknowledged(text),
        Some(code) => match REFUSING_SERVICE.iter().find(|(c, _)| *c == code) {
            Some((_, class)) => RedisFailure::Refused {
                class,
                message: text,
            },
            None => RedisFailure::Logic(text),
        },
        None => RedisFailure::Logic(text),
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
    use redis::aio::ConnectionLike;
    use redis::{Cmd, Pipeline, RedisFuture, Value};

    /// Answers every pipeline with the given RESP replies.
    struct Replies(Vec<&'static str>);

    impl ConnectionLike for Replies {
        fn req_packed_command<'a>(&'a mut self, _: &'a Cmd) -> RedisFuture<'a, Value> {
            unreachable!("only pipelines here")
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            _: &'a Pipeline,
            _: usize,
            _: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            let values = self
                .0
                .iter()
                .map(|r| redis::parse_redis_value(r.as_bytes()).unwrap())
                .collect();
            Box::pin(async move { Ok(values) })
        }

        fn get_db(&self) -> i64 {
            0
        }
    }

    /// The error of `MULTI` / `INCR` / `EXPIRE` / `EXEC` answered by
    /// `replies`, as the redis crate reports it.
    async fn transaction_error(replies: Vec<&'static str>) -> redis::RedisError {
        redis::pipe()
            .cmd("MULTI")
            .cmd("INCR")
            .arg("k")
            .cmd("EXPIRE")
            .arg("k")
            .arg(10)
            .arg("NX")
            .cmd("EXEC")
            .query_async::<Vec<Value>>(&mut Replies(replies))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_refusal_inside_a_transaction_is_a_refusal() {
        let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
        let abort = "-EXECABORT Transaction discarded because of previous errors.\r\n";
        let e = transaction_error(vec!["+OK\r\n", oom, oom, abort]).await;
        let f = RedisFailure::classify(&e);
        assert!(
            matches!(f, RedisFailure::Refused { class: "oom", .. }),
            "{f:?}"
        );
        assert!(LinkError::Failed(f.clone()).is_unavailable());
        assert_eq!(f.class(), "oom");

        let ro = "-READONLY You can't write against a read only replica.\r\n";
        let e = transaction_error(vec!["+OK\r\n", ro, ro, abort]).await;
        assert!(RedisFailure::classify(&e).opens_at_once());
        assert_eq!(RedisFailure::classify(&e).class(), "readonly");

        let norep = "-NOREPLICAS Not enough good replicas to write.\r\n";
        let e = transaction_error(vec!["+OK\r\n", norep, norep, abort]).await;
        assert_eq!(RedisFailure::classify(&e).class(), "noreplicas");

        // Errors none of which refuses service stay a logic error of
        // that key: they say nothing about Redis's health.
        let syntax = "-ERR wrong number of arguments for 'incr' command\r\n";
        let e = transaction_error(vec!["+OK\r\n", syntax, "+QUEUED\r\n", abort]).await;
        let f = RedisFailure::classify(&e);
        assert!(matches!(f, RedisFailure::Logic(_)), "{f:?}");
        assert!(!LinkError::Failed(f).is_unavailable());
    }

    #[test]
    fn a_script_refusal_keeps_its_code() {
        let e = server_error(
            "OOM command not allowed when used memory > 'maxmemory'. script: 4f93, on @user_script:1.",
        );
        assert_eq!(RedisFailure::classify(&e).class(), "oom");
        let e = server_error("NOPERM this user has no permissions to run the 'evalsha' command");
        assert_eq!(RedisFailure::classify(&e).class(), "noperm");
        let e = server_error("WRONGPASS invalid username-password pair");
        assert_eq!(RedisFailure::classify(&e).class(), "auth");
    }

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

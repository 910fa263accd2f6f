//! The Redis connection pool: where Redis is, and a fixed set of
//! auto-pipelined connections to it.
//!
//! # What it guarantees
//!
//! Every operation ends within the configured timeout, connecting
//! included; a connection that failed or timed out is dropped and rebuilt
//! on next use, because the redis crate never abandons a hung connection
//! by itself. The breaker's probe runs on a fresh connection of its own.

use super::error::RedisFailure;
use super::pipe::{self, Pipe};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Where Redis is, when seqd runs in Redis mode.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Url(String),
    Host {
        host: String,
        port: u16,
        password: Option<String>,
        db: i64,
    },
}

impl RedisTarget {
    /// The address for logs, without the password.
    pub fn display(&self) -> String {
        match self {
            RedisTarget::Url(u) => match redis::parse_redis_url(u) {
                Some(url) => format!(
                    "{}:{}/{}",
                    url.host_str().unwrap_or("?"),
                    url.port().unwrap_or(6379),
                    match url.path().trim_start_matches('/') {
                        "" => "0",
                        db => db,
                    }
                ),
                None => "(unparsable URL)".to_string(),
            },
            RedisTarget::Host { host, port, db, .. } => format!("{host}:{port}/{db}"),
        }
    }
}

/// One pool slot: a connection (or none yet) and a generation, so that a
/// task reporting a failure on an old connection cannot drop a newer one.
struct Slot {
    conn: tokio::sync::Mutex<Option<(u64, Pipe)>>,
}

/// A fixed set of auto-pipelined connections, used round-robin.
pub struct RedisPool {
    info: ConnectionInfo,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicU64,
    /// The operation timeout in milliseconds; a reload may change it.
    timeout_ms: AtomicU64,
}

impl RedisPool {
    pub fn new(target: &RedisTarget, size: usize, timeout: Duration) -> Result<RedisPool, String> {
        let info = match target {
            RedisTarget::Url(url) => url.as_str().into_connection_info(),
            RedisTarget::Host {
                host,
                port,
                password,
                db,
            } => redis::ConnectionAddr::Tcp(host.clone(), *port)
                .into_connection_info()
                .map(|i| {
                    let mut r = RedisConnectionInfo::default().set_db(*db);
                    if let Some(pw) = password {
                        r = r.set_password(pw);
                    }
                    i.set_redis_settings(r)
                }),
        }
        .map_err(|e| format!("invalid Redis address: {e}"))?;
        pipe::check_address(&info)?;
        Ok(RedisPool {
            info,
            slots: (0..size.max(1))
                .map(|_| Slot {
                    conn: tokio::sync::Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// A new operation timeout (reload); it applies to the next operations.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// A connection from the next slot, connecting if the slot is empty.
    async fn checkout(&self) -> Result<(usize, u64, Pipe), RedisFailure> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].conn.lock().await;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok((i, *generation, conn.clone()));
        }
        let conn = self.connect().await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        *slot = Some((generation, conn.clone()));
        Ok((i, generation, conn))
    }

    async fn connect(&self) -> Result<Pipe, RedisFailure> {
        pipe::connect(&self.info)
            .await
            .map_err(|e| RedisFailure::classify(&e))
    }

    /// Drops every connection; the next operations connect afresh. Called
    /// when the breaker opens, so a hung connection is never reused.
    pub fn reset(&self) {
        for slot in &self.slots {
            if let Ok(mut conn) = slot.conn.try_lock() {
                *conn = None;
            }
        }
    }

    /// `PING` on a fresh connection of its own (not from the pool), under
    /// the timeout: the breaker's probe.
    pub async fn probe(&self) -> Result<(), RedisFailure> {
        let timeout_ms = self.timeout().as_millis() as u64;
        let attempt = async {
            let mut conn = self.connect().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| RedisFailure::classify(&e))
        };
        match tokio::time::timeout(self.timeout(), attempt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RedisFailure::Timeout(_))) | Err(_) => Err(RedisFailure::Timeout(timeout_ms)),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Drops the connection of slot `i` if it is still generation `gen`.
    async fn discard(&self, i: usize, generation: u64) {
        let mut slot = self.slots[i].conn.lock().await;
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    /// Runs one operation under the timeout (connecting included). A
    /// transport failure or timeout discards the connection it used.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Pipe) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_until(Instant::now() + self.timeout(), op).await
    }

    /// Like [`RedisPool::run`], ending at `deadline` (at most the timeout
    /// from now): a request that retries keeps within one timeout in all.
    pub async fn run_until<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Pipe) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = deadline.min(Instant::now() + self.timeout());
        let timeout_ms = self.timeout().as_millis() as u64;
        let attempt = async {
            let (i, generation, conn) = self.checkout().await?;
            match op(conn).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    let failure = RedisFailure::classify(&e);
                    if failure.breaks_connection() {
                        self.discard(i, generation).await;
                    }
                    Err(failure)
                }
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(RedisFailure::Timeout(_))) => Err(RedisFailure::Timeout(timeout_ms)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Which slot hung is unknown here; drop them all so that the
                // next operations start on fresh connections.
                self.reset();
                Err(RedisFailure::Timeout(timeout_ms))
            }
        }
    }
}

//! Redis mode: numbers come from the shared Redis counter.
//!
//! # What it owns
//!
//! A small pool of multiplexed Redis connections (each one pipelines the
//! requests of many clients), the sequence script, and the rule that every
//! operation ends within the configured timeout, connecting included. A
//! connection that failed or timed out is dropped and rebuilt on next use,
//! because the redis crate never abandons a hung connection by itself.
//!
//! # What it guarantees
//!
//! Every number is recorded in the local store as the key's high-water mark
//! before it is returned, and the script never returns a number at or below
//! the mark it is given: if Redis lost the counter (restart without
//! persistence, failover to a lagging replica), it is raised past the mark
//! in the same atomic step. The circuit breaker and local fallback build on
//! this in the next layer.

use super::store::Store;
use super::{Issued, Sequences};
use crate::capabilities::sequences::SeqKey;
use crate::config::RedisTarget;
use crate::error::{Error, RedisFailure};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisConnectionInfo};
use seqd_protocol::Source;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Increments a counter atomically, never below a floor, and sets the TTL in
/// the same step as the first increment.
///
/// KEYS[1] = counter; ARGV[1] = TTL in seconds (0 = none); ARGV[2] = floor
/// (the caller's high-water mark). Returns `{n, raised}`: the new number and
/// 1 when the counter was at or below the floor (Redis lost data).
const NEXT_SCRIPT: &str = r#"
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
local raised = 0
if n <= floor then
  n = floor + 1
  redis.call('SET', KEYS[1], n, 'KEEPTTL')
  raised = 1
end
local ttl = tonumber(ARGV[1])
if ttl > 0 and (n == 1 or raised == 1) and redis.call('TTL', KEYS[1]) == -1 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return {n, raised}
"#;

/// One pool slot: a connection (or none yet) and a generation, so that a
/// task reporting a failure on an old connection cannot drop a newer one.
struct Slot {
    conn: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
}

/// A fixed set of multiplexed connections, used round-robin.
pub struct RedisPool {
    client: redis::Client,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicU64,
    timeout: Duration,
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
        let client =
            redis::Client::open(info).map_err(|e| format!("invalid Redis address: {e}"))?;
        Ok(RedisPool {
            client,
            slots: (0..size.max(1))
                .map(|_| Slot {
                    conn: tokio::sync::Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection from the next slot, connecting if the slot is empty.
    async fn checkout(&self) -> Result<(usize, u64, MultiplexedConnection), RedisFailure> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].conn.lock().await;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok((i, *generation, conn.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| RedisFailure::classify(&e))?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        *slot = Some((generation, conn.clone()));
        Ok((i, generation, conn))
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
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let timeout_ms = self.timeout.as_millis() as u64;
        let attempt = async {
            let (i, generation, conn) = self.checkout().await?;
            match op(conn).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    let failure = RedisFailure::classify(&e);
                    if failure.is_transport() {
                        self.discard(i, generation).await;
                    }
                    Err(failure)
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(RedisFailure::Timeout(_))) => Err(RedisFailure::Timeout(timeout_ms)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Which slot hung is unknown here; drop them all so that the
                // next operations start on fresh connections.
                for i in 0..self.slots.len() {
                    if let Ok(mut slot) = self.slots[i].conn.try_lock() {
                        *slot = None;
                    }
                }
                Err(RedisFailure::Timeout(timeout_ms))
            }
        }
    }

    /// `PING` under the timeout.
    pub async fn ping(&self) -> Result<(), RedisFailure> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }
}

/// Sequences from the shared Redis counter, recorded in the local store.
pub struct RedisSequences {
    pool: RedisPool,
    script: redis::Script,
    store: Store,
}

impl RedisSequences {
    pub fn new(pool: RedisPool, store: Store) -> Self {
        RedisSequences {
            pool,
            script: redis::Script::new(NEXT_SCRIPT),
            store,
        }
    }
}

impl Sequences for RedisSequences {
    fn next<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>> {
        async move {
            let floor = self.store.mark(&key.key);
            let ttl = key.ttl_secs.unwrap_or(0);
            let script = &self.script;
            let (seq, raised): (u64, u64) = self
                .pool
                .run(|mut c| async move {
                    script
                        .key(&key.key)
                        .arg(ttl)
                        .arg(floor)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if raised == 1 {
                tracing::warn!(key = %key.key, mark = floor, issued = seq,
                    "Redis counter was below this seqd's high-water mark (Redis lost data); raised it");
            }
            self.store.raise(&key.key, seq, key.mark_expires_at).await?;
            Ok(Issued {
                seq,
                source: Source::Redis,
            })
        }
        .boxed()
    }

    fn current<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>> {
        async move {
            let k = key.key.as_str();
            let in_redis: Option<u64> = self
                .pool
                .run(|mut c| async move { redis::cmd("GET").arg(k).query_async(&mut c).await })
                .await?;
            // If Redis lost the counter, the last number this seqd issued is
            // still the current one.
            Ok(Issued {
                seq: in_redis.unwrap_or(0).max(self.store.mark(k)),
                source: Source::Redis,
            })
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        async move {
            let (redis, error) = match self.pool.ping().await {
                Ok(()) => ("up", None),
                Err(e) => ("down", Some(e.to_string())),
            };
            let mut fields = vec![
                ("redis".to_string(), redis.to_string()),
                ("breaker".to_string(), "closed".to_string()),
            ];
            if let Some(e) = error {
                fields.push(("last_error".to_string(), e));
            }
            fields
        }
        .boxed()
    }

    fn mode(&self) -> &'static str {
        "redis"
    }
}

//! The link to Redis: connections, timeouts and the circuit breaker.
//!
//! # What it owns
//!
//! - [`RedisPool`]: a fixed set of multiplexed connections (each pipelines
//!   the requests of many clients). Every operation ends within the
//!   configured timeout, connecting included; a connection that failed or
//!   timed out is dropped and rebuilt on next use, because the redis crate
//!   never abandons a hung connection by itself.
//! - [`RedisLink`]: the pool behind the [`Breaker`]. While the breaker is
//!   not closed, [`RedisLink::call`] refuses at once without touching Redis.
//! - [`supervise`]: the task that drives the breaker: a health `PING` while
//!   closed, probes with backoff while open, and the recovery steps
//!   ([`Recovery`]: reconciliation, outbox replay) while half-open, before
//!   requests go to Redis again.
//!
//! Transitions are logged once, where they happen, not per request.

use super::breaker::{Breaker, BreakerConfig, BreakerState, Transition};
use super::pipe::{self, Pipe};
use crate::config::RedisTarget;
use crate::error::{Error, RedisFailure};
use crate::metrics::{Metrics, TransitionLabels};
use futures_util::future::BoxFuture;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
                    if failure.is_transport() {
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

/// Why [`RedisLink::call`] did not return a value.
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

/// A Redis operation that did not happen, as a request's error: breaker
/// open and transport failures answer `unavailable`, logic errors
/// `internal` (the mapping to codes itself is in `error.rs`).
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

/// What the breaker looks like now, for `HEALTH` and metrics.
#[derive(Debug, Clone)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub redis_up: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_transition: SystemTime,
}

/// Work that must be done against Redis before the breaker closes again
/// (reconciliation of sequence counters; later the cache outbox), and that
/// is retried in the background while closed when some is pending.
pub trait Recovery: Send + Sync {
    fn name(&self) -> &'static str;

    /// How many items are pending.
    fn pending(&self) -> usize;

    /// Works through what is pending now, talking to Redis with
    /// [`RedisLink::call_recovering`]. An error means Redis failed
    /// (already recorded by the link).
    fn recover<'a>(&'a self, link: &'a RedisLink) -> BoxFuture<'a, Result<(), RedisFailure>>;
}

/// The pool behind the breaker.
pub struct RedisLink {
    pool: RedisPool,
    /// A `std::sync::Mutex`: held only for a state update, never across an
    /// await.
    breaker: Mutex<Breaker>,
    /// Wakes the supervisor: the breaker opened, or work became pending.
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl RedisLink {
    pub fn new(pool: RedisPool, breaker: BreakerConfig, metrics: Arc<Metrics>) -> RedisLink {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        RedisLink {
            pool,
            breaker: Mutex::new(Breaker::new(breaker, Instant::now(), seed)),
            wake: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn timeout(&self) -> Duration {
        self.pool.timeout()
    }

    /// New operation timeout and breaker settings (reload).
    pub fn reconfigure(&self, timeout: Duration, breaker: BreakerConfig) {
        self.pool.set_timeout(timeout);
        self.lock().set_config(breaker);
    }

    /// True when requests may go to Redis now.
    pub fn allows_requests(&self) -> bool {
        self.lock().allows_requests()
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let b = self.lock();
        BreakerSnapshot {
            state: b.state(),
            redis_up: b.redis_up(),
            consecutive_failures: b.consecutive_failures(),
            last_error: b.last_error().map(str::to_string),
            last_transition: b.last_transition(),
        }
    }

    /// Asks the supervisor to look again (work became pending).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs one Redis operation if the breaker is closed, and records its
    /// outcome. Refuses at once while the breaker is open or half-open.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Pipe) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_until(Instant::now() + self.pool.timeout(), op)
            .await
    }

    /// Like [`RedisLink::call`], ending at `deadline` at the latest.
    pub async fn call_until<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Pipe) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let state = self.lock().state();
        if state != BreakerState::Closed {
            return Err(LinkError::BreakerOpen(state.as_str()));
        }
        self.run_recorded(deadline, op)
            .await
            .map_err(LinkError::Failed)
    }

    /// Runs one Redis operation whatever the breaker's state (recovery
    /// works while half-open), and records its outcome.
    pub async fn call_recovering<T, F, Fut>(&self, op: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Pipe) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_recorded(Instant::now() + self.pool.timeout(), op)
            .await
    }

    async fn run_recorded<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Pipe) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = self.pool.run_until(deadline, op).await;
        match &result {
            Ok(_) => self.lock().record_success(),
            Err(e) if e.is_transport() => self.record_failure(e),
            Err(_) => {} // logic errors say nothing about Redis's health
        }
        let failures = self.lock().consecutive_failures();
        self.metrics
            .redis_consecutive_failures
            .set(i64::from(failures));
        result
    }

    fn record_failure(&self, e: &RedisFailure) {
        let transition = self.lock().record_failure(&e.to_string(), Instant::now());
        if let Some(t) = transition {
            // Hung connections must not be reused after the breaker opens.
            self.pool.reset();
            self.announce(t, Some(e));
            self.wake.notify_one();
        }
    }

    /// Logs a transition once and counts it.
    fn announce(&self, t: Transition, cause: Option<&RedisFailure>) {
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels { to: t.to.as_str() })
            .inc();
        self.metrics.breaker_state.set(t.to.as_number());
        match (t.to, cause) {
            (BreakerState::Open, Some(e)) => {
                tracing::warn!(from = t.from.as_str(), error = %e, "Redis circuit breaker opened: answering from the local store")
            }
            (BreakerState::Open, None) => {
                tracing::warn!(from = t.from.as_str(), "Redis circuit breaker opened")
            }
            (BreakerState::HalfOpen, _) => {
                tracing::info!("Redis answers again: breaker half-open, reconciling before closing")
            }
            (BreakerState::Closed, _) => {
                tracing::info!("Redis circuit breaker closed: serving from Redis again")
            }
        }
    }
}

/// Drives the breaker until `stop`: health pings while closed (every
/// `health_interval`), probes with backoff while open, recovery while
/// half-open. Pending recovery work is also done while closed, so keys
/// issued locally after a single failed operation are reconciled soon.
pub async fn supervise(
    link: Arc<RedisLink>,
    recoveries: Vec<Arc<dyn Recovery>>,
    health_interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let state = link.lock().state();
        match state {
            BreakerState::Closed => {
                for r in &recoveries {
                    if r.pending() > 0 && link.allows_requests() {
                        if let Err(e) = r.recover(&link).await {
                            tracing::debug!(recovery = r.name(), error = %e, "background recovery failed");
                        }
                    }
                }
                if link.allows_requests() {
                    let _ = link
                        .call_recovering(|mut c| async move {
                            redis::cmd("PING").query_async::<String>(&mut c).await
                        })
                        .await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(health_interval) => {}
                    _ = link.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
            }
            BreakerState::Open => {
                let due = link.lock().next_probe();
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.cancelled() => return,
                }
                match link.pool.probe().await {
                    Ok(()) => {
                        let t = link.lock().probe_succeeded();
                        if let Some(t) = t {
                            link.announce(t, None);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "Redis probe failed");
                        link.lock().probe_failed(&e.to_string(), Instant::now());
                    }
                }
            }
            BreakerState::HalfOpen => {
                let mut ok = true;
                for r in &recoveries {
                    let pending = r.pending();
                    if let Err(e) = r.recover(&link).await {
                        tracing::warn!(recovery = r.name(), pending, error = %e, "recovery failed; breaker reopens");
                        ok = false;
                        break;
                    }
                    if pending > 0 {
                        tracing::info!(recovery = r.name(), pending, "recovery done");
                    }
                }
                if ok {
                    let t = link.lock().recovered();
                    if let Some(t) = t {
                        link.announce(t, None);
                    }
                } else if link.lock().state() == BreakerState::HalfOpen {
                    // Recovery failed without a transport failure (cannot
                    // happen today); do not spin.
                    let t = link
                        .lock()
                        .record_failure("recovery failed", Instant::now());
                    if let Some(t) = t {
                        link.announce(t, None);
                    }
                }
            }
        }
    }
}

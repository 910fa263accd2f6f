//! The link to Redis: the [`RedisPool`] behind the [`Breaker`].
//!
//! # What it owns
//!
//! - [`RedisLink`]: while the breaker is not closed, [`RedisLink::call`]
//!   refuses at once without touching Redis, and so does
//!   [`RedisLink::call_write`] except for the few writes it admits as the
//!   half-open breaker's trials; every outcome of an operation that ran is
//!   recorded in the breaker (transport failures, timeouts and refusals;
//!   logic errors say nothing about Redis's health).
//! - [`Recovery`]: the interface of the work that must be done against
//!   Redis before the breaker closes again; the capabilities implement it
//!   and the [`supervise`](super::supervise) task runs it.
//!
//! Transitions are logged once, where they happen, not per request.

use super::breaker::{Breaker, BreakerConfig, BreakerState, Transition, Trial};
use super::conn::Conn;
use super::error::{LinkError, RedisFailure};
use super::pool::RedisPool;
use crate::metrics::{Metrics, TransitionLabels};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the breaker looks like now, for `HEALTH` and metrics.
#[derive(Debug, Clone)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub redis_up: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// The class of `last_error` (`oom`, `readonly`, `timeout`, ...).
    pub last_error_class: Option<&'static str>,
    pub last_transition: SystemTime,
}

/// A trial admitted by the half-open breaker: if its operation ends
/// without a verdict (dropped, or a logic error), its place is freed.
struct TrialGuard<'a> {
    link: &'a RedisLink,
    trial: Option<Trial>,
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.trial.take() {
            self.link.lock().trial_dropped(t);
        }
    }
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

/// How much longer than the operation timeout a bulk operation may take.
pub const BULK_TIMEOUT_FACTOR: u32 = 10;

/// The pool behind the breaker.
pub struct RedisLink {
    pub(super) pool: RedisPool,
    /// A connection of its own for bulk work (large gap batches): it never
    /// queues ahead of the small requests on `pool`, and its slowness is
    /// not taken for Redis failing.
    bulk: RedisPool,
    /// A `std::sync::Mutex`: held only for a state update, never across an
    /// await.
    breaker: Mutex<Breaker>,
    /// Wakes the supervisor: the breaker opened, or work became pending.
    pub(super) wake: Notify,
    metrics: Arc<Metrics>,
    /// `single`, `sentinel` or `cluster`.
    topology: &'static str,
}

impl RedisLink {
    pub fn new(
        pool: RedisPool,
        bulk: RedisPool,
        breaker: BreakerConfig,
        metrics: Arc<Metrics>,
        topology: &'static str,
    ) -> RedisLink {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        RedisLink {
            pool,
            bulk,
            breaker: Mutex::new(Breaker::new(breaker, Instant::now(), seed)),
            wake: Notify::new(),
            metrics,
            topology,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn timeout(&self) -> Duration {
        self.pool.timeout()
    }

    /// New operation timeout and breaker settings (reload).
    pub fn reconfigure(&self, timeout: Duration, breaker: BreakerConfig) {
        self.pool.set_timeout(timeout);
        self.bulk.set_timeout(timeout * BULK_TIMEOUT_FACTOR);
        self.lock().set_config(breaker);
    }

    /// True on a Redis Cluster (multi-key scripts must be split by slot).
    pub fn is_cluster(&self) -> bool {
        self.topology == "cluster"
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
            last_error_class: b.last_error_class(),
            last_transition: b.last_transition(),
        }
    }

    /// Asks the supervisor to look again (work became pending).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs one Redis operation that only reads, if the breaker is closed,
    /// and records its outcome. Refuses at once while the breaker is open
    /// or half-open (a read proves nothing about writes, so it is never a
    /// trial).
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_until(Instant::now() + self.pool.timeout(), op)
            .await
    }

    /// Runs one bulk operation (a chunk of a large gap batch) on the bulk
    /// connection, under [`BULK_TIMEOUT_FACTOR`] times the operation
    /// timeout, if the breaker is closed. A transport failure or a Redis
    /// that cannot serve counts against the breaker; a bulk operation that
    /// is merely slow (its timeout) does not: it is slow because of the
    /// work asked of it, which says nothing about Redis's health.
    pub async fn call_bulk<T, F, Fut>(&self, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.closed_or_refuse()?;
        let result = self.bulk.run(op).await;
        match &result {
            Ok(_) => self.lock().record_success(),
            Err(RedisFailure::Timeout(ms)) => {
                tracing::debug!(
                    ms,
                    "a bulk Redis operation timed out (not counted against Redis)"
                )
            }
            Err(e) if e.counts_against_health() => self.record_failure(e),
            Err(_) => {}
        }
        result.map_err(LinkError::Failed)
    }

    /// Refuses at once, without touching Redis, unless the breaker is
    /// closed.
    fn closed_or_refuse(&self) -> Result<(), LinkError> {
        match self.lock().state() {
            BreakerState::Closed => Ok(()),
            state => Err(LinkError::BreakerOpen(state.as_str())),
        }
    }

    /// Like [`RedisLink::call`], ending at `deadline` at the latest.
    pub async fn call_until<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.closed_or_refuse()?;
        self.run_recorded(deadline, op, None)
            .await
            .map_err(LinkError::Failed)
    }

    /// Runs one Redis operation that writes, if the breaker is closed or
    /// admits it as a trial (half-open, recovery done, a trial's place
    /// free), and records its outcome. Refuses at once otherwise.
    pub async fn call_write<T, F, Fut>(&self, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_write_until(Instant::now() + self.pool.timeout(), op)
            .await
    }

    /// Like [`RedisLink::call_write`], ending at `deadline` at the latest.
    pub async fn call_write_until<T, F, Fut>(
        &self,
        deadline: Instant,
        op: F,
    ) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let trial = {
            let mut b = self.lock();
            match b.state() {
                BreakerState::Closed => None,
                state => Some(
                    b.admit_trial()
                        .ok_or(LinkError::BreakerOpen(state.as_str()))?,
                ),
            }
        };
        self.run_recorded(deadline, op, trial)
            .await
            .map_err(LinkError::Failed)
    }

    /// [`RedisLink::call_recovering`] when `recovering`, else
    /// [`RedisLink::call`] (or [`RedisLink::call_write`] for a `write`):
    /// for helpers that serve both.
    pub async fn call_as<T, F, Fut>(
        &self,
        recovering: bool,
        write: bool,
        op: F,
    ) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if recovering {
            self.call_recovering(op).await.map_err(LinkError::Failed)
        } else if write {
            self.call_write(op).await
        } else {
            self.call(op).await
        }
    }

    /// Runs one Redis operation whatever the breaker's state (recovery
    /// works while half-open), and records its outcome.
    pub async fn call_recovering<T, F, Fut>(&self, op: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_recorded(Instant::now() + self.pool.timeout(), op, None)
            .await
    }

    /// The health check while closed, on a pooled connection and recorded
    /// as one operation: `PING` (on a cluster, that it serves), then the
    /// write check ([`RedisPool::write_check`]), so that a Redis refusing
    /// writes is noticed even when no request comes, and a `PING` alone
    /// never counts as Redis being healthy.
    pub async fn check_health(&self) -> Result<(), RedisFailure> {
        let pool = &self.pool;
        self.call_recovering(|mut c| async move {
            c.ping().await?;
            pool.write_check(c).await
        })
        .await
    }

    /// The write check as a trial, when the half-open breaker admits one:
    /// it closes an idle seqd's breaker, where no request would.
    pub async fn trial_check(&self) -> Result<(), LinkError> {
        let pool = &self.pool;
        self.call_write(|c| pool.write_check(c)).await
    }

    async fn run_recorded<T, F, Fut>(
        &self,
        deadline: Instant,
        op: F,
        trial: Option<Trial>,
    ) -> Result<T, RedisFailure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut guard = TrialGuard { link: self, trial };
        let result = self.pool.run_until(deadline, op).await;
        match &result {
            Ok(_) => match guard.trial.take() {
                Some(t) => {
                    let closed = self.lock().trial_passed(t, Instant::now());
                    if let Some(t) = closed {
                        self.announce(t, None);
                    }
                }
                None => self.lock().record_success(),
            },
            Err(e) if e.counts_against_health() => {
                guard.trial = None;
                self.record_failure(e)
            }
            Err(_) => {} // logic errors say nothing about Redis's health
        }
        drop(guard);
        let failures = self.lock().consecutive_failures();
        self.metrics
            .redis_consecutive_failures
            .set(i64::from(failures));
        result
    }

    fn record_failure(&self, e: &RedisFailure) {
        if let RedisFailure::MasterChanged(change) = e {
            self.master_changed(change);
        }
        let transition = if e.opens_at_once() {
            self.lock().trip(e.class(), &e.to_string(), Instant::now())
        } else {
            self.lock()
                .record_failure(e.class(), &e.to_string(), Instant::now())
        };
        if let Some(t) = transition {
            // Hung connections must not be reused after the breaker opens.
            self.pool.reset();
            self.announce(t, Some(e));
            self.wake.notify_one();
        }
    }

    /// Asks Sentinel where the master is (every health interval): when it
    /// names another node than the one seqd writes to, the breaker opens
    /// at once, every connection is dropped, and the probe connects to the
    /// new master. A Sentinel that cannot answer changes nothing here (the
    /// writes themselves tell whether the master still serves).
    pub async fn follow_master(&self) {
        let deadline = self.pool.timeout() * 4;
        match tokio::time::timeout(deadline, self.pool.master_moved()).await {
            Ok(Ok(Some(why))) => self.record_failure(&RedisFailure::WrongNode(why)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "Sentinel did not answer"),
            Err(_) => tracing::debug!("Sentinel did not answer in time"),
        }
    }

    /// A new master (failover, restart): logged and counted once, where
    /// the pool found it.
    pub(super) fn master_changed(&self, change: &str) {
        self.metrics.redis_master_changes.inc();
        tracing::warn!(
            "{change}: every connection is dropped and recovery runs against the new master \
             before requests go to it"
        );
    }

    /// The topology, and for Sentinel the master written to now, for
    /// `HEALTH`.
    pub fn topology(&self) -> Vec<(String, String)> {
        let mut fields = vec![("topology".to_string(), self.topology.to_string())];
        if self.topology == "sentinel" {
            let master = self
                .pool
                .master()
                .map_or_else(|| "unknown".to_string(), |m| m.endpoint.to_string());
            fields.push(("master".to_string(), master));
        }
        fields
    }

    /// Logs a transition once and counts it.
    pub(super) fn announce(&self, t: Transition, cause: Option<&RedisFailure>) {
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
                tracing::info!("Redis answers and takes writes again: breaker half-open, recovering and trying a few requests before closing")
            }
            (BreakerState::Closed, _) => {
                tracing::info!("Redis circuit breaker closed: serving from Redis again")
            }
        }
    }
}

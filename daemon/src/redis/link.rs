//! The link to Redis: the [`RedisPool`] behind the [`Breakers`].
//!
//! # What it owns
//!
//! - [`RedisLink`]: every operation names its [`Route`] (the key it
//!   touches, or the node it runs on), which picks the breaker of that
//!   key's master: the one breaker of a single server, or one per Cluster
//!   master. While that breaker is not closed, [`RedisLink::call`] refuses
//!   at once without touching Redis, and so does [`RedisLink::call_write`]
//!   except for the few writes it admits as the half-open breaker's
//!   trials; every outcome of an operation that ran is recorded in that
//!   breaker (transport failures, timeouts and refusals; logic errors say
//!   nothing about Redis's health).
//! - [`Recovery`]: the interface of the work that must be done against
//!   Redis before a breaker closes again; the capabilities implement it
//!   and the [`supervise`](super::supervise) task runs it.
//!
//! Transitions are logged once, where they happen, not per request.

use super::breaker::{BreakerConfig, BreakerState, Transition, Trial};
use super::breakers::{slot_of, Breakers, Route, ONLY};
use super::conn::{Conn, NodeAddr};
use super::error::{LinkError, RedisFailure};
use super::pool::{Aim, RedisPool};
use crate::metrics::{MasterLabels, Metrics, TransitionLabels};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the breakers look like now, for `HEALTH` and metrics.
#[derive(Debug, Clone)]
pub struct BreakerSnapshot {
    /// The worst state of any breaker (open if any master's is open).
    pub state: BreakerState,
    /// True when every breaker is closed and the last operation of every
    /// master succeeded.
    pub redis_up: bool,
    /// The most of any master.
    pub consecutive_failures: u32,
    /// The error of the master in the worst state (on a Cluster prefixed
    /// with that master's `host:port`).
    pub last_error: Option<String>,
    /// The class of `last_error` (`oom`, `readonly`, `timeout`, ...).
    pub last_error_class: Option<&'static str>,
    /// The latest transition of any breaker.
    pub last_transition: SystemTime,
    /// Each master's name and state (one entry off a Cluster).
    pub masters: Vec<(Arc<str>, BreakerState)>,
}

/// Work that must be done against Redis before a breaker closes again
/// (reconciliation of sequence counters, the cache outbox, the tracker's
/// streams), and that is retried in the background while closed when
/// some is pending.
pub trait Recovery: Send + Sync {
    fn name(&self) -> &'static str;

    /// How many items are pending.
    fn pending(&self) -> usize;

    /// True when a master may close only after this work is done (the
    /// cache's outbox: a reader must never see a value superseded during
    /// the outage). False when requests stay right while it is pending,
    /// so that it runs beside serving: a closed breaker then does not
    /// wait for it, however much of it an outage left.
    fn before_closing(&self) -> bool {
        true
    }

    /// Works through what is pending now, talking to Redis with
    /// [`RedisLink::call_recovering`]. An item whose master's breaker is
    /// open (the call is refused at once) or whose master fails stays
    /// pending and the work goes on with the others; a failure is already
    /// recorded in its master's breaker by the link. An error means the
    /// work could not go on at all.
    fn recover<'a>(&'a self, link: &'a RedisLink) -> BoxFuture<'a, Result<(), RedisFailure>>;
}

/// How much longer than the operation timeout a bulk operation may take.
pub const BULK_TIMEOUT_FACTOR: u32 = 10;

/// What an operation does, which decides when its breaker lets it run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Reads: only while closed (a read proves nothing about writes).
    Read,
    /// Writes: while closed, or as a trial while half-open.
    Write,
    /// Bulk writes on the bulk connection: only while closed, and a
    /// bulk operation that is merely slow is not counted.
    Bulk,
    /// Recovery (reconciliation, outbox, streams, health checks): while
    /// closed or half-open, never while open.
    Recovery,
}

/// An operation let through by a breaker: which one records its outcome,
/// and the trial it is, if it is one. A trial that ends without a verdict
/// (dropped, or a logic error) frees its place.
struct Ticket<'a> {
    link: &'a RedisLink,
    master: Option<Arc<str>>,
    trial: Option<Trial>,
    /// For a keyed operation, the connection it prefers: by its key's
    /// slot, so that the operations of one key leave on one connection
    /// in the order they were made (see `transport::order`'s draws), and
    /// on a cluster the slot's master.
    aim: Aim,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let (Some(t), Some(name)) = (self.trial.take(), &self.master) {
            if let Some(m) = self.link.lock().by_name_mut(name) {
                m.breaker.trial_dropped(t);
            }
        }
    }
}

/// The pool behind the breakers.
pub struct RedisLink {
    pub(super) pool: RedisPool,
    /// A connection of its own for bulk work (large gap batches): it never
    /// queues ahead of the small requests on `pool`, and its slowness is
    /// not taken for Redis failing.
    bulk: RedisPool,
    /// A `std::sync::Mutex`: held only for a state update, never across an
    /// await.
    breakers: Mutex<Breakers>,
    /// Wakes the supervisor: a breaker opened, work became pending, or a
    /// Cluster redirected an operation (its slot map is due).
    pub(super) wake: Notify,
    /// Set when a Cluster redirected an operation (`MOVED`, `ASK` left
    /// after the crate's retries): the slot map is read again at once.
    map_stale: std::sync::atomic::AtomicBool,
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
        let breakers = Breakers::new(breaker, topology == "cluster", Instant::now(), seed);
        // The breakers of this link replace the local-mode placeholder.
        metrics.breaker_state.clear();
        let link = RedisLink {
            pool,
            bulk,
            breakers: Mutex::new(breakers),
            wake: Notify::new(),
            map_stale: std::sync::atomic::AtomicBool::new(false),
            metrics,
            topology,
        };
        link.publish_states();
        link
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Breakers> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
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

    /// True when a read of `route` may go to Redis now (its master's
    /// breaker is closed).
    pub fn allows(&self, route: Route<'_>) -> bool {
        let b = self.lock();
        match b.index(route) {
            Some(i) => b.get(i).breaker.allows_requests(),
            None => b.any_not_open(),
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let b = self.lock();
        let masters = b.masters();
        let rank = |s: BreakerState| match s {
            BreakerState::Open => 2,
            BreakerState::HalfOpen => 1,
            BreakerState::Closed => 0,
        };
        // The master whose error to show: the worst state, then the one
        // still failing, then the latest transition.
        let told = masters
            .iter()
            .max_by_key(|m| {
                (
                    rank(m.breaker.state()),
                    m.breaker.consecutive_failures() > 0,
                    m.breaker.last_transition(),
                )
            })
            .expect("one breaker at least");
        let last_error = told.breaker.last_error().map(|e| {
            if self.is_cluster() {
                format!("{}: {e}", told.name)
            } else {
                e.to_string()
            }
        });
        BreakerSnapshot {
            state: b.worst(),
            redis_up: masters.iter().all(|m| m.breaker.redis_up()),
            consecutive_failures: masters
                .iter()
                .map(|m| m.breaker.consecutive_failures())
                .max()
                .unwrap_or(0),
            last_error,
            last_error_class: told.breaker.last_error_class(),
            last_transition: masters
                .iter()
                .map(|m| m.breaker.last_transition())
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH),
            masters: masters
                .iter()
                .map(|m| (m.name.clone(), m.breaker.state()))
                .collect(),
        }
    }

    /// Asks the supervisor to look again (work became pending).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Lets an operation through `route`'s breaker, or refuses it.
    fn admit(&self, route: Route<'_>, work: Work) -> Result<Ticket<'_>, LinkError> {
        let mut aim = Aim {
            slot: match route {
                Route::Key(k) => Some(slot_of(k)),
                _ => None,
            },
            master: None,
        };
        let mut b = self.lock();
        let Some(i) = b.index(route) else {
            return match b.any_not_open() {
                true => Ok(Ticket {
                    link: self,
                    master: None,
                    trial: None,
                    aim,
                }),
                false => Err(LinkError::BreakerOpen("open")),
            };
        };
        let m = b.get_mut(i);
        let trial = match (m.breaker.state(), work) {
            (BreakerState::Closed, _) | (BreakerState::HalfOpen, Work::Recovery) => None,
            (BreakerState::HalfOpen, Work::Write) => Some(
                m.breaker
                    .admit_trial()
                    .ok_or(LinkError::BreakerOpen("half_open"))?,
            ),
            (state, _) => return Err(LinkError::BreakerOpen(state.as_str())),
        };
        if self.is_cluster() && aim.slot.is_some() {
            aim.master = Some(m.name.clone());
        }
        Ok(Ticket {
            link: self,
            master: Some(m.name.clone()),
            trial,
            aim,
        })
    }

    /// Runs one Redis operation that only reads, if its breaker is closed,
    /// and records its outcome. Refuses at once while the breaker is open
    /// or half-open (a read proves nothing about writes, so it is never a
    /// trial).
    pub async fn call<T, F, Fut>(&self, route: Route<'_>, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let ticket = self.admit(route, Work::Read)?;
        let deadline = Instant::now() + self.pool.timeout();
        self.run(ticket, Work::Read, deadline, op)
            .await
            .map_err(LinkError::Failed)
    }

    /// Runs one Redis operation that writes, if its breaker is closed or
    /// admits it as a trial (half-open, recovery done, a trial's place
    /// free), and records its outcome. Refuses at once otherwise.
    pub async fn call_write<T, F, Fut>(&self, route: Route<'_>, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_write_until(route, Instant::now() + self.pool.timeout(), op)
            .await
    }

    /// Like [`RedisLink::call_write`], ending at `deadline` at the latest.
    pub async fn call_write_until<T, F, Fut>(
        &self,
        route: Route<'_>,
        deadline: Instant,
        op: F,
    ) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let ticket = self.admit(route, Work::Write)?;
        self.run(ticket, Work::Write, deadline, op)
            .await
            .map_err(LinkError::Failed)
    }

    /// Runs one bulk operation (a chunk of a large gap batch) on the bulk
    /// connection, under [`BULK_TIMEOUT_FACTOR`] times the operation
    /// timeout, if its breaker is closed. A transport failure or a Redis
    /// that cannot serve counts against the breaker; a bulk operation that
    /// is merely slow (its timeout) does not: it is slow because of the
    /// work asked of it, which says nothing about Redis's health.
    pub async fn call_bulk<T, F, Fut>(&self, route: Route<'_>, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let ticket = self.admit(route, Work::Bulk)?;
        let deadline = Instant::now() + self.bulk.timeout();
        self.run(ticket, Work::Bulk, deadline, op)
            .await
            .map_err(LinkError::Failed)
    }

    /// [`RedisLink::call_recovering`] when `recovering`, else
    /// [`RedisLink::call`] (or [`RedisLink::call_write`] for a `write`):
    /// for helpers that serve both.
    pub async fn call_as<T, F, Fut>(
        &self,
        route: Route<'_>,
        recovering: bool,
        write: bool,
        op: F,
    ) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if recovering {
            self.call_recovering(route, op)
                .await
                .map_err(LinkError::Failed)
        } else if write {
            self.call_write(route, op).await
        } else {
            self.call(route, op).await
        }
    }

    /// Runs one recovery operation while its breaker is closed or
    /// half-open (recovery works before requests do), and records its
    /// outcome; refused at once while it is open (reported as a transport
    /// failure, so the item stays pending).
    pub async fn call_recovering<T, F, Fut>(
        &self,
        route: Route<'_>,
        op: F,
    ) -> Result<T, RedisFailure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let ticket = self
            .admit(route, Work::Recovery)
            .map_err(LinkError::into_failure)?;
        self.run(
            ticket,
            Work::Recovery,
            Instant::now() + self.pool.timeout(),
            op,
        )
        .await
    }

    async fn run<T, F, Fut>(
        &self,
        mut ticket: Ticket<'_>,
        work: Work,
        deadline: Instant,
        op: F,
    ) -> Result<T, RedisFailure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = match work {
            Work::Bulk => self.bulk.run_until(deadline, &ticket.aim, op).await,
            _ => self.pool.run_until(deadline, &ticket.aim, op).await,
        };
        let master = ticket.master.clone();
        match (&result, master) {
            (_, None) => {}
            (Ok(_), Some(name)) => match ticket.trial.take() {
                Some(t) => {
                    let closed = self
                        .lock()
                        .by_name_mut(&name)
                        .and_then(|m| m.breaker.trial_passed(t, Instant::now()));
                    if let Some(t) = closed {
                        self.announce(&name, t, None);
                    }
                }
                None => {
                    if let Some(m) = self.lock().by_name_mut(&name) {
                        m.breaker.record_success();
                    }
                }
            },
            (Err(RedisFailure::Timeout(ms)), Some(_)) if work == Work::Bulk => {
                tracing::debug!(
                    ms,
                    "a bulk Redis operation timed out (not counted against Redis)"
                )
            }
            (Err(e), Some(name)) if e.counts_against_health() => {
                ticket.trial = None;
                self.record_failure(&name, e);
            }
            // Logic errors say nothing about Redis's health; a redirect
            // says the slot map is due.
            (Err(e), Some(_)) => {
                if matches!(e, RedisFailure::Redirected(_)) {
                    self.map_stale
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    self.wake.notify_one();
                }
            }
        }
        drop(ticket);
        let failures = self
            .lock()
            .masters()
            .iter()
            .map(|m| m.breaker.consecutive_failures())
            .max()
            .unwrap_or(0);
        self.metrics
            .redis_consecutive_failures
            .set(i64::from(failures));
        result
    }

    /// Records a failure of master `name`; opens its breaker when due.
    fn record_failure(&self, name: &str, e: &RedisFailure) {
        if let RedisFailure::MasterChanged(change) = e {
            self.master_changed(change);
        }
        let transition = {
            let mut b = self.lock();
            let Some(m) = b.by_name_mut(name) else {
                return;
            };
            if e.opens_at_once() {
                m.breaker.trip(e.class(), &e.to_string(), Instant::now())
            } else {
                m.breaker
                    .record_failure(e.class(), &e.to_string(), Instant::now())
            }
        };
        if let Some(t) = transition {
            // Hung connections must not be reused after the breaker opens.
            // A Cluster connection is shared by every master and drops a
            // failed node's connection by itself: keep it for the others.
            if !self.is_cluster() {
                self.pool.reset();
            }
            self.announce(name, t, Some(e));
            self.wake.notify_one();
        }
    }

    /// The names of the masters and their breakers' states now.
    pub(super) fn masters(&self) -> Vec<(Arc<str>, NodeAddr, Arc<str>)> {
        self.lock()
            .masters()
            .iter()
            .map(|m| (m.name.clone(), m.node.clone(), m.check_key.clone()))
            .collect()
    }

    /// The health check while closed, on a pooled connection and recorded
    /// as one operation of master `name`: `PING`, then the write check
    /// ([`RedisPool::write_check`]), so that a Redis refusing writes is
    /// noticed even when no request comes, and a `PING` alone never counts
    /// as Redis being healthy.
    pub(super) async fn check_health(&self, node: &NodeAddr, check_key: &str) {
        let pool = &self.pool;
        let _ = self
            .call_recovering(Route::Node(node), |c| async move {
                let mut c = c.on(node);
                c.ping().await?;
                pool.write_check(c, check_key).await
            })
            .await;
    }

    /// The write check as a trial of master `name`, when its half-open
    /// breaker admits one: it closes an idle seqd's breaker, where no
    /// request would.
    pub(super) async fn trial_check(&self, node: &NodeAddr, check_key: &str) {
        let pool = &self.pool;
        let result = self
            .call_write(Route::Node(node), |c| async move {
                pool.write_check(c.on(node), check_key).await
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "trial write check failed");
        }
    }

    /// The probe of master `name` while its breaker is open: on a single
    /// server a fresh connection (it finds a new master), on a Cluster the
    /// node itself; `PING`, the write check and with fencing the replicas.
    /// Half-opens the breaker when it passes.
    pub(super) async fn probe(&self, name: &str, node: &NodeAddr, check_key: &str) {
        let outcome = if self.is_cluster() && *node != NodeAddr::Only {
            self.pool.probe_node(node, check_key).await.map(|()| None)
        } else {
            self.pool.probe(check_key).await
        };
        match outcome {
            Ok(change) => {
                if let Some(change) = change {
                    self.master_changed(&change.to_string());
                }
                let t = self
                    .lock()
                    .by_name_mut(name)
                    .and_then(|m| m.breaker.probe_succeeded());
                if let Some(t) = t {
                    self.announce(name, t, None);
                }
            }
            Err(e) => {
                tracing::debug!(master = name, error = %e, "Redis probe failed");
                if let Some(m) = self.lock().by_name_mut(name) {
                    m.breaker
                        .probe_failed(e.class(), &e.to_string(), Instant::now());
                }
            }
        }
    }

    /// Indexes of `keys` grouped by the master that holds them (one group
    /// off a Cluster), each group in the keys' order: a multi-key command
    /// runs once per master, through that master's breaker.
    pub fn by_master(&self, keys: &[&str]) -> Vec<Vec<usize>> {
        let b = self.lock();
        let mut groups: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let m = b.index(Route::Key(k));
            match groups.iter_mut().find(|(g, _)| *g == m) {
                Some((_, members)) => members.push(i),
                None => groups.push((m, vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }

    /// True (once) when a redirect said the slot map is out of date.
    pub(super) fn take_map_stale(&self) -> bool {
        if self.pool.take_moved() {
            self.map_stale
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.map_stale
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// True when recovery work for `route` may run now (its breaker is not
    /// open): recovery skips the rest, which stays pending.
    pub fn admits_recovery(&self, route: Route<'_>) -> bool {
        let b = self.lock();
        match b.index(route) {
            Some(i) => b.get(i).breaker.state() != BreakerState::Open,
            None => b.any_not_open(),
        }
    }

    /// Asks a Cluster for its slot map and puts it in force: keys go to
    /// their own master's breaker from then on. Nothing changes when no
    /// node answers.
    pub(super) async fn refresh_slot_map(&self) {
        if !self.is_cluster() {
            return;
        }
        // Asked of a master whose breaker is closed, when there is one: a
        // hung node would hold the supervisor, and every master's checks
        // with it, for a whole timeout.
        let healthy = {
            let b = self.lock();
            b.masters()
                .iter()
                .find(|m| m.breaker.state() == BreakerState::Closed)
                .map(|m| m.node.clone())
        };
        let ranges = self
            .pool
            .run(|c| async move {
                match &healthy {
                    Some(node) => c.on(node).slot_map().await,
                    None => c.clone().slot_map().await,
                }
            })
            .await;
        let ranges = match ranges {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "the cluster's slot map could not be read");
                return;
            }
        };
        let changed = self.lock().apply_slot_map(&ranges, Instant::now());
        if changed {
            let names: Vec<String> = self
                .lock()
                .masters()
                .iter()
                .map(|m| m.name.to_string())
                .collect();
            tracing::info!(masters = %names.join(","), "cluster masters, each with a breaker of its own");
            self.metrics.breaker_state.clear();
            self.publish_states();
        }
    }

    /// Recovery is done for master `name`: its trials may start.
    pub(super) fn recovery_done(&self, name: &str) {
        if let Some(m) = self.lock().by_name_mut(name) {
            m.breaker.recovery_done(Instant::now());
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
            Ok(Ok(Some(why))) => self.record_failure(ONLY, &RedisFailure::WrongNode(why)),
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

    /// Every breaker's state in the `seqd_breaker_state{master}` gauge.
    fn publish_states(&self) {
        for m in self.lock().masters() {
            self.metrics
                .breaker_state
                .get_or_create(&MasterLabels {
                    master: m.name.to_string(),
                })
                .set(m.breaker.state().as_number());
        }
    }

    /// Logs a transition of master `name` once and counts it.
    pub(super) fn announce(&self, name: &str, t: Transition, cause: Option<&RedisFailure>) {
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels { to: t.to.as_str() })
            .inc();
        self.metrics
            .breaker_state
            .get_or_create(&MasterLabels {
                master: name.to_string(),
            })
            .set(t.to.as_number());
        match (t.to, cause) {
            (BreakerState::Open, Some(e)) => {
                tracing::warn!(master = name, from = t.from.as_str(), error = %e, "Redis circuit breaker opened: answering from the local store")
            }
            (BreakerState::Open, None) => {
                tracing::warn!(
                    master = name,
                    from = t.from.as_str(),
                    "Redis circuit breaker opened"
                )
            }
            (BreakerState::HalfOpen, _) => {
                tracing::info!(master = name, "Redis answers and takes writes again: breaker half-open, recovering and trying a few requests before closing")
            }
            (BreakerState::Closed, _) => {
                tracing::info!(
                    master = name,
                    "Redis circuit breaker closed: serving from Redis again"
                )
            }
        }
    }
}

//! The Redis circuit breaker: a plain state machine.
//!
//! # What it owns
//!
//! Whether requests may go to Redis now. It knows nothing about sockets or
//! tasks: every method takes `now`, so tests drive it with paused time.
//!
//! ```text
//!            K consecutive transport failures, timeouts or refusals,
//!            or at once: master lost or replaced (trip)
//!  Closed ──────────────────────────────────────────────▶ Open
//!    ▲                                                     │ ▲
//!    │ T trials served                probe ok: reachable  │ │ probe failed:
//!    │ by Redis                       and takes writes     ▼ │ back off (x2, jitter)
//!    └─────────────────────────────────────────────── HalfOpen
//!         recovery (reconciliation, outbox), then up to T real
//!         writes as trials; any failure ──▶ Open
//! ```
//!
//! Transport failures, timeouts and refusals count (`OOM`, `READONLY`,
//! `NOREPLICAS`, `NOPERM`, ...); Redis logic errors (`WRONGTYPE`) say
//! nothing about Redis's health and are never recorded here.
//!
//! Closing takes real work, never a `PING` alone: a Redis that is out of
//! memory, read-only or without its replicas still answers `PING`. While
//! half-open and once recovery is done, up to `trials` real writes go to
//! Redis as trials (every other request is answered without Redis), and
//! the breaker closes when `trials` of them succeeded.

use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (K).
    pub threshold: u32,
    /// First delay between probes.
    pub probe_base: Duration,
    /// Longest delay between probes.
    pub probe_max: Duration,
    /// Real writes that must succeed while half-open before the breaker
    /// closes (T); also the most that run at once.
    pub trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 3,
            probe_base: Duration::from_millis(100),
            probe_max: Duration::from_secs(5),
            trials: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go to Redis.
    Closed,
    /// Requests are answered without Redis; probes run with backoff.
    Open,
    /// A probe succeeded; recovery (reconciliation, outbox replay) runs,
    /// then a few real writes go to Redis as trials before the others do.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// For the metrics gauge.
    pub fn as_number(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// A write admitted to Redis while half-open; its outcome decides whether
/// the breaker closes. Tied to the half-open period it was admitted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    period: u64,
}

/// A change of state, returned so the caller can log it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive_failures: u32,
    last_error: Option<String>,
    /// The class of `last_error` (`oom`, `timeout`, `io`, ...).
    last_error_class: Option<&'static str>,
    last_transition: SystemTime,
    /// Counts openings: a trial admitted before the breaker reopened
    /// says nothing about the period after.
    period: u64,
    /// Half-open: recovery is done and trials may run.
    trials_open: bool,
    trials_in_flight: u32,
    trials_passed: u32,
    /// When trials opened or one last passed: the supervisor runs a
    /// write check of its own as a trial when no request came since.
    trials_progress: Instant,
    /// Probes failed since the breaker opened; sets the backoff.
    probe_attempts: u32,
    next_probe: Instant,
    /// xorshift state for jitter (no global RNG).
    rng: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig, now: Instant, seed: u64) -> Breaker {
        Breaker {
            config,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            last_error: None,
            last_error_class: None,
            last_transition: SystemTime::now(),
            period: 0,
            trials_open: false,
            trials_in_flight: 0,
            trials_passed: 0,
            trials_progress: now,
            probe_attempts: 0,
            next_probe: now,
            rng: seed | 1,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// New thresholds take effect at once (a reload); the state is kept.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    /// True when requests may go to Redis.
    pub fn allows_requests(&self) -> bool {
        self.state == BreakerState::Closed
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn last_error_class(&self) -> Option<&'static str> {
        self.last_error_class
    }

    fn remember(&mut self, class: &'static str, error: &str) {
        self.last_error = Some(error.to_string());
        self.last_error_class = Some(class);
    }

    /// Wall-clock time of the last transition (start time before any).
    pub fn last_transition(&self) -> SystemTime {
        self.last_transition
    }

    /// When the next probe is due (meaningful while open).
    pub fn next_probe(&self) -> Instant {
        self.next_probe
    }

    /// True when Redis answered its last operation and the breaker is
    /// closed.
    pub fn redis_up(&self) -> bool {
        self.state == BreakerState::Closed && self.consecutive_failures == 0
    }

    fn go(&mut self, to: BreakerState) -> Option<Transition> {
        if self.state == to {
            return None;
        }
        let t = Transition {
            from: self.state,
            to,
        };
        self.state = to;
        self.last_transition = SystemTime::now();
        Some(t)
    }

    /// A Redis operation succeeded.
    pub fn record_success(&mut self) {
        if self.state == BreakerState::Closed {
            self.consecutive_failures = 0;
        }
    }

    /// A Redis operation failed in a way that counts against Redis's
    /// health (transport, timeout, refusal); `class` names the kind.
    pub fn record_failure(
        &mut self,
        class: &'static str,
        error: &str,
        now: Instant,
    ) -> Option<Transition> {
        self.remember(class, error);
        match self.state {
            BreakerState::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= self.config.threshold {
                    self.open(now)
                } else {
                    None
                }
            }
            // Recovery talks to Redis too; a failure there reopens.
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => None,
        }
    }

    /// The master was lost or replaced (a failover): open at once, whatever
    /// the count, so that recovery runs against the new master before
    /// requests go to it.
    pub fn trip(&mut self, class: &'static str, error: &str, now: Instant) -> Option<Transition> {
        self.remember(class, error);
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => None,
        }
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        self.period += 1;
        self.trials_open = false;
        self.trials_in_flight = 0;
        self.trials_passed = 0;
        self.probe_attempts = 0;
        self.next_probe = now + self.backoff();
        self.go(BreakerState::Open)
    }

    /// True when the breaker is open and a probe is due.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.state == BreakerState::Open && now >= self.next_probe
    }

    /// The probe failed: wait longer before the next one.
    pub fn probe_failed(&mut self, class: &'static str, error: &str, now: Instant) {
        self.remember(class, error);
        self.probe_attempts = self.probe_attempts.saturating_add(1);
        self.next_probe = now + self.backoff();
    }

    /// The probe succeeded (Redis answers and takes writes): recovery may
    /// start.
    pub fn probe_succeeded(&mut self) -> Option<Transition> {
        if self.state == BreakerState::Open {
            self.go(BreakerState::HalfOpen)
        } else {
            None
        }
    }

    /// Recovery finished: trials may go to Redis.
    pub fn recovery_done(&mut self, now: Instant) {
        if self.state == BreakerState::HalfOpen && !self.trials_open {
            self.trials_open = true;
            self.trials_progress = now;
        }
    }

    /// True when half-open, recovery is done, and trials may run.
    pub fn trials_open(&self) -> bool {
        self.state == BreakerState::HalfOpen && self.trials_open
    }

    /// When the last trial passed (or trials opened), if none is in
    /// flight now.
    pub fn trials_idle_since(&self) -> Option<Instant> {
        (self.trials_open() && self.trials_in_flight == 0).then_some(self.trials_progress)
    }

    /// Admits one write as a trial, if trials are open and fewer than
    /// the number still needed are in flight.
    pub fn admit_trial(&mut self) -> Option<Trial> {
        let needed = self.config.trials.max(1);
        if self.trials_open() && self.trials_in_flight + self.trials_passed < needed {
            self.trials_in_flight += 1;
            Some(Trial {
                period: self.period,
            })
        } else {
            None
        }
    }

    /// A trial succeeded: the breaker closes once enough did.
    pub fn trial_passed(&mut self, trial: Trial, now: Instant) -> Option<Transition> {
        if trial.period != self.period || !self.trials_open() {
            return None;
        }
        self.trials_in_flight = self.trials_in_flight.saturating_sub(1);
        self.trials_passed += 1;
        self.trials_progress = now;
        if self.trials_passed < self.config.trials.max(1) {
            return None;
        }
        self.consecutive_failures = 0;
        self.probe_attempts = 0;
        self.trials_open = false;
        self.trials_passed = 0;
        self.go(BreakerState::Closed)
    }

    /// A trial ended without a verdict on Redis's health (a logic error of
    /// its key, or its request went away): its place is free again. A
    /// failure that counts is [`Breaker::record_failure`], which reopens.
    pub fn trial_dropped(&mut self, trial: Trial) {
        if trial.period == self.period && self.trials_open() {
            self.trials_in_flight = self.trials_in_flight.saturating_sub(1);
        }
    }

    /// Exponential backoff with "equal jitter": half the delay fixed, half
    /// random, so many seqds that lost one Redis do not probe in step.
    fn backoff(&mut self) -> Duration {
        let base = self.config.probe_base.as_millis().max(1) as u64;
        let max = self.config.probe_max.as_millis().max(1) as u64;
        let exp = base
            .saturating_mul(1u64 << self.probe_attempts.min(20))
            .min(max);
        let half = exp / 2;
        Duration::from_millis(half + self.next_random() % (exp - half + 1))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default(), Instant::now(), 42)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_three_consecutive_failures_only() {
        let mut b = breaker();
        assert_eq!(b.record_failure("io", "x", Instant::now()), None);
        assert_eq!(b.record_failure("io", "x", Instant::now()), None);
        b.record_success();
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.record_failure("io", "x", Instant::now()), None);
        assert_eq!(b.record_failure("io", "x", Instant::now()), None);
        assert!(b.allows_requests());
        let t = b.record_failure("io", "timeout", Instant::now());
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        assert!(!b.allows_requests());
        assert_eq!(b.last_error(), Some("timeout"));
        // Further failures while open are not new transitions.
        assert_eq!(b.record_failure("io", "x", Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_back_off_exponentially_with_jitter_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure("io", "x", Instant::now());
        }
        let mut delays = Vec::new();
        for _ in 0..12 {
            let wait = b.next_probe() - Instant::now();
            assert!(!b.probe_due(Instant::now()) || wait.is_zero());
            tokio::time::advance(wait).await;
            assert!(b.probe_due(Instant::now()));
            delays.push(wait);
            b.probe_failed("io", "refused", Instant::now());
        }
        // Attempt n waits between half and all of min(100ms * 2^n, 5s).
        for (n, d) in delays.iter().enumerate() {
            let full = Duration::from_millis((100u64 << n).min(5000));
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {n}: {d:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(delays[11] >= Duration::from_millis(2500));
    }

    fn half_open_with_trials(b: &mut Breaker) {
        for _ in 0..3 {
            b.record_failure("oom", "x", Instant::now());
        }
        b.probe_succeeded();
        b.recovery_done(Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_half_opens_and_only_passed_trials_close() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure("oom", "x", Instant::now());
        }
        assert_eq!(b.last_error_class(), Some("oom"));
        assert_eq!(b.admit_trial(), None, "no trial while open");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            b.probe_succeeded(),
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        assert!(
            !b.allows_requests(),
            "no Redis traffic until recovery is done"
        );
        assert_eq!(b.admit_trial(), None, "no trial before recovery is done");
        b.recovery_done(Instant::now());
        assert!(!b.allows_requests(), "recovery alone does not close");
        // Three trials at once, no fourth while they run.
        let trials: Vec<Trial> = (0..3).map(|_| b.admit_trial().unwrap()).collect();
        assert_eq!(b.admit_trial(), None);
        assert_eq!(b.trial_passed(trials[0], Instant::now()), None);
        assert_eq!(b.trial_passed(trials[1], Instant::now()), None);
        assert_eq!(b.admit_trial(), None, "the third is still out");
        assert_eq!(
            b.trial_passed(trials[2], Instant::now()),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert!(b.allows_requests());
        assert_eq!(b.consecutive_failures(), 0);
        assert!(b.redis_up());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_and_trials_of_the_old_period_count_for_nothing() {
        let mut b = breaker();
        half_open_with_trials(&mut b);
        let early = b.admit_trial().unwrap();
        let failing = b.admit_trial().unwrap();
        let _ = failing;
        assert!(b.record_failure("oom", "OOM", Instant::now()).is_some());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trial_passed(early, Instant::now()), None);
        b.probe_succeeded();
        b.recovery_done(Instant::now());
        // The early trial's success, reported late, neither counts nor
        // frees a place of the new period.
        assert_eq!(b.trial_passed(early, Instant::now()), None);
        b.trial_dropped(early);
        let now: Vec<Trial> = (0..3).map(|_| b.admit_trial().unwrap()).collect();
        assert_eq!(b.admit_trial(), None);
        // A trial that ended without a verdict frees its place.
        b.trial_dropped(now[0]);
        assert!(b.admit_trial().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_trials_report_when_they_last_progressed() {
        let mut b = breaker();
        assert_eq!(b.trials_idle_since(), None);
        half_open_with_trials(&mut b);
        let opened = Instant::now();
        assert_eq!(b.trials_idle_since(), Some(opened));
        let t = b.admit_trial().unwrap();
        assert_eq!(b.trials_idle_since(), None, "a trial is out");
        tokio::time::advance(Duration::from_millis(30)).await;
        b.trial_passed(t, Instant::now());
        assert_eq!(b.trials_idle_since(), Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_during_recovery_reopens_and_restarts_backoff() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure("io", "x", Instant::now());
        }
        for _ in 0..5 {
            b.probe_failed("io", "x", Instant::now());
        }
        b.probe_succeeded();
        let t = b.record_failure("io", "reset during reconciliation", Instant::now());
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        let wait = b.next_probe() - Instant::now();
        assert!(
            wait <= Duration::from_millis(100),
            "backoff restarted: {wait:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_changes_apply_to_the_next_failure() {
        let mut b = breaker();
        b.set_config(BreakerConfig {
            threshold: 1,
            ..BreakerConfig::default()
        });
        assert!(b.record_failure("io", "x", Instant::now()).is_some());
    }
}

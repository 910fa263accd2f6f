//! The Redis circuit breaker: a plain state machine.
//!
//! # What it owns
//!
//! Whether requests may go to Redis now. It knows nothing about sockets or
//! tasks: every method takes `now`, so tests drive it with paused time.
//!
//! ```text
//!            K consecutive transport failures / timeouts,
//!            or at once: master lost or replaced (trip)
//!  Closed ──────────────────────────────────────────────▶ Open
//!    ▲                                                     │ ▲
//!    │ recovery done                    probe PING ok      │ │ probe failed:
//!    │ (reconciliation,                                    ▼ │ back off (x2, jitter)
//!    └─────────────────────────────────────────────── HalfOpen
//!                    recovery failed ──▶ Open
//! ```
//!
//! Only transport failures and timeouts count; Redis logic errors
//! (`WRONGTYPE`, a script error) say nothing about Redis's health and are
//! never recorded here.

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
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 3,
            probe_base: Duration::from_millis(100),
            probe_max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go to Redis.
    Closed,
    /// Requests are answered without Redis; probes run with backoff.
    Open,
    /// A probe succeeded; recovery (reconciliation, outbox replay) runs
    /// before requests go to Redis again.
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
    last_transition: SystemTime,
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
            last_transition: SystemTime::now(),
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

    /// A Redis operation failed with a transport failure or timeout.
    pub fn record_failure(&mut self, error: &str, now: Instant) -> Option<Transition> {
        self.last_error = Some(error.to_string());
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
    pub fn trip(&mut self, error: &str, now: Instant) -> Option<Transition> {
        self.last_error = Some(error.to_string());
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => None,
        }
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        self.probe_attempts = 0;
        self.next_probe = now + self.backoff();
        self.go(BreakerState::Open)
    }

    /// True when the breaker is open and a probe is due.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.state == BreakerState::Open && now >= self.next_probe
    }

    /// The probe's `PING` failed: wait longer before the next one.
    pub fn probe_failed(&mut self, error: &str, now: Instant) {
        self.last_error = Some(error.to_string());
        self.probe_attempts = self.probe_attempts.saturating_add(1);
        self.next_probe = now + self.backoff();
    }

    /// The probe's `PING` succeeded: recovery may start.
    pub fn probe_succeeded(&mut self) -> Option<Transition> {
        if self.state == BreakerState::Open {
            self.go(BreakerState::HalfOpen)
        } else {
            None
        }
    }

    /// Recovery finished: requests go to Redis again.
    pub fn recovered(&mut self) -> Option<Transition> {
        if self.state == BreakerState::HalfOpen {
            self.consecutive_failures = 0;
            self.probe_attempts = 0;
            self.go(BreakerState::Closed)
        } else {
            None
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
        assert_eq!(b.record_failure("x", Instant::now()), None);
        assert_eq!(b.record_failure("x", Instant::now()), None);
        b.record_success();
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.record_failure("x", Instant::now()), None);
        assert_eq!(b.record_failure("x", Instant::now()), None);
        assert!(b.allows_requests());
        let t = b.record_failure("timeout", Instant::now());
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
        assert_eq!(b.record_failure("x", Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_back_off_exponentially_with_jitter_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure("x", Instant::now());
        }
        let mut delays = Vec::new();
        for _ in 0..12 {
            let wait = b.next_probe() - Instant::now();
            assert!(!b.probe_due(Instant::now()) || wait.is_zero());
            tokio::time::advance(wait).await;
            assert!(b.probe_due(Instant::now()));
            delays.push(wait);
            b.probe_failed("refused", Instant::now());
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

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_half_opens_and_recovery_closes() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure("x", Instant::now());
        }
        assert_eq!(b.recovered(), None, "cannot close straight from open");
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
        assert_eq!(
            b.recovered(),
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
    async fn a_failure_during_recovery_reopens_and_restarts_backoff() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure("x", Instant::now());
        }
        for _ in 0..5 {
            b.probe_failed("x", Instant::now());
        }
        b.probe_succeeded();
        let t = b.record_failure("reset during reconciliation", Instant::now());
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
        assert!(b.record_failure("x", Instant::now()).is_some());
    }
}

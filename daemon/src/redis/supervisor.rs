//! The task that drives the breaker: a health check while closed (the
//! write check, which a Redis refusing writes fails though it answers
//! `PING`; and, with Sentinel, the question where the master is now),
//! probes with backoff while open, and while half-open the recovery steps
//! ([`Recovery`]: reconciliation, outbox replay), then trials: real
//! requests close the breaker, or, when none comes, write checks of its
//! own stand in for them.

use super::breaker::BreakerState;
use super::link::{Recovery, RedisLink};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Drives the breaker until `stop`: health checks while closed (every
/// `health_interval`), probes with backoff while open, recovery and then
/// trials while half-open. Pending recovery work is also done while
/// closed, so keys issued locally after a single failed operation are
/// reconciled soon.
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
                    let _ = link.check_health().await;
                }
                if link.allows_requests() {
                    link.follow_master().await;
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
                    Ok(change) => {
                        if let Some(change) = change {
                            link.master_changed(&change.to_string());
                        }
                        let t = link.lock().probe_succeeded();
                        if let Some(t) = t {
                            link.announce(t, None);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "Redis probe failed");
                        link.lock()
                            .probe_failed(e.class(), &e.to_string(), Instant::now());
                    }
                }
            }
            BreakerState::HalfOpen if link.lock().trials_open() => {
                // Trials run in the requests themselves; when none came
                // for a while (an idle host, or only reads), a write check
                // of the supervisor's own is the trial.
                let pause = link.lock().config().probe_base;
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return,
                }
                let idle = link
                    .lock()
                    .trials_idle_since()
                    .is_some_and(|since| since.elapsed() >= pause);
                if idle {
                    if let Err(e) = link.trial_check().await {
                        tracing::debug!(error = %e, "trial write check failed");
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
                    link.lock().recovery_done(Instant::now());
                } else if link.lock().state() == BreakerState::HalfOpen {
                    // Recovery failed without a failure that counts (cannot
                    // happen today); do not spin.
                    let t =
                        link.lock()
                            .record_failure("recovery", "recovery failed", Instant::now());
                    if let Some(t) = t {
                        link.announce(t, None);
                    }
                }
            }
        }
    }
}

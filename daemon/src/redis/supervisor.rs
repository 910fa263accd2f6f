//! The task that drives the breakers, each master's on its own: a health
//! check while closed (the write check, which a Redis refusing writes
//! fails though it answers `PING`; and, with Sentinel, the question where
//! the master is now), probes with backoff while open, and while half-open
//! the recovery steps ([`Recovery`]: reconciliation, outbox replay, the
//! tracker's streams), then trials: real requests close the breaker, or,
//! when none comes, write checks of its own stand in for them. On a
//! Cluster it also keeps the slot map that says which master's breaker a
//! key goes through.

use super::breaker::BreakerState;
use super::link::{Recovery, RedisLink};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Runs each recovery's pass; false when one could not run at all.
async fn recover_all(link: &RedisLink, recoveries: &[&Arc<dyn Recovery>], tell: bool) -> bool {
    let mut ok = true;
    for r in recoveries {
        let pending = r.pending();
        if let Err(e) = r.recover(link).await {
            tracing::warn!(recovery = r.name(), pending, error = %e, "recovery could not run");
            ok = false;
        } else if pending > 0 && tell {
            tracing::info!(
                recovery = r.name(),
                pending,
                left = r.pending(),
                "recovery pass done"
            );
        }
    }
    ok
}

/// Drives the breakers until `stop`: health checks while closed (every
/// `health_interval`), probes with backoff while open, recovery and then
/// trials while half-open. Pending recovery work is also done while
/// closed (at most every probe interval), so keys issued locally after a
/// single failed operation are reconciled soon.
pub async fn supervise(
    link: Arc<RedisLink>,
    recoveries: Vec<Arc<dyn Recovery>>,
    health_interval: Duration,
    stop: CancellationToken,
) {
    let mut checked: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut next_map = Instant::now();
    let mut next_background = Instant::now();
    loop {
        let pause = link.lock().config().probe_base;
        let stale = link.take_map_stale();
        if link.is_cluster() && (stale || Instant::now() >= next_map || !link.lock().has_slot_map())
        {
            link.refresh_slot_map().await;
            next_map = Instant::now() + health_interval;
        }
        let masters = link.masters();
        let mut recover_for = Vec::new();
        let mut any_usable = false;
        for (name, node, check_key) in &masters {
            let (state, probe_due, trials_open, trials_idle) = {
                let b = link.lock();
                let Some(m) = b.by_name(name) else { continue };
                (
                    m.breaker.state(),
                    m.breaker.probe_due(Instant::now()),
                    m.breaker.trials_open(),
                    m.breaker
                        .trials_idle_since()
                        .is_some_and(|since| since.elapsed() >= pause),
                )
            };
            match state {
                BreakerState::Open if probe_due => link.probe(name, node, check_key).await,
                BreakerState::Open => {}
                BreakerState::HalfOpen if !trials_open => {
                    any_usable = true;
                    recover_for.push(name.clone());
                }
                BreakerState::HalfOpen => {
                    any_usable = true;
                    // Trials run in the requests themselves; when none
                    // came for a while (an idle host, or only reads), a
                    // write check of the supervisor's own is one.
                    if trials_idle {
                        link.trial_check(node, check_key).await;
                    }
                }
                BreakerState::Closed => {
                    any_usable = true;
                    let due = checked
                        .get(name)
                        .is_none_or(|at| at.elapsed() >= health_interval);
                    if due {
                        checked.insert(name.clone(), Instant::now());
                        link.check_health(node, check_key).await;
                        if !link.is_cluster() && link.allows(super::Route::Any) {
                            link.follow_master().await;
                        }
                    }
                }
            }
        }
        checked.retain(|name, _| masters.iter().any(|(n, _, _)| n == name));
        let background = any_usable
            && Instant::now() >= next_background
            && recoveries.iter().any(|r| r.pending() > 0);
        if !recover_for.is_empty() || background {
            next_background = Instant::now() + pause;
            // What a master must finish before it closes, first; then the
            // rest, beside serving (see `Recovery::before_closing`).
            let (first, beside): (Vec<_>, Vec<_>) =
                recoveries.iter().partition(|r| r.before_closing());
            let ok = recover_all(&link, &first, !recover_for.is_empty()).await;
            // A master whose recovery failed was reopened by the failure;
            // the others may try real requests now.
            if ok {
                for name in &recover_for {
                    link.recovery_done(name);
                }
            }
            recover_all(&link, &beside, !recover_for.is_empty()).await;
        }
        // Sleep until the next thing due: a probe, a health check, a
        // trial or recovery step, the slot map.
        let mut wake_at = Instant::now() + health_interval;
        {
            let b = link.lock();
            for m in b.masters() {
                let due = match m.breaker.state() {
                    BreakerState::Open => m.breaker.next_probe(),
                    BreakerState::HalfOpen => Instant::now() + pause,
                    BreakerState::Closed => checked
                        .get(&m.name)
                        .map_or_else(Instant::now, |at| *at + health_interval),
                };
                wake_at = wake_at.min(due);
            }
        }
        if link.is_cluster() {
            wake_at = wake_at.min(next_map);
        }
        if recoveries.iter().any(|r| r.pending() > 0) && any_usable {
            wake_at = wake_at.min(next_background.max(Instant::now() + pause));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = link.wake.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

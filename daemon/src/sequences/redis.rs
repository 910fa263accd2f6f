//! Redis mode: numbers come from the shared Redis counter, and from the
//! local store whenever Redis cannot answer.
//!
//! # What it guarantees (the promise to users: docs/guarantees.md)
//!
//! - **Never twice, strictly increasing** per key from this seqd: every
//!   number, from Redis or from the store, is committed to the store as the
//!   key's high-water mark before it is returned; a number Redis answers
//!   at or below the mark (Redis lost data) is never used: the increment
//!   is a plain `INCR` (its first `EXPIRE NX` in the same `MULTI`), and
//!   when its answer is at or below the mark the increment script runs
//!   instead, which raises the counter past the mark in one atomic step;
//!   and a Redis answer that collides with a number the store issued
//!   meanwhile is refused and asked again ([`Store::claim`]).
//! - **With `--redis-wait-replicas`**: the increment (and a raise) is
//!   answered only once that many replicas acknowledged it (`WAIT`, see
//!   `redis::pipe`), so a failover cannot hand it out again.
//! - **Always answers**: with the breaker open, `NEXT` is answered from the
//!   store at once; when a Redis operation fails or times out, from the
//!   store right after (within the operation timeout).
//! - **No regression**: keys issued from the store are *pending
//!   reconciliation*; before the breaker closes, and in the background
//!   while it is closed, their Redis counters are raised to at least the
//!   mark by a script that only ever raises.

use super::keys::SeqKey;
use super::{Fallback, FallbackPolicy, Issued, Sequences};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::redis::{LinkError, Recovery, RedisFailure, RedisLink, Route};
use crate::store::{Claim, PendingKey, Store};
use chrono::{SecondsFormat, Utc};
use futures_util::future::{join_all, BoxFuture};
use futures_util::FutureExt;
use seqd_protocol::Source;
use std::sync::Arc;

/// Increments a counter atomically, never below a floor, and sets the TTL in
/// the same step as the first increment.
///
/// KEYS[1] = counter; ARGV[1] = TTL in seconds (0 = none); ARGV[2] = floor
/// (the caller's high-water mark). Returns `{n, raised, before}`: the new
/// number, 1 when the counter was at or below the floor, and the counter
/// before this call.
const NEXT_SCRIPT: &str = r#"
local n = redis.call('INCR', KEYS[1])
local before = n - 1
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
return {n, raised, before}
"#;

/// `INCR key`; with a TTL, `MULTI` / `INCR` / `EXPIRE key ttl NX` /
/// `EXEC`: the TTL is set in the same atomic step as the increment (the rule:
/// never a key left without one), without a script. The transaction is
/// written as plain commands, not the redis crate's atomic pipeline, so
/// that a fence's `WAIT` can follow its `EXEC`. Returns the new number.
async fn increment(c: &mut crate::redis::Conn, key: &str, ttl: u64) -> redis::RedisResult<u64> {
    if ttl == 0 {
        return c.incr(key).await;
    }
    let replies = c.incr_expire(key, ttl).await?;
    // The last reply is EXEC's: the transaction's replies, or its error.
    let exec = replies
        .into_iter()
        .last()
        .unwrap_or(redis::Value::Nil)
        .extract_error()?;
    match exec {
        redis::Value::Array(mut results) if !results.is_empty() => Ok(redis::from_redis_value(
            results.swap_remove(0).extract_error()?,
        )?),
        other => Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "EXEC of an increment",
            format!("{other:?}"),
        ))),
    }
}

/// Raises a counter to at least a mark; never lowers it.
///
/// KEYS[1] = counter; ARGV[1] = mark; ARGV[2] = TTL for a key that has none
/// (0 = none). Returns `{raised, cur}`: 1 when it raised the counter, 0
/// when it was already at or above the mark; and the counter it found.
const RAISE_SCRIPT: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local mark = tonumber(ARGV[1])
if cur >= mark then
  return {0, cur}
end
redis.call('SET', KEYS[1], mark, 'KEEPTTL')
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('TTL', KEYS[1]) == -1 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return {1, cur}
"#;

/// How often `next` asks Redis again after its answer collided with a
/// number the store issued meanwhile, before answering from the store.
const CLAIM_ATTEMPTS: usize = 3;
/// Keys reconciled concurrently (pipelined on the multiplexed connections).
const RECONCILE_BATCH: usize = 256;

/// Sequences from the shared Redis counter, recorded in the local store.
pub struct RedisSequences {
    link: Arc<RedisLink>,
    /// This host's id, carried by every number issued from the store.
    host: u16,
    /// Whether a `NEXT` Redis cannot answer is answered from the store.
    fallback: FallbackPolicy,
    next_script: redis::Script,
    raise_script: redis::Script,
    store: Store,
    metrics: Arc<Metrics>,
}

/// Why Redis did not give a number.
enum RedisMiss {
    /// Answer from the store instead; the label says why.
    Fallback(&'static str),
    /// Fail the request (a logic error, the store failing).
    Fail(Error),
}

impl From<LinkError> for RedisMiss {
    fn from(e: LinkError) -> Self {
        if e.is_unavailable() {
            RedisMiss::Fallback(e.fallback_reason())
        } else {
            RedisMiss::Fail(e.into())
        }
    }
}

impl RedisSequences {
    pub fn new(
        link: Arc<RedisLink>,
        store: Store,
        metrics: Arc<Metrics>,
        host: u16,
        fallback: FallbackPolicy,
    ) -> Self {
        RedisSequences {
            link,
            host,
            fallback,
            next_script: redis::Script::new(NEXT_SCRIPT),
            raise_script: redis::Script::new(RAISE_SCRIPT),
            store,
            metrics,
        }
    }

    async fn next_from_redis(&self, key: &SeqKey) -> Result<Issued, RedisMiss> {
        // All attempts together keep within one operation timeout.
        let deadline = tokio::time::Instant::now() + self.link.timeout();
        self.store.read_if_new(
            &key.key,
            key.mark_expires_at,
            key.ttl_secs,
            key.issuable_from,
        );
        for _ in 0..CLAIM_ATTEMPTS {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let flight = self.store.begin(
                &key.key,
                key.mark_expires_at,
                key.ttl_secs,
                key.issuable_from,
            );
            let floor = flight.floor;
            let pending = self.store.is_dirty(&key.key);
            // The TTL goes with the increments of a key this seqd has no
            // mark for: a mark is only ever recorded after an increment
            // whose EXPIRE NX ran (or after the script, which sets it too).
            let ttl = if floor == 0 {
                key.ttl_secs.unwrap_or(0)
            } else {
                0
            };
            let script_ttl = key.ttl_secs.unwrap_or(0);
            // The common case costs Redis a plain INCR (and for a daily key
            // new to this seqd an EXPIRE NX): no script. Only a key with local numbers to
            // reconcile, or an answer at or below the floor (Redis lost
            // data), takes the script, which raises the counter atomically.
            let fast = if pending {
                None
            } else {
                let n = self
                    .link
                    .call_write_until(Route::Key(&key.key), deadline, |c| async move {
                        increment(&mut c.fenced(), &key.key, ttl).await
                    })
                    .await?;
                (n > floor).then_some(n)
            };
            let (seq, raised, before) = match fast {
                Some(n) => (n, 0, n - 1),
                None => {
                    let script = &self.next_script;
                    self.link
                        .call_write_until(Route::Key(&key.key), deadline, |c| async move {
                            // Fenced: with --redis-wait-replicas the number
                            // is answered only once replicas hold it.
                            script
                                .key(&key.key)
                                .arg(script_ttl)
                                .arg(floor)
                                .invoke_async::<(u64, u64, u64)>(&mut c.fenced())
                                .await
                        })
                        .await?
                }
            };
            match self
                .store
                .claim(&flight, seq, key.mark_expires_at, key.ttl_secs)
                .await
            {
                Ok(()) => {
                    if pending && (raised == 1 || before >= floor) {
                        // The script raised the counter past the numbers
                        // issued locally, or found it there already (other
                        // hosts drew past them): Redis is no longer behind
                        // this key's mark, so it is reconciled. (Waiting
                        // for the background pass instead would wait for
                        // ever under steady traffic: every number from
                        // Redis moves the mark past the one it read.)
                        let from = self.store.dirty_from(&key.key);
                        self.store
                            .reconciled(&key.key, seq)
                            .await
                            .map_err(|e| RedisMiss::Fail(e.into()))?;
                        if raised == 1 {
                            self.metrics.reconciled_keys.inc();
                        }
                        self.report_overlap(&key.key, from, floor, before);
                    } else if raised == 1 {
                        self.metrics.redis_regressions.inc();
                        tracing::warn!(key = %key.key, mark = floor, issued = seq,
                            "Redis counter was below this seqd's high-water mark (Redis lost data); raised it");
                    }
                    return Ok(Issued {
                        seq,
                        source: Source::Redis,
                        host: None,
                    });
                }
                // The store issued this number while Redis was answering:
                // ask again, with the new mark as the floor.
                Err(Claim::Taken { .. }) => continue,
                Err(Claim::Failed(e)) => return Err(RedisMiss::Fail(e.into())),
            }
        }
        Err(RedisMiss::Fallback("redis_failed"))
    }

    /// Raises Redis to the marks of up to [`RECONCILE_BATCH`] pending keys
    /// at a time until none of those pending at the start is left.
    async fn reconcile(&self, link: &RedisLink) -> Result<(), RedisFailure> {
        let mut budget = self.store.pending();
        while budget > 0 {
            // Only keys whose master takes recovery now: the others wait
            // for theirs, and must not hide these behind them.
            let admits = |k: &str| link.admits_recovery(Route::Key(k));
            let batch = match self
                .store
                .pending_batch(RECONCILE_BATCH.min(budget), &admits)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the keys pending reconciliation");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            budget = budget.saturating_sub(batch.len());
            let results = join_all(batch.iter().map(|p| self.raise(link, p))).await;
            let mut done = Vec::with_capacity(batch.len());
            for (p, r) in batch.iter().zip(results) {
                match r {
                    Ok((raised, cur)) => {
                        if raised {
                            self.metrics.reconciled_keys.inc();
                        }
                        self.report_overlap(&p.key, p.dirty_from, p.value, cur);
                        done.push(p);
                    }
                    // Its master failed (recorded in its breaker) or is
                    // open now: the key stays pending for the next pass.
                    Err(e) if e.counts_against_health() => {
                        tracing::debug!(key = %p.key, error = %e, "not reconciled yet; it stays pending");
                    }
                    Err(e) => {
                        // A key Redis refuses to raise (it holds something
                        // that is not a counter) must not block recovery of
                        // the others; it stays pending and is logged.
                        tracing::error!(key = %p.key, error = %e, "cannot reconcile key; it stays pending");
                    }
                }
            }
            // Recorded together: the writer commits them as one batch,
            // not one commit per key.
            let recorded =
                join_all(done.iter().map(|p| self.store.reconciled(&p.key, p.value))).await;
            for (p, r) in done.iter().zip(recorded) {
                if let Err(e) = r {
                    tracing::warn!(key = %p.key, error = %e, "cannot record a reconciliation");
                }
            }
        }
        Ok(())
    }

    /// Raises `p`'s counter to its mark; returns whether it did, and the
    /// counter Redis held.
    async fn raise(&self, link: &RedisLink, p: &PendingKey) -> Result<(bool, u64), RedisFailure> {
        let script = &self.raise_script;
        let ttl = p.ttl.unwrap_or(0);
        let (raised, cur): (u64, u64) = link
            .call_recovering(Route::Key(&p.key), |c| async move {
                script
                    .key(&*p.key)
                    .arg(p.value)
                    .arg(ttl)
                    .invoke_async(&mut c.fenced())
                    .await
            })
            .await?;
        Ok((raised == 1, cur))
    }

    /// On reconciling `key`, whose local numbers ran from `from + 1` to
    /// `mark`: if Redis's counter (`redis`) had moved past `from`, other
    /// hosts drew numbers from Redis meanwhile that this host may also
    /// have issued locally (the fleet's possible overlap). Counted, and logged once per
    /// reconciliation of the key.
    fn report_overlap(&self, key: &str, from: Option<u64>, mark: u64, redis: u64) {
        let Some(from) = from else {
            tracing::debug!(
                key,
                "reconciled a key whose local range is unknown (older store)"
            );
            return;
        };
        if redis <= from || mark <= from {
            return;
        }
        self.metrics.fallback_possible_overlap.inc();
        tracing::warn!(
            key = %key,
            local_first = from + 1,
            local_last = mark,
            redis = redis,
            host = self.host,
            "numbers issued from the local store may repeat numbers other hosts drew from Redis \
             during the outage (told apart by host={})",
            self.host
        );
    }
}

impl Sequences for RedisSequences {
    fn next<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>> {
        async move {
            let reason = match self.next_from_redis(key).await {
                Ok(issued) => return Ok(issued),
                Err(RedisMiss::Fail(e)) => return Err(e),
                Err(RedisMiss::Fallback(reason)) => reason,
            };
            if self.fallback.of(key.family) == Fallback::Refuse {
                return Err(Error::Unavailable(format!(
                    "Redis cannot answer ({reason}) and --fallback-{}=refuse: no number was issued",
                    key.family.as_str()
                )));
            }
            let seq = self
                .store
                .issue(
                    &key.key,
                    key.mark_expires_at,
                    key.ttl_secs,
                    key.issuable_from,
                )
                .await?;
            self.metrics.count_fallback(reason);
            // Let the supervisor reconcile the key once Redis is back (or
            // now, if the breaker is still closed).
            self.link.wake();
            Ok(Issued {
                seq,
                source: Source::Local,
                host: Some(self.host),
            })
        }
        .boxed()
    }

    fn current<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>> {
        async move {
            let k = key.key.as_str();
            let in_redis: Result<Option<u64>, LinkError> = self
                .link
                .call(Route::Key(k), |mut c| async move {
                    redis::cmd("GET").arg(k).query_async(&mut c).await
                })
                .await;
            let mark = self.store.mark(k).await?;
            match in_redis {
                // If Redis lost the counter, the last number this seqd
                // issued is still the current one.
                Ok(v) => Ok(Issued {
                    seq: v.unwrap_or(0).max(mark),
                    source: Source::Redis,
                    host: None,
                }),
                Err(e) if e.is_unavailable() => Ok(Issued {
                    seq: mark,
                    source: Source::Local,
                    host: None,
                }),
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        let b = self.link.snapshot();
        let pending = self.store.pending();
        let topology = self.link.topology();
        async move {
            let last_transition = chrono::DateTime::<Utc>::from(b.last_transition)
                .to_rfc3339_opts(SecondsFormat::Secs, true);
            let mut fields = vec![
                (
                    "redis".into(),
                    if b.redis_up { "up" } else { "down" }.into(),
                ),
                ("breaker".into(), b.state.as_str().into()),
                (
                    "consecutive_failures".into(),
                    b.consecutive_failures.to_string(),
                ),
                ("last_transition".into(), last_transition),
                (
                    "last_error".into(),
                    b.last_error.unwrap_or_else(|| "none".into()),
                ),
                (
                    "last_error_class".into(),
                    b.last_error_class.unwrap_or("none").into(),
                ),
                ("pending_reconciliation".into(), pending.to_string()),
            ];
            fields.extend(topology);
            if self.link.is_cluster() {
                // Each master's breaker: a failing master sends only its
                // own slots to the local store.
                let open = b
                    .masters
                    .iter()
                    .filter(|(_, s)| *s != crate::redis::BreakerState::Closed)
                    .count();
                fields.push(("masters".into(), b.masters.len().to_string()));
                fields.push(("masters_not_closed".into(), open.to_string()));
                let each: Vec<String> = b
                    .masters
                    .iter()
                    .map(|(name, s)| format!("{name}/{}", s.as_str()))
                    .collect();
                fields.push(("breakers".into(), each.join(",")));
            }
            fields
        }
        .boxed()
    }

    fn mode(&self) -> &'static str {
        "redis"
    }
}

/// Reconciliation as a recovery step of the breaker.
impl Recovery for RedisSequences {
    fn name(&self) -> &'static str {
        "sequence reconciliation"
    }

    /// A pending key is right from Redis in any state: its requests take
    /// the script that raises the counter past the mark first, and an
    /// answer at or below a mark memory does not hold is refused by the
    /// store and asked again through the script. So the breaker closes
    /// without waiting, and keys are raised beside serving.
    fn before_closing(&self) -> bool {
        false
    }

    fn pending(&self) -> usize {
        self.store.pending()
    }

    fn recover<'a>(&'a self, link: &'a RedisLink) -> BoxFuture<'a, Result<(), RedisFailure>> {
        self.reconcile(link).boxed()
    }
}

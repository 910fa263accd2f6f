//! Settings cache backends.
//!
//! [`Cache`] is the interface the dispatcher uses. [`LocalCache`] (local
//! mode) is a bounded in-memory cache shared by every process on the host.
//! [`RedisCache`] (Redis mode) reads and writes Redis, with:
//!
//! - **Zero staleness.** A write that cannot reach Redis deletes the key
//!   instead; if that fails too, or the breaker is open, the invalidation
//!   goes to a durable outbox in SQLite and the write is acknowledged as
//!   deferred. The outbox is replayed (every key deleted in Redis) before
//!   the breaker closes, and a key with an invalidation pending is never
//!   read from Redis meanwhile (`unavailable`), so no reader ever sees a
//!   value superseded during an outage — not even after a `kill -9` of
//!   seqd, since the outbox is loaded again at start.
//! - **Coalescing.** Concurrent gets of one key share one Redis round trip;
//!   every waiter gets the real result or error.

use super::link::{LinkError, Recovery, RedisLink};
use super::store::{OutboxEntry, Store};
use crate::capabilities::cache::{is_forbidden, scan_pattern};
use crate::error::{Error, RedisFailure};
use crate::metrics::Metrics;
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use seqd_protocol::{CacheItem, WriteOutcome};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A cached value, shared without copying among coalesced readers.
pub type Value = Arc<Vec<u8>>;

/// Settings cache storage.
pub trait Cache: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, Error>>;
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Value>>, Error>>;
    /// Writes items; the outcome of the whole call is the worst of its items.
    fn set_many(&self, items: Vec<CacheItem>) -> BoxFuture<'_, Result<WriteOutcome, Error>>;
    /// Returns keys removed now and whether the removal was deferred.
    fn del<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(u64, bool), Error>>;
    fn del_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(u64, bool), Error>>;
    /// `name=value` pairs for `HEALTH`.
    fn health(&self) -> Vec<(String, String)>;
    /// Invalidations waiting for Redis (0 in local mode).
    fn outbox_len(&self) -> usize;
}

fn worst(a: WriteOutcome, b: WriteOutcome) -> WriteOutcome {
    let rank = |o| match o {
        WriteOutcome::Stored => 0,
        WriteOutcome::Invalidated => 1,
        WriteOutcome::Deferred => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

// ------------------------------------------------------------ local mode ---

struct Entry {
    value: Value,
    expires: Option<Instant>,
    /// Position in the recency order.
    tick: u64,
}

#[derive(Default)]
struct Lru {
    map: HashMap<String, Entry>,
    /// tick -> key, oldest first.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: usize,
}

impl Lru {
    fn cost(key: &str, value: &[u8]) -> usize {
        key.len() + value.len() + 64
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.map.remove(key) {
            Some(e) => {
                self.order.remove(&e.tick);
                self.bytes -= Self::cost(key, &e.value);
                true
            }
            None => false,
        }
    }
}

/// Local mode: a bounded in-memory cache (least recently used entries are
/// evicted past `max_bytes`), shared by all processes on the host.
pub struct LocalCache {
    lru: Mutex<Lru>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

impl LocalCache {
    pub fn new(max_bytes: usize, metrics: Arc<Metrics>) -> Self {
        LocalCache {
            lru: Mutex::new(Lru::default()),
            max_bytes,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_now(&self, key: &str) -> Option<Value> {
        let mut lru = self.lock();
        let now = Instant::now();
        let expired = lru
            .map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now));
        if expired {
            lru.remove(key);
        }
        let tick = lru.next_tick;
        let e = lru.map.get_mut(key)?;
        let old = std::mem::replace(&mut e.tick, tick);
        let value = e.value.clone();
        lru.next_tick += 1;
        lru.order.remove(&old);
        lru.order.insert(tick, key.to_string());
        Some(value)
    }

    fn set_now(&self, item: CacheItem) -> WriteOutcome {
        let mut lru = self.lock();
        lru.remove(&item.key);
        let cost = Lru::cost(&item.key, &item.value);
        if cost > self.max_bytes {
            return WriteOutcome::Invalidated;
        }
        while lru.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.remove(&oldest);
        }
        let tick = lru.next_tick;
        lru.next_tick += 1;
        lru.order.insert(tick, item.key.clone());
        lru.bytes += cost;
        let expires = item
            .ttl_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        lru.map.insert(
            item.key,
            Entry {
                value: Arc::new(item.value),
                expires,
                tick,
            },
        );
        WriteOutcome::Stored
    }
}

impl Cache for LocalCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, Error>> {
        let v = self.get_now(key);
        self.metrics
            .count_cache_read(if v.is_some() { "hit" } else { "miss" });
        async move { Ok(v) }.boxed()
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Value>>, Error>> {
        let v: Vec<_> = keys.iter().map(|k| self.get_now(k)).collect();
        for x in &v {
            self.metrics
                .count_cache_read(if x.is_some() { "hit" } else { "miss" });
        }
        async move { Ok(v) }.boxed()
    }

    fn set_many(&self, items: Vec<CacheItem>) -> BoxFuture<'_, Result<WriteOutcome, Error>> {
        let mut out = WriteOutcome::Stored;
        for item in items {
            let o = self.set_now(item);
            self.metrics.count_cache_write(o.as_str());
            out = worst(out, o);
        }
        async move { Ok(out) }.boxed()
    }

    fn del<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(u64, bool), Error>> {
        let mut lru = self.lock();
        let n = keys.iter().filter(|k| lru.remove(k)).count() as u64;
        async move { Ok((n, false)) }.boxed()
    }

    fn del_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(u64, bool), Error>> {
        let mut lru = self.lock();
        let doomed: Vec<String> = lru
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let n = doomed.iter().filter(|k| lru.remove(k)).count() as u64;
        async move { Ok((n, false)) }.boxed()
    }

    fn outbox_len(&self) -> usize {
        0
    }

    fn health(&self) -> Vec<(String, String)> {
        let lru = self.lock();
        vec![
            ("outbox".into(), "0".into()),
            ("cache_entries".into(), lru.map.len().to_string()),
            ("cache_bytes".into(), lru.bytes.to_string()),
        ]
    }
}

// ------------------------------------------------------------ Redis mode ---

/// Invalidations waiting for Redis, mirrored in the store.
#[derive(Default)]
struct Pending {
    keys: HashSet<String>,
    prefixes: Vec<String>,
}

impl Pending {
    fn len(&self) -> usize {
        self.keys.len() + self.prefixes.len()
    }

    fn covers(&self, key: &str) -> bool {
        self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn insert(&mut self, e: &OutboxEntry) {
        match e {
            OutboxEntry::Key(k) => {
                self.keys.insert(k.clone());
            }
            OutboxEntry::Prefix(p) if !self.prefixes.contains(p) => self.prefixes.push(p.clone()),
            OutboxEntry::Prefix(_) => {}
        }
    }

    fn remove(&mut self, e: &OutboxEntry) {
        match e {
            OutboxEntry::Key(k) => {
                self.keys.remove(k);
            }
            OutboxEntry::Prefix(p) => self.prefixes.retain(|x| x != p),
        }
    }

    fn entries(&self) -> Vec<OutboxEntry> {
        self.keys
            .iter()
            .cloned()
            .map(OutboxEntry::Key)
            .chain(self.prefixes.iter().cloned().map(OutboxEntry::Prefix))
            .collect()
    }
}

type Read = Result<Option<Value>, LinkError>;

/// Keys per `UNLINK` and per `SCAN` step.
const CHUNK: usize = 500;

/// Redis mode.
pub struct RedisCache {
    link: Arc<RedisLink>,
    store: Store,
    metrics: Arc<Metrics>,
    /// A `std::sync::Mutex`: held for set operations only.
    pending: Mutex<Pending>,
    /// Most invalidations kept; past it they collapse into one "delete
    /// every cache key" entry, which is correct, only coarser.
    max_outbox: usize,
    /// Gets in flight, by key: later readers of the same key await the
    /// first one's round trip.
    inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, Read>>>>,
}

impl RedisCache {
    pub fn new(
        link: Arc<RedisLink>,
        store: Store,
        outbox: Vec<OutboxEntry>,
        max_outbox: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut pending = Pending::default();
        for e in &outbox {
            pending.insert(e);
        }
        RedisCache {
            link,
            store,
            metrics,
            pending: Mutex::new(pending),
            max_outbox,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read may not go to Redis while the key has an invalidation
    /// pending: Redis may still hold the superseded value.
    fn refuse_if_pending(&self, key: &str) -> Result<(), Error> {
        if self.pending().covers(key) {
            self.metrics.count_cache_read("unavailable");
            return Err(Error::Unavailable(format!(
                "an invalidation of '{key}' is waiting for Redis; read the database"
            )));
        }
        Ok(())
    }

    /// Queues invalidations durably; they run before Redis is read again.
    async fn defer(&self, entries: Vec<OutboxEntry>) -> Result<(), Error> {
        // Decide under the lock, write to the store after it.
        let collapsed = {
            let mut pending = self.pending();
            if pending.len() + entries.len() > self.max_outbox {
                let replaced = pending.entries();
                *pending = Pending::default();
                pending.insert(&OutboxEntry::Prefix(String::new()));
                Some(replaced)
            } else {
                for e in &entries {
                    pending.insert(e);
                }
                None
            }
        };
        match collapsed {
            None => self.store.outbox(entries, true).await?,
            Some(replaced) => {
                tracing::warn!(
                    limit = self.max_outbox,
                    "cache outbox full: collapsing it into one invalidation of every cache key"
                );
                self.store
                    .outbox(vec![OutboxEntry::Prefix(String::new())], true)
                    .await?;
                self.store.outbox(replaced, false).await?;
            }
        }
        self.link.wake();
        Ok(())
    }

    /// The Redis `GET`, shared by concurrent readers of `key`.
    async fn coalesced_get(&self, key: &str) -> Read {
        let (fut, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(key) {
                Some(f) => {
                    self.metrics.cache_coalesced.inc();
                    (f.clone(), false)
                }
                None => {
                    let link = self.link.clone();
                    let metrics = self.metrics.clone();
                    let k = key.to_string();
                    let f: BoxFuture<'static, Read> = async move {
                        metrics.cache_redis_gets.inc();
                        link.call(|mut c| async move {
                            redis::cmd("GET")
                                .arg(&k)
                                .query_async::<Option<Vec<u8>>>(&mut c)
                                .await
                        })
                        .await
                        .map(|v| v.map(Arc::new))
                    }
                    .boxed();
                    let shared = f.shared();
                    inflight.insert(key.to_string(), shared.clone());
                    (shared, true)
                }
            }
        };
        let out = fut.await;
        if leader {
            self.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
        out
    }

    async fn set_one(&self, item: CacheItem) -> Result<WriteOutcome, Error> {
        let CacheItem { key, value, ttl_ms } = item;
        let k = key.as_str();
        let stored = self
            .link
            .call(|mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(k).arg(value);
                if let Some(ms) = ttl_ms {
                    cmd.arg("PX").arg(ms.max(1));
                }
                cmd.query_async::<()>(&mut c).await
            })
            .await;
        let outcome = match stored {
            Ok(()) => WriteOutcome::Stored,
            Err(e) => {
                tracing::debug!(key = %key, error = %e, "cache set failed; invalidating instead");
                self.invalidate(vec![key]).await?
            }
        };
        self.metrics.count_cache_write(outcome.as_str());
        Ok(outcome)
    }

    /// Deletes keys now, or defers the deletion: the outcome says which.
    async fn invalidate(&self, keys: Vec<String>) -> Result<WriteOutcome, Error> {
        let ks = &keys;
        match self
            .link
            .call(|mut c| async move {
                redis::cmd("UNLINK")
                    .arg(ks)
                    .query_async::<u64>(&mut c)
                    .await
            })
            .await
        {
            Ok(_) => Ok(WriteOutcome::Invalidated),
            Err(_) => {
                self.defer(keys.into_iter().map(OutboxEntry::Key).collect())
                    .await?;
                Ok(WriteOutcome::Deferred)
            }
        }
    }

    /// `SCAN` + `UNLINK` of the keys starting with `prefix`, skipping the
    /// counter families; `recovering` runs the steps while half-open.
    async fn unlink_prefix(&self, prefix: &str, recovering: bool) -> Result<u64, LinkError> {
        let pattern = scan_pattern(prefix);
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let p = &pattern;
            let scan = |mut c: super::pipe::Pipe| async move {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(p)
                    .arg("COUNT")
                    .arg(CHUNK)
                    .query_async::<(u64, Vec<String>)>(&mut c)
                    .await
            };
            let (next, keys) = if recovering {
                self.link.call_recovering(scan).await?
            } else {
                self.link.call(scan).await?
            };
            let keys: Vec<String> = keys.into_iter().filter(|k| !is_forbidden(k)).collect();
            if !keys.is_empty() {
                let ks = &keys;
                let unlink = |mut c: super::pipe::Pipe| async move {
                    redis::cmd("UNLINK")
                        .arg(ks)
                        .query_async::<u64>(&mut c)
                        .await
                };
                removed += if recovering {
                    self.link.call_recovering(unlink).await?
                } else {
                    self.link.call(unlink).await?
                };
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Replays the outbox: every queued invalidation runs in Redis, then
    /// leaves the outbox.
    async fn replay(&self, link: &RedisLink) -> Result<(), RedisFailure> {
        let entries = self.pending().entries();
        let (keys, prefixes): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| matches!(e, OutboxEntry::Key(_)));
        for chunk in keys.chunks(CHUNK) {
            let names: Vec<&str> = chunk
                .iter()
                .filter_map(|e| match e {
                    OutboxEntry::Key(k) => Some(k.as_str()),
                    OutboxEntry::Prefix(_) => None,
                })
                .collect();
            let names = &names;
            link.call_recovering(|mut c| async move {
                redis::cmd("UNLINK")
                    .arg(names)
                    .query_async::<u64>(&mut c)
                    .await
            })
            .await?;
            self.done(chunk.to_vec()).await;
        }
        for e in prefixes {
            if let OutboxEntry::Prefix(p) = &e {
                self.unlink_prefix(p, true).await.map_err(|e| match e {
                    LinkError::Failed(f) => f,
                    LinkError::BreakerOpen(s) => RedisFailure::Transport(format!("breaker {s}")),
                })?;
            }
            self.done(vec![e]).await;
        }
        Ok(())
    }

    async fn done(&self, entries: Vec<OutboxEntry>) {
        {
            let mut pending = self.pending();
            for e in &entries {
                pending.remove(e);
            }
        }
        self.metrics
            .cache_outbox_replayed
            .inc_by(entries.len() as u64);
        if let Err(e) = self.store.outbox(entries, false).await {
            tracing::warn!(error = %e, "cannot record replayed invalidations");
        }
    }
}

impl Cache for RedisCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, Error>> {
        async move {
            self.refuse_if_pending(key)?;
            if !self.link.allows_requests() {
                self.metrics.count_cache_read("unavailable");
                return Err(Error::from(LinkError::BreakerOpen("open")));
            }
            match self.coalesced_get(key).await {
                Ok(v) => {
                    self.metrics
                        .count_cache_read(if v.is_some() { "hit" } else { "miss" });
                    Ok(v)
                }
                Err(e) => {
                    self.metrics.count_cache_read("unavailable");
                    Err(Error::from(e))
                }
            }
        }
        .boxed()
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Value>>, Error>> {
        async move {
            for k in keys {
                self.refuse_if_pending(k)?;
            }
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<Vec<u8>>> = self
                .link
                .call(|mut c| async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
                .await
                .map_err(|e| {
                    self.metrics.count_cache_read("unavailable");
                    Error::from(e)
                })?;
            for v in &values {
                self.metrics
                    .count_cache_read(if v.is_some() { "hit" } else { "miss" });
            }
            Ok(values.into_iter().map(|v| v.map(Arc::new)).collect())
        }
        .boxed()
    }

    fn set_many(&self, items: Vec<CacheItem>) -> BoxFuture<'_, Result<WriteOutcome, Error>> {
        async move {
            let mut out = WriteOutcome::Stored;
            for item in items {
                out = worst(out, self.set_one(item).await?);
            }
            Ok(out)
        }
        .boxed()
    }

    fn del<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(u64, bool), Error>> {
        async move {
            match self
                .link
                .call(|mut c| async move {
                    redis::cmd("UNLINK")
                        .arg(keys)
                        .query_async::<u64>(&mut c)
                        .await
                })
                .await
            {
                Ok(n) => Ok((n, false)),
                Err(_) => {
                    self.defer(keys.iter().cloned().map(OutboxEntry::Key).collect())
                        .await?;
                    self.metrics.count_cache_write("deferred");
                    Ok((0, true))
                }
            }
        }
        .boxed()
    }

    fn del_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(u64, bool), Error>> {
        async move {
            match self.unlink_prefix(prefix, false).await {
                Ok(n) => Ok((n, false)),
                Err(_) => {
                    self.defer(vec![OutboxEntry::Prefix(prefix.to_string())])
                        .await?;
                    self.metrics.count_cache_write("deferred");
                    Ok((0, true))
                }
            }
        }
        .boxed()
    }

    fn outbox_len(&self) -> usize {
        self.pending().len()
    }

    fn health(&self) -> Vec<(String, String)> {
        vec![("outbox".into(), self.outbox_len().to_string())]
    }
}

/// Outbox replay as a recovery step: it runs before the breaker closes.
impl Recovery for RedisCache {
    fn name(&self) -> &'static str {
        "cache outbox replay"
    }

    fn pending(&self) -> usize {
        self.outbox_len()
    }

    fn recover<'a>(&'a self, link: &'a RedisLink) -> BoxFuture<'a, Result<(), RedisFailure>> {
        self.replay(link).boxed()
    }
}

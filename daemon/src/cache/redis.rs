//! Redis mode: reads and writes go to Redis, with the outbox that keeps
//! readers from superseded values and the coalescing of concurrent gets
//! (the guarantees are in the [module above](super)).

use super::reads::{Joined, Read, Reads};
use super::rules::{is_forbidden, scan_pattern};
use super::{worst, Cache, Value};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::redis::{unlink, LinkError, Recovery, RedisFailure, RedisLink, Route, Scan};
use crate::store::{OutboxEntry, Store};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use seqd_protocol::{CacheItem, WriteOutcome};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Invalidations waiting for Redis, mirrored in the store's outbox table.
///
/// A key is covered by a pending prefix when one of its own prefixes is in
/// the set: a lookup per key length, not a scan of every prefix.
#[derive(Default)]
struct Outbox {
    keys: HashSet<String>,
    prefixes: HashSet<String>,
}

/// True when one of `key`'s prefixes (the empty one included) is in `set`.
fn covered(set: &HashSet<String>, key: &str) -> bool {
    !set.is_empty() && (0..=key.len()).any(|i| key.is_char_boundary(i) && set.contains(&key[..i]))
}

impl Outbox {
    fn len(&self) -> usize {
        self.keys.len() + self.prefixes.len()
    }

    fn covers(&self, key: &str) -> bool {
        self.keys.contains(key) || covered(&self.prefixes, key)
    }

    fn insert(&mut self, e: &OutboxEntry) {
        match e {
            OutboxEntry::Key(k) => {
                self.keys.insert(k.clone());
            }
            OutboxEntry::Prefix(p) => {
                self.prefixes.insert(p.clone());
            }
        }
    }

    fn remove(&mut self, e: &OutboxEntry) {
        match e {
            OutboxEntry::Key(k) => {
                self.keys.remove(k);
            }
            OutboxEntry::Prefix(p) => {
                self.prefixes.remove(p);
            }
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

/// Keys per `UNLINK` and per `SCAN` step.
const CHUNK: usize = 500;
/// Keys per `SCAN` step of an outbox replay: larger steps, fewer round
/// trips while the breaker waits half-open.
const REPLAY_SCAN_STEP: usize = 2000;

/// Redis mode.
pub struct RedisCache {
    link: Arc<RedisLink>,
    store: Store,
    metrics: Arc<Metrics>,
    /// A `std::sync::Mutex`: held for set operations only.
    outbox: Mutex<Outbox>,
    /// Most invalidations kept; past it they collapse into one "delete
    /// every cache key" entry, which is correct, only coarser.
    max_outbox: usize,
    /// Gets in flight, shared by readers while no write intervened.
    reads: Arc<Reads>,
}

impl RedisCache {
    pub fn new(
        link: Arc<RedisLink>,
        store: Store,
        outbox: Vec<OutboxEntry>,
        max_outbox: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut pending = Outbox::default();
        for e in &outbox {
            pending.insert(e);
        }
        RedisCache {
            link,
            store,
            metrics,
            outbox: Mutex::new(pending),
            max_outbox,
            reads: Arc::new(Reads::default()),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read may not go to Redis while the key has an invalidation
    /// pending: Redis may still hold the superseded value.
    fn refuse_if_pending(&self, key: &str) -> Result<(), Error> {
        if self.outbox().covers(key) {
            self.metrics.count_cache_read("unavailable");
            return Err(Error::Unavailable(format!(
                "an invalidation of '{key}' is waiting for Redis; read the database"
            )));
        }
        Ok(())
    }

    /// Writes to these keys or prefixes were tried: whatever Redis did, no
    /// read may share a round trip sent before now (see [`Reads`]).
    fn written(&self, entries: &[OutboxEntry]) {
        for e in entries {
            match e {
                OutboxEntry::Key(k) => self.reads.written(k),
                OutboxEntry::Prefix(_) => self.reads.written_all(),
            }
        }
    }

    /// Queues invalidations durably; they run before Redis is read again.
    async fn defer(&self, entries: Vec<OutboxEntry>) -> Result<(), Error> {
        self.written(&entries);
        // Decide under the lock, write to the store after it.
        let collapsed = {
            let mut pending = self.outbox();
            if pending.len() + entries.len() > self.max_outbox {
                let replaced = pending.entries();
                *pending = Outbox::default();
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

    /// The Redis `GET`, shared by concurrent readers of `key` (see
    /// [`Reads`]).
    async fn coalesced_get(&self, key: &str) -> Read {
        let link = self.link.clone();
        let metrics = self.metrics.clone();
        let k = key.to_string();
        let fetch = async move {
            metrics.cache_redis_gets.inc();
            let k = &k;
            link.call(Route::Key(k), |mut c| async move {
                redis::cmd("GET")
                    .arg(k)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            })
            .await
            .map(|v| v.map(Arc::new))
        };
        let (read, joined) = self.reads.get(key, fetch);
        if joined == Joined::Shared {
            self.metrics.cache_coalesced.inc();
        }
        read.await
    }

    async fn set_one(&self, item: CacheItem) -> Result<WriteOutcome, Error> {
        let CacheItem { key, value, ttl_ms } = item;
        let k = key.as_str();
        let stored = self
            .link
            .call_write(Route::Key(k), |mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(k).arg(value);
                if let Some(ms) = ttl_ms {
                    cmd.arg("PX").arg(ms.max(1));
                }
                cmd.query_async::<()>(&mut c).await
            })
            .await;
        // Before the writer hears back, whether the SET took or not.
        self.reads.written(&key);
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

    /// `UNLINK`s `keys` in Redis; whatever Redis did, no read may share a
    /// round trip sent before now (see [`Reads`]).
    async fn unlink(&self, keys: &[String]) -> Result<u64, LinkError> {
        let unlinked = unlink(&self.link, false, keys).await;
        keys.iter().for_each(|k| self.reads.written(k));
        unlinked
    }

    /// Deletes keys now, or defers the deletion: the outcome says which.
    async fn invalidate(&self, keys: Vec<String>) -> Result<WriteOutcome, Error> {
        match self.unlink(&keys).await {
            Ok(_) => Ok(WriteOutcome::Invalidated),
            Err(_) => {
                self.defer(keys.into_iter().map(OutboxEntry::Key).collect())
                    .await?;
                Ok(WriteOutcome::Deferred)
            }
        }
    }

    /// `SCAN MATCH` + `UNLINK` of the keys starting with `prefix`,
    /// skipping the counter families (on every master of a cluster).
    async fn unlink_prefix(&self, prefix: &str) -> Result<u64, LinkError> {
        let mut scan = Scan::new(Some(&scan_pattern(prefix)), CHUNK, false);
        let mut removed = 0;
        while let Some(keys) = scan.next(&self.link).await? {
            let keys: Vec<String> = keys.into_iter().filter(|k| !is_forbidden(k)).collect();
            if !keys.is_empty() {
                removed += unlink(&self.link, false, &keys).await?;
            }
        }
        Ok(removed)
    }

    /// Replays the outbox: every queued invalidation runs in Redis, then
    /// leaves the outbox; one that cannot run yet (its master is open or
    /// fails) stays, and reads it covers are still refused.
    async fn replay(&self, link: &RedisLink) -> Result<(), RedisFailure> {
        let entries = self.outbox().entries();
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
            // A chunk whose master is open or fails stays in the outbox
            // (reads of its keys are still refused) for the next pass.
            match unlink(link, true, &names).await {
                Ok(_) => self.done(chunk.to_vec()).await,
                Err(e) => tracing::debug!(error = %e, "invalidations not replayed yet"),
            }
        }
        if !prefixes.is_empty() {
            // Every pending prefix in one pass over the keyspace, however
            // many there are (a prefix covering another absorbs it): the
            // breaker closes after one SCAN, not one per prefix.
            let set: HashSet<String> = prefixes
                .iter()
                .filter_map(|e| match e {
                    OutboxEntry::Prefix(p) => Some(p.clone()),
                    OutboxEntry::Key(_) => None,
                })
                .collect();
            let started = std::time::Instant::now();
            // Every master must be cleaned before a prefix leaves the
            // outbox; until then reads under it are refused.
            let removed = match self.unlink_covered(link, &set).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "prefix invalidations not replayed yet");
                    return Ok(());
                }
            };
            tracing::info!(
                prefixes = set.len(),
                removed,
                ms = started.elapsed().as_millis() as u64,
                "cache prefix invalidations replayed in one pass"
            );
            self.done(prefixes).await;
        }
        Ok(())
    }

    /// `SCAN` + `UNLINK` of every key one of `prefixes` covers, skipping the
    /// counter families, while the breaker is half-open.
    async fn unlink_covered(
        &self,
        link: &RedisLink,
        prefixes: &HashSet<String>,
    ) -> Result<u64, RedisFailure> {
        let mut scan = Scan::new(None, REPLAY_SCAN_STEP, true);
        let mut removed = 0;
        while let Some(keys) = scan.next(link).await.map_err(LinkError::into_failure)? {
            let doomed: Vec<String> = keys
                .into_iter()
                .filter(|k| !is_forbidden(k) && covered(prefixes, k))
                .collect();
            for chunk in doomed.chunks(CHUNK) {
                removed += unlink(link, true, chunk)
                    .await
                    .map_err(LinkError::into_failure)?;
            }
        }
        Ok(removed)
    }

    async fn done(&self, entries: Vec<OutboxEntry>) {
        self.written(&entries);
        {
            let mut pending = self.outbox();
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
            if !self.link.allows(Route::Key(key)) {
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
            // Each key once: a request naming one key many times costs one
            // value, shared.
            let mut unique: Vec<&str> = keys.iter().map(String::as_str).collect();
            unique.sort_unstable();
            unique.dedup();
            // One MGET per master, each through its master's breaker.
            let mut by_key: HashMap<&str, Option<Value>> = HashMap::with_capacity(unique.len());
            for group in self.link.by_master(&unique) {
                let names: Vec<&str> = group.iter().map(|&i| unique[i]).collect();
                let names = &names;
                let values: Vec<Option<Vec<u8>>> = self
                    .link
                    .call(Route::Key(names[0]), |mut c| async move {
                        redis::cmd("MGET").arg(names).query_async(&mut c).await
                    })
                    .await
                    .map_err(|e| {
                        self.metrics.count_cache_read("unavailable");
                        Error::from(e)
                    })?;
                by_key.extend(
                    names
                        .iter()
                        .copied()
                        .zip(values.into_iter().map(|v| v.map(Arc::new))),
                );
            }
            let answers: Vec<Option<Value>> = keys
                .iter()
                .map(|k| by_key.get(k.as_str()).cloned().flatten())
                .collect();
            for v in &answers {
                self.metrics
                    .count_cache_read(if v.is_some() { "hit" } else { "miss" });
            }
            Ok(answers)
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
            match self.unlink(keys).await {
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
            let unlinked = self.unlink_prefix(prefix).await;
            self.reads.written_all();
            match unlinked {
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
        self.outbox().len()
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

//! Local mode: a bounded in-memory cache (least recently used entries are
//! evicted past its byte budget), shared by all processes on the host.

use super::{worst, Cache, Value};
use crate::error::Error;
use crate::metrics::Metrics;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use seqd_protocol::{CacheItem, WriteOutcome};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

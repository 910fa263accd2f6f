//! The one place that chooses local or Redis mode and builds the
//! capabilities for it. Everything after start speaks to the capabilities
//! through their traits and never asks which mode it is in.

use crate::cache::local::LocalCache;
use crate::cache::redis::RedisCache;
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis::link::BULK_TIMEOUT_FACTOR;
use crate::redis::{Recovery, RedisLink, RedisPool, RedisTarget};
use crate::sequences::local::LocalSequences;
use crate::sequences::redis::RedisSequences;
use crate::sequences::Sequences;
use crate::store::Store;
use crate::tracker::classify::STREAM_TTL_SECS;
use crate::tracker::local::LocalTracker;
use crate::tracker::redis::RedisTracker;
use crate::tracker::Tracker;
use anyhow::Context as _;
use std::sync::Arc;

/// What requests are answered by.
pub struct Capabilities {
    pub sequences: Arc<dyn Sequences>,
    pub tracker: Arc<dyn Tracker>,
    pub cache: Arc<dyn Cache>,
    /// Redis mode only: the link and what must be recovered before its
    /// breaker closes (for the supervisor and for reloads).
    pub redis: Option<RedisMode>,
}

/// The parts of Redis mode that outlive start.
pub struct RedisMode {
    pub link: Arc<RedisLink>,
    pub recoveries: Vec<Arc<dyn Recovery>>,
}

/// Builds the capabilities `config` asks for on `store`: Redis mode when a
/// Redis is configured, local mode otherwise. Reads what an earlier run
/// left in the store (streams, the cache outbox).
pub async fn build(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    host: u16,
) -> anyhow::Result<Capabilities> {
    let streams = {
        let dir = config.data_dir.clone();
        let since = chrono::Utc::now().timestamp_millis() - STREAM_TTL_SECS as i64 * 1000;
        tokio::task::spawn_blocking(move || Store::load_streams(&dir, since))
            .await?
            .context("loading gap-tracker streams")?
    };
    let max_streams = config.max_streams as usize;
    let local_tracker = LocalTracker::new(store.clone(), streams, max_streams, metrics.clone());
    match config.redis_target().map_err(anyhow::Error::msg)? {
        None => Ok(local(config, store, metrics, local_tracker)),
        Some(target) => redis_mode(config, store, metrics, host, &target, local_tracker).await,
    }
}

/// Local mode: numbers, streams and the cache on this host only.
fn local(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    tracker: LocalTracker,
) -> Capabilities {
    tracing::info!(
        "mode: local (no Redis configured): numbers come from {} on this host only",
        config.data_dir.join("seqd.db").display()
    );
    let cache = LocalCache::new(config.local_cache_bytes as usize, metrics.clone());
    Capabilities {
        sequences: Arc::new(LocalSequences::new(store.clone())),
        tracker: Arc::new(tracker),
        cache: Arc::new(cache),
        redis: None,
    }
}

/// Redis mode on `target`: the link (the pools behind the breakers), and
/// each capability on it with the store as its fallback.
async fn redis_mode(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    host: u16,
    target: &RedisTarget,
    local_tracker: LocalTracker,
) -> anyhow::Result<Capabilities> {
    let link = Arc::new(redis_link(config, store, metrics, target)?);
    let sequences = Arc::new(RedisSequences::new(
        link.clone(),
        store.clone(),
        metrics.clone(),
        host,
        config.fallback(),
    ));
    let tracker = Arc::new(RedisTracker::new(link.clone(), local_tracker));
    let outbox = {
        let dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || Store::load_outbox(&dir))
            .await?
            .context("loading the cache outbox")?
    };
    if !outbox.is_empty() {
        tracing::info!(
            pending = outbox.len(),
            "cache invalidations left from an earlier run will be replayed"
        );
    }
    let max_outbox = config.max_outbox as usize;
    let cache = RedisCache::new(
        link.clone(),
        store.clone(),
        outbox,
        max_outbox,
        metrics.clone(),
    );
    let cache = Arc::new(cache);
    Ok(Capabilities {
        redis: Some(RedisMode {
            link,
            recoveries: vec![sequences.clone(), tracker.clone(), cache.clone()],
        }),
        sequences,
        tracker,
        cache,
    })
}

/// The pools to `target` (one per shard and a bulk one) behind the
/// breakers.
fn redis_link(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    target: &RedisTarget,
) -> anyhow::Result<RedisLink> {
    let pool_size = config.redis_pool_size as usize;
    let pool =
        RedisPool::new(target, pool_size, config.redis_timeout()).map_err(anyhow::Error::msg)?;
    tracing::info!(
        redis = %target.display(),
        topology = target.topology.name(),
        tls = target.tls.is_some(),
        wait_replicas = target.wait_replicas,
        pool = config.redis_pool_size,
        timeout_ms = config.redis_timeout_ms,
        breaker_threshold = config.breaker_threshold,
        fallback_daily = %config.fallback_daily,
        fallback_conv = %config.fallback_conv,
        pending_reconciliation = store.pending(),
        "mode: Redis at {} (topology={})", target.display(), target.topology.name()
    );
    // One connection for bulk work, with a longer timeout (see
    // `RedisLink::call_bulk`).
    let bulk = RedisPool::new(target, 1, config.redis_timeout() * BULK_TIMEOUT_FACTOR)
        .map_err(anyhow::Error::msg)?;
    Ok(RedisLink::new(
        pool,
        bulk,
        config.breaker(),
        metrics.clone(),
        target.topology.name(),
    ))
}

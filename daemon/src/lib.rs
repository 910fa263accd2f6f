//! # seqd
//!
//! A per-host sidecar that hands out sequence numbers that never repeat,
//! from Redis while it is healthy and from a SQLite store when it is not.
//!
//! # Layout
//!
//! The request path runs top to bottom:
//!
//! - [`server`]: binds the Unix socket, accepts connections (capped), drains
//!   on shutdown.
//! - [`transport`]: one connection; the first byte picks the
//!   [`transport::binary`] or [`transport::text`] protocol. Framing limits
//!   live here.
//! - [`dispatch`]: one exhaustive `match` from request to handler; timing,
//!   counting and the error-to-wire mapping of [`error`].
//! - [`capabilities`]: what seqd offers, independent of wire and backend:
//!   id rules and key schema ([`capabilities::sequences`]).
//! - [`backend`]: the [`backend::Sequences`] interface and its two
//!   implementations, local ([`backend::local`]) and Redis
//!   ([`backend::redis`]), both recording high-water marks in the SQLite
//!   [`backend::store`].
//!
//! Around them: [`config`] (flags and environment), [`context`] (the shared
//! state, passed as an `Arc`; there are no globals), [`metrics`].

pub mod backend;
pub mod capabilities;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod metrics;
pub mod metrics_http;
pub mod reload;
pub mod server;
pub mod systemd;
pub mod transport;

use crate::backend::cache::{Cache, LocalCache, RedisCache};
use crate::backend::link::{RedisLink, RedisPool};
use crate::backend::local::LocalSequences;
use crate::backend::redis::RedisSequences;
use crate::backend::store::Store;
use crate::backend::tracker::{LocalTracker, RedisTracker, Tracker};
use crate::backend::Sequences;
use crate::config::Config;
use crate::context::Context;
use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often expired high-water marks are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// Waits for SIGHUP and reloads, logging what changed.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    ctx: Arc<Context>,
    link: Option<Arc<RedisLink>>,
    log_reload: Option<LogReload>,
) {
    while hup.recv().await.is_some() {
        let current = ctx.config();
        let Some(path) = current.config.clone() else {
            tracing::warn!("SIGHUP: no --config file to re-read; nothing changed");
            continue;
        };
        let file = match reload::read_env_file(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "SIGHUP: cannot read the config file; nothing changed");
                continue;
            }
        };
        let (next, changed) = match reload::reloaded(&current, &file) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "SIGHUP: invalid setting; nothing changed");
                continue;
            }
        };
        if next.log != current.log {
            if let Some(apply) = &log_reload {
                if let Err(e) = apply(&next.log) {
                    tracing::warn!(error = %e, "SIGHUP: invalid log filter; keeping the old one");
                }
            }
        }
        if let Some(link) = &link {
            link.reconfigure(next.redis_timeout(), next.breaker());
        }
        ctx.replace_config(next);
        if changed.is_empty() {
            tracing::info!("SIGHUP: reloaded; nothing changed");
        } else {
            tracing::info!(changed = %changed.join(" "), "SIGHUP: reloaded");
        }
    }
}

/// The `STATUS=` text: mode, Redis and breaker.
async fn status_line(ctx: &Context) -> String {
    let health = ctx.sequences.health().await;
    let get = |k: &str| {
        health
            .iter()
            .find(|(n, _)| n == k)
            .map_or("-", |(_, v)| v.as_str())
            .to_string()
    };
    format!(
        "serving, mode {}, redis {}, breaker {}",
        ctx.sequences.mode(),
        get("redis"),
        get("breaker")
    )
}

/// Watchdog keep-alives at half systemd's interval, from the runtime that
/// serves requests (a stuck runtime stops them), and `STATUS=` updates when
/// Redis or the breaker change.
async fn keep_alive(ctx: Arc<Context>, notifier: Arc<systemd::Notifier>) {
    if !notifier.enabled() {
        return;
    }
    let watchdog = systemd::watchdog_interval();
    let every = watchdog
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    let mut last = String::new();
    loop {
        tokio::time::sleep(every).await;
        let status = status_line(&ctx).await;
        let mut msg = String::new();
        if watchdog.is_some() {
            msg.push_str("WATCHDOG=1");
        }
        if status != last {
            if !msg.is_empty() {
                msg.push('\n');
            }
            msg.push_str("STATUS=");
            msg.push_str(&status);
            last = status;
        }
        if !msg.is_empty() {
            notifier.notify(&msg);
        }
    }
}

/// Changes the log filter at run time (given by `main`, which owns the
/// subscriber).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Starts seqd with `config` and serves until `shutdown` completes; then
/// drains, flushes the store and removes the socket. SIGHUP reloads
/// (`reload`); `log_reload` applies a new log filter.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    log_reload: Option<LogReload>,
) -> anyhow::Result<()> {
    // Caught from the start: a SIGHUP (systemctl reload) must never end
    // seqd, even before it is ready.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let default_tz = capabilities::sequences::parse_tz(&config.default_tz)
        .map_err(|e| anyhow::anyhow!("--default-tz: {e}"))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.clone();
    let reserve = config.mark_reserve;
    let store = tokio::task::spawn_blocking(move || {
        Store::open(&data_dir, chrono::Utc::now().timestamp(), reserve)
    })
    .await?
    .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;

    let mut metrics = metrics::Metrics::new();
    metrics.register_store(store.counters());
    let metrics = Arc::new(metrics);
    let mut redis_link: Option<Arc<RedisLink>> = None;
    let stop_supervisor = tokio_util::sync::CancellationToken::new();
    let streams = {
        let dir = config.data_dir.clone();
        let now = chrono::Utc::now().timestamp_millis();
        tokio::task::spawn_blocking(move || Store::load_streams(&dir, now))
            .await?
            .context("loading gap-tracker streams")?
    };
    let local_tracker = LocalTracker::new(
        store.clone(),
        streams,
        config.max_streams as usize,
        metrics.clone(),
    );
    type Backends = (Arc<dyn Sequences>, Arc<dyn Tracker>, Arc<dyn Cache>);
    let (sequences, tracker, cache): Backends = match config.redis_target() {
        Some(target) => {
            let pool = RedisPool::new(
                &target,
                config.redis_pool_size as usize,
                config.redis_timeout(),
            )
            .map_err(anyhow::Error::msg)?;
            tracing::info!(
                redis = %target.display(),
                pool = config.redis_pool_size,
                timeout_ms = config.redis_timeout_ms,
                breaker_threshold = config.breaker_threshold,
                pending_reconciliation = store.pending(),
                "mode: Redis at {}", target.display()
            );
            let link = Arc::new(RedisLink::new(pool, config.breaker(), metrics.clone()));
            redis_link = Some(link.clone());
            let sequences = Arc::new(RedisSequences::new(
                link.clone(),
                store.clone(),
                metrics.clone(),
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
            let cache = Arc::new(RedisCache::new(
                link.clone(),
                store.clone(),
                outbox,
                config.max_outbox as usize,
                metrics.clone(),
            ));
            // Starts at once: a first health PING tells whether Redis is
            // there, and what an earlier run left pending gets written.
            tokio::spawn(backend::link::supervise(
                link,
                vec![sequences.clone(), tracker.clone(), cache.clone()],
                config.health_interval(),
                stop_supervisor.clone(),
            ));
            (sequences, tracker, cache)
        }
        None => {
            tracing::info!(
                "mode: local (no Redis configured): numbers come from {} on this host only",
                config.data_dir.join("seqd.db").display()
            );
            let cache = LocalCache::new(config.local_cache_bytes as usize, metrics.clone());
            (
                Arc::new(LocalSequences::new(store.clone())),
                Arc::new(local_tracker),
                Arc::new(cache),
            )
        }
    };

    let socket = match server::activated().context("taking the socket systemd passed")? {
        Some(s) => s,
        None => server::bind(&config.socket, config.socket_group.as_deref())
            .with_context(|| format!("binding {}", config.socket.display()))?,
    };
    if socket.activated() {
        tracing::info!(
            marks = store.len(),
            "seqd ready on the socket systemd passed (socket activation)"
        );
    } else {
        tracing::info!(socket = %config.socket.display(), marks = store.len(), "seqd ready");
    }

    let ctx = Arc::new(Context::new(
        config,
        default_tz,
        sequences,
        tracker,
        cache,
        store.clone(),
        metrics,
    ));
    let pruner = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                every.tick().await;
                match store.prune(chrono::Utc::now().timestamp()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "expired high-water marks pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning high-water marks failed"),
                }
            }
        })
    };

    let metrics_http = match ctx.config().metrics_listen {
        Some(addr) => {
            let listener = metrics_http::bind(addr).await?;
            tracing::info!(%addr, "metrics served over HTTP at /metrics");
            Some(tokio::spawn(metrics_http::serve(listener, ctx.clone())))
        }
        None => None,
    };
    // Ready: the socket is bound and the store is open.
    let notifier = Arc::new(systemd::Notifier::from_env());
    notifier.notify(&format!("READY=1\nSTATUS={}", status_line(&ctx).await));
    let keepalive = tokio::spawn(keep_alive(ctx.clone(), notifier.clone()));
    let reloader = tokio::spawn(reload_on_sighup(hup, ctx.clone(), redis_link, log_reload));
    let shutdown = {
        let notifier = notifier.clone();
        async move {
            shutdown.await;
            notifier.notify("STOPPING=1\nSTATUS=draining");
        }
    };
    server::run(&socket.listener, ctx, shutdown).await;
    keepalive.abort();
    reloader.abort();
    if let Some(task) = metrics_http {
        task.abort();
    }
    stop_supervisor.cancel();
    pruner.abort();
    store.close().await.context("closing the store")?;
    drop(socket);
    tracing::info!("seqd stopped");
    Ok(())
}

//! Start, serve, stop: [`run`] wires the store, the capabilities
//! ([`crate::mode`]), the server and the background tasks together.
//!
//! Every background task (the Redis supervisor, the store's pruner, the
//! systemd keep-alive, the SIGHUP reloader, the metrics listener) runs on
//! one [`TaskTracker`] and ends when one [`CancellationToken`] is
//! cancelled: on shutdown seqd cancels it and waits for all of them before
//! it closes the store, so none is cut off mid-write.

use crate::config::Config;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::reload::{self, LogReload};
use crate::server::BoundSocket;
use crate::shards::Shards;
use crate::store::{self, DataDirLock, Store};
use crate::tracker::classify::STREAM_TTL_SECS;
use crate::{metrics_http, mode, redis, sequences, server, systemd};
use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often expired high-water marks and old streams are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// Longest a gap-tracker state stays without an fsync: what a power loss
/// may undo of the tracker (a `kill -9` undoes nothing).
const STREAM_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Starts seqd with `config` and serves until `shutdown` completes; then
/// drains, stops the background tasks, flushes the store and removes the
/// socket. SIGHUP reloads ([`reload`]); `log_reload` applies a new log
/// filter.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    log_reload: Option<LogReload>,
) -> anyhow::Result<()> {
    // Caught from the start: a SIGHUP (systemctl reload) must never end
    // seqd, even before it is ready.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let default_tz = sequences::keys::parse_tz(&config.default_tz)
        .map_err(|e| anyhow::anyhow!("--default-tz: {e}"))?;
    let (dir_lock, store) = open_store(&config).await?;
    let mut metrics = Metrics::new();
    metrics.register_store(store.counters());
    let metrics = Arc::new(metrics);
    let host = host_id(&config);
    let caps = mode::build(&config, &store, &metrics, host).await?;
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let link = caps.redis.as_ref().map(|r| r.link.clone());
    if let Some(r) = caps.redis {
        // Starts at once: a first health PING tells whether Redis is
        // there, and what an earlier run left pending gets written.
        let interval = config.health_interval();
        tasks.spawn(redis::supervise(
            r.link,
            r.recoveries,
            interval,
            stop.clone(),
        ));
    }
    let socket = take_socket(&config, &store)?;
    let ctx = Arc::new(Context::new(
        config,
        default_tz,
        host,
        caps.sequences,
        caps.tracker,
        caps.cache,
        store.clone(),
        metrics,
    ));
    spawn_upkeep(&tasks, &stop, &ctx, &store).await?;
    let shards =
        Arc::new(Shards::start(ctx.config().shard_count()).context("starting the shards")?);
    tracing::info!(
        shards = shards.len(),
        "connections are served by shard threads"
    );
    let notifier = announce_ready(&tasks, &stop, &ctx, &shards).await;
    tasks.spawn(reload::reload_on_sighup(
        hup,
        ctx.clone(),
        link,
        log_reload,
        stop.clone(),
    ));
    let shutdown = async move {
        shutdown.await;
        notifier.notify("STOPPING=1\nSTATUS=draining");
    };
    server::run(&socket.listener, ctx, &shards, shutdown).await;
    wind_down(&stop, &tasks, &shards, &store).await?;
    drop(socket);
    drop(dir_lock);
    tracing::info!("seqd stopped");
    Ok(())
}

/// After the connections drained: the background tasks end before the
/// store closes, so none is cut off mid-write.
async fn wind_down(
    stop: &CancellationToken,
    tasks: &TaskTracker,
    shards: &Shards,
    store: &Store,
) -> anyhow::Result<()> {
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    shards.stop().await;
    store.close().await.context("closing the store")
}

/// This host's id, logged with where it came from.
fn host_id(config: &Config) -> u16 {
    let (host, from) = config.host();
    tracing::info!(
        host,
        from,
        "host id (numbers issued from the local store in Redis mode carry it)"
    );
    host
}

/// Locks the data directory (before anything in it is read: one seqd per
/// store) and opens the store.
async fn open_store(config: &Config) -> anyhow::Result<(DataDirLock, Store)> {
    let dir_lock = store::lock_data_dir(&config.data_dir)?;
    let data_dir = config.data_dir.clone();
    let reserve = config.mark_reserve;
    let opened = tokio::task::spawn_blocking(move || {
        Store::open(&data_dir, chrono::Utc::now().timestamp(), reserve)
    })
    .await?;
    let dir = config.data_dir.display();
    let store = match opened {
        Err(e) if e.is_disk_full() => anyhow::bail!(
            "no space left in {dir} for the store's first write: free space or grow its file \
             system (seqd needs 8 MiB for its mark journal, about 4 MiB for SQLite's \
             write-ahead log, and room for its keys; see docs/guarantees.md, \
             \"A full or failing disk\")"
        ),
        r => r.with_context(|| format!("opening the store in {dir}"))?,
    };
    store.limit_marks_in_memory(config.marks_in_memory as usize);
    Ok((dir_lock, store))
}

/// The socket systemd passed, or one bound here.
fn take_socket(config: &Config, store: &Store) -> anyhow::Result<BoundSocket> {
    let socket = match server::activated().context("taking the socket systemd passed")? {
        Some(s) => s,
        None => server::bind(&config.socket, config.socket_group.as_deref())
            .with_context(|| format!("binding {}", config.socket.display()))?,
    };
    let pending = store.pending();
    if socket.activated() {
        tracing::info!(
            pending_reconciliation = pending,
            "seqd ready on the socket systemd passed (socket activation)"
        );
    } else {
        tracing::info!(socket = %config.socket.display(), pending_reconciliation = pending, "seqd ready");
    }
    Ok(socket)
}

/// The store's periodic work (gap-tracker syncs, pruning) and, when
/// asked for, the metrics listener.
async fn spawn_upkeep(
    tasks: &TaskTracker,
    stop: &CancellationToken,
    ctx: &Arc<Context>,
    store: &Store,
) -> anyhow::Result<()> {
    tasks.spawn(ctx.failures.clone().sweep_every_second(stop.clone()));
    tasks.spawn(store.clone().sync_every(STREAM_SYNC_INTERVAL, stop.clone()));
    let ttl = Duration::from_secs(STREAM_TTL_SECS);
    tasks.spawn(store.clone().prune_every(PRUNE_INTERVAL, ttl, stop.clone()));
    if let Some(addr) = ctx.config().metrics_listen {
        let listener = metrics_http::bind(addr).await?;
        tracing::info!(%addr, "metrics served over HTTP at /metrics");
        let serve = metrics_http::serve(listener, ctx.clone(), tasks.clone(), stop.clone());
        tasks.spawn(serve);
    }
    Ok(())
}

/// Tells systemd that seqd is ready (the socket is bound, the store is
/// open) and starts the watchdog's keep-alives.
async fn announce_ready(
    tasks: &TaskTracker,
    stop: &CancellationToken,
    ctx: &Arc<Context>,
    shards: &Arc<Shards>,
) -> Arc<systemd::Notifier> {
    let notifier = Arc::new(systemd::Notifier::from_env());
    let status = systemd::status_line(ctx).await;
    notifier.notify(&format!("READY=1\nSTATUS={status}"));
    tasks.spawn(systemd::keep_alive(
        ctx.clone(),
        notifier.clone(),
        shards.clone(),
        stop.clone(),
    ));
    notifier
}

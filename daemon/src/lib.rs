//! # seqd
//!
//! A per-host sidecar that hands out sequence numbers that never repeat,
//! from Redis while it is healthy and from a SQLite store when it is not;
//! it also tracks market-data sequence gaps and serves a settings cache
//! with zero staleness.
//!
//! # Layout
//!
//! The request path runs top to bottom:
//!
//! - [`server`]: binds the Unix socket, accepts connections (capped), hands
//!   each to one of the [`shards`] (threads that serve connections, each
//!   with its own Redis connections), drains on shutdown.
//! - [`transport`]: one connection; the first byte picks the
//!   [`transport::binary`] or [`transport::text`] protocol. Framing limits
//!   live here.
//! - [`dispatch`]: one exhaustive `match` from request to the capability
//!   that owns it; timing, counting and the error-to-wire mapping of
//!   [`error`].
//! - Capabilities, each a directory with the same file roles — `mod.rs`
//!   (the trait, its types and guarantees, the request handlers),
//!   `local.rs` (local mode), `redis.rs` (Redis mode) and its rules:
//!   [`sequences`] (daily and conversation numbers), [`tracker`] (gap
//!   tracking), [`cache`] (settings cache).
//! - Backends: [`redis`] (target, pool, pipe, conn, scan, breaker, breakers, link,
//!   supervisor: one server, Sentinel or Cluster, over TLS or not) and
//!   [`store`] (the SQLite store: marks, journal, schema, writer, streams,
//!   outbox, tables).
//!
//! Around them: [`app`] (start, serve, stop), [`mode`] (the one place that
//! chooses local or Redis mode and builds the capabilities), [`config`]
//! (flags and environment), [`context`] (the shared state, passed as an
//! `Arc`; there are no globals), [`failures`] (failure logs by class,
//! never a line per request), [`status`] (`HEALTH`, `INFO`, `METRICS`), [`budget`] (the memory budget for
//! buffered frames), [`reload`] (SIGHUP), [`systemd`] (readiness,
//! watchdog, status), [`metrics`] and [`metrics_http`].
//!
//! # The dependency rule
//!
//! Backends (`redis`, `store`) import no capability. Capabilities
//! (`sequences`, `tracker`, `cache`) import backends, `error` and
//! `metrics`, never `dispatch`, `transport`, `server` or `app`.
//! `dispatch` imports capabilities; `app` and `mode` wire everything. No
//! two files import each other, directly or around a circle (a module may
//! use its ancestors' items). `daemon/tests/layout.rs` checks all three
//! rules on the sources.

pub mod app;
pub mod budget;
pub mod cache;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod failures;
pub mod metrics;
pub mod metrics_http;
pub mod mode;
pub mod redis;
pub mod reload;
pub mod sequences;
pub mod server;
pub mod shards;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tracker;
pub mod transport;

pub use app::run;
pub use reload::LogReload;

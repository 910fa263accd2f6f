//! Metrics, exposed in the Prometheus text format by `METRICS` (text) and
//! `Request::Metrics` (binary). Encoding is prometheus-client's, not ours.

use crate::store::StoreCounters;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: &'static str,
    /// `ok`, or the wire error code.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
    /// `redis` or `local` for answers that say where they came from, `-`
    /// for the rest (errors, pings, cache reads).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    /// `daily` or `conv`.
    pub kind: &'static str,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `binary` or `text`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The state entered: `closed`, `open`, `half_open`.
    pub to: &'static str,
}

/// The `master` label of the one breaker of a single server or Sentinel
/// master (and of local mode, which has none: it reads closed).
pub const DEFAULT_MASTER: &str = "default";

/// Whose breaker a gauge is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MasterLabels {
    pub master: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// `breaker_open` (Redis not tried) or `redis_failed` (tried, failed).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GapLabels {
    /// The exchange, or `other` past [`MAX_EXCHANGE_LABELS`] distinct ones.
    pub exchange: String,
    pub event: &'static str,
}

/// Distinct exchanges that get their own label; a client sending random
/// exchange names cannot grow the metrics without bound.
pub const MAX_EXCHANGE_LABELS: usize = 64;

fn latency_histogram() -> Histogram {
    // 10 µs .. ~5 s: covers a pipelined Redis round trip and a stalled one.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00001, 2.5, 15,
    ))
}

/// All of seqd's metrics. Families are cheap handles (`Arc` inside).
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub issued: Family<IssuedLabels, Counter>,
    pub connections_total: Family<ProtocolLabels, Counter>,
    pub connections_open: Gauge,
    pub local_marks: Gauge,
    pub buffered_bytes: Gauge,
    pub connections_limit: Gauge,
    pub resident_memory_bytes: Gauge,
    pub buffer_budget_bytes: Gauge,
    pub breaker_state: Family<MasterLabels, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub redis_consecutive_failures: Gauge,
    pub redis_master_changes: Counter,
    pub fallback_answers: Family<FallbackLabels, Counter>,
    pub pending_reconciliation: Gauge,
    pub reconciled_keys: Counter,
    pub redis_regressions: Counter,
    pub numbers_redrawn: Counter,
    pub fallback_possible_overlap: Counter,
    pub gap_events: Family<GapLabels, Counter>,
    pub cache_reads: Family<ResultLabels, Counter>,
    pub cache_writes: Family<ResultLabels, Counter>,
    pub cache_redis_gets: Counter,
    pub cache_coalesced: Counter,
    pub cache_outbox_replayed: Counter,
    pub cache_outbox: Gauge,
    pub store_state: Gauge,
    pub store_journal: Gauge,
    /// Exchanges that have a label of their own.
    exchanges: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Registers `metric` under `name` with `help`, and gives it back.
fn reg<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    // A table, one metric a line: kept as written.
    #[rustfmt::skip]
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("seqd");
        // Local mode has no breaker: the one "default" reads closed, as
        // HEALTH says; Redis mode replaces it with its masters' breakers.
        let breaker_state = Family::<MasterLabels, Gauge>::default();
        breaker_state
            .get_or_create(&MasterLabels {
                master: DEFAULT_MASTER.to_string(),
            })
            .set(0);
        // Each metric is registered where it is made, in exposition order:
        // name, help, metric.
        Metrics {
            resident_memory_bytes: reg(&mut r, "resident_memory_bytes", "seqd's resident memory (RSS), read at scrape time", Gauge::default()),
            connections_limit: reg(&mut r, "connections_limit", "Connections seqd serves at once: --max-connections, or fewer when the open-files limit is lower", Gauge::default()),
            buffered_bytes: reg(&mut r, "buffered_bytes", "Bytes of client frames and unsent replies held now, against --max-buffered-bytes", Gauge::default()),
            buffer_budget_bytes: reg(&mut r, "buffer_budget_bytes", "--max-buffered-bytes: what all connections together may hold", Gauge::default()),
            redis_master_changes: reg(&mut r, "redis_master_changes", "Times a new connection reached another Redis master than before (a failover, or a restarted Redis: another run id)", Counter::default()),
            fallback_possible_overlap: reg(&mut r, "fallback_possible_overlap", "Reconciliations that found Redis had moved past where this host's local numbers began: other hosts may hold the same bare numbers (told apart by host)", Counter::default()),
            cache_coalesced: reg(&mut r, "cache_coalesced", "Cache reads that joined another reader's Redis GET of the same key", Counter::default()),
            cache_reads: reg(&mut r, "cache_reads", "Cache reads, by result: hit, miss, unavailable", Family::<ResultLabels, Counter>::default()),
            cache_writes: reg(&mut r, "cache_writes", "Cache writes and deletes, by result: stored, invalidated, deferred", Family::<ResultLabels, Counter>::default()),
            cache_redis_gets: reg(&mut r, "cache_redis_gets", "Redis GETs issued for cache reads (coalesced readers share one)", Counter::default()),
            cache_outbox_replayed: reg(&mut r, "cache_outbox_replayed", "Deferred invalidations replayed in Redis", Counter::default()),
            cache_outbox: reg(&mut r, "cache_outbox", "Invalidations waiting for Redis", Gauge::default()),
            store_state: reg(&mut r, "store_state", "Whether the local store takes writes: 0 ok, 1 full (no space), 2 failing (another error)", Gauge::default()),
            store_journal: reg(&mut r, "store_journal", "1 while the mark journal takes numbers; 0 when every number waits for a commit (no space for it at start, or a copy-on-write file system)", Gauge::default()),
            requests: reg(&mut r, "requests", "Requests answered, by operation and outcome", Family::<RequestLabels, Counter>::default()),
            latency: reg(&mut r, "request_duration_seconds", "Time from a request's arrival to its answer, by operation and source", Family::new_with_constructor(latency_histogram as fn() -> Histogram)),
            issued: reg(&mut r, "sequence_numbers_issued", "Sequence numbers issued, by kind and source", Family::<IssuedLabels, Counter>::default()),
            connections_total: reg(&mut r, "connections", "Client connections accepted, by protocol", Family::<ProtocolLabels, Counter>::default()),
            connections_open: reg(&mut r, "connections_open", "Client connections open now", Gauge::default()),
            local_marks: reg(&mut r, "local_marks", "Keys with a high-water mark in the local store", Gauge::default()),
            breaker_state: reg(&mut r, "breaker_state", "Redis circuit breaker per master: 0 closed, 1 open, 2 half_open", breaker_state),
            breaker_transitions: reg(&mut r, "breaker_transitions", "Circuit breaker transitions, by state entered", Family::<TransitionLabels, Counter>::default()),
            redis_consecutive_failures: reg(&mut r, "redis_consecutive_failures", "Redis transport failures and timeouts since the last success", Gauge::default()),
            fallback_answers: reg(&mut r, "fallback_answers", "Sequence numbers issued from the local store in Redis mode, by reason", Family::<FallbackLabels, Counter>::default()),
            pending_reconciliation: reg(&mut r, "pending_reconciliation", "Keys with locally issued numbers that Redis has not been raised to yet", Gauge::default()),
            reconciled_keys: reg(&mut r, "reconciled_keys", "Redis counters raised to this seqd's high-water mark after local issuing", Counter::default()),
            redis_regressions: reg(&mut r, "redis_regressions", "Times Redis answered at or below a high-water mark with nothing pending (Redis lost data)", Counter::default()),
            numbers_redrawn: reg(&mut r, "numbers_redrawn", "Numbers drawn and not handed out because an earlier NEXT of the same counter on the same connection ended with a higher one: the later request drew again, so that one connection's numbers rise in the order sent", Counter::default()),
            gap_events: reg(&mut r, "gap_events", "Gap tracker events, by exchange and event kind", Family::<GapLabels, Counter>::default()),
            exchanges: Default::default(),
            registry: r,
        }
    }

    pub fn observe_request(
        &self,
        op: &'static str,
        source: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op, source })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts `n` gap-tracker events of one exchange and kind.
    pub fn count_gap_events(&self, exchange: &str, event: &'static str, n: u64) {
        let exchange = {
            let mut known = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(exchange) {
                exchange.to_string()
            } else if known.len() < MAX_EXCHANGE_LABELS {
                known.insert(exchange.to_string());
                exchange.to_string()
            } else {
                "other".to_string()
            }
        };
        self.gap_events
            .get_or_create(&GapLabels { exchange, event })
            .inc_by(n);
    }

    pub fn count_cache_read(&self, result: &'static str) {
        self.cache_reads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn count_cache_write(&self, result: &'static str) {
        self.cache_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn count_fallback(&self, reason: &'static str) {
        self.fallback_answers
            .get_or_create(&FallbackLabels { reason })
            .inc();
    }

    pub fn count_connection(&self, protocol: &'static str) {
        self.connections_total
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// Exports the store writer's counters.
    pub fn register_store(&mut self, counters: StoreCounters) {
        self.registry.register(
            "store_commits",
            "Transactions committed to the local store",
            counters.commits,
        );
        self.registry.register(
            "store_fsyncs",
            "Local store commits that fsynced (a key crossed its reserved ceiling, or a stream or outbox write)",
            counters.fsyncs,
        );
        self.registry.register(
            "store_commit_failures",
            "Local store commits that failed (a full or failing disk; each failed batch once)",
            counters.commit_failures,
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The levels read at scrape time rather than kept up to date on every
/// change: cheap to read, and nobody looks between scrapes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels {
    pub local_marks: usize,
    /// Bytes of the buffer budget in use, and its size.
    pub buffered: (usize, usize),
    pub pending_reconciliation: usize,
    pub cache_outbox: usize,
    /// The store's state: 0 ok, 1 full, 2 failing.
    pub store_state: i64,
    /// The mark journal takes numbers.
    pub store_journal: bool,
}

/// The Prometheus exposition, with the gauges read at scrape time updated
/// to `levels` first.
pub fn render(metrics: &Metrics, levels: Levels) -> String {
    metrics.local_marks.set(levels.local_marks as i64);
    metrics.buffered_bytes.set(levels.buffered.0 as i64);
    if let Some(rss) = resident_bytes() {
        metrics.resident_memory_bytes.set(rss as i64);
    }
    metrics.buffer_budget_bytes.set(levels.buffered.1 as i64);
    metrics
        .pending_reconciliation
        .set(levels.pending_reconciliation as i64);
    metrics.cache_outbox.set(levels.cache_outbox as i64);
    metrics.store_state.set(levels.store_state);
    metrics.store_journal.set(i64::from(levels.store_journal));
    metrics.encode()
}

/// This process's resident memory, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

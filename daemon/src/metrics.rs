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
    pub fallback_possible_overlap: Counter,
    pub gap_events: Family<GapLabels, Counter>,
    pub cache_reads: Family<ResultLabels, Counter>,
    pub cache_writes: Family<ResultLabels, Counter>,
    pub cache_redis_gets: Counter,
    pub cache_coalesced: Counter,
    pub cache_outbox_replayed: Counter,
    pub cache_outbox: Gauge,
    /// Exchanges that have a label of their own.
    exchanges: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("seqd");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<OpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let issued = Family::<IssuedLabels, Counter>::default();
        let connections_total = Family::<ProtocolLabels, Counter>::default();
        let connections_open = Gauge::default();
        let local_marks = Gauge::default();
        let resident_memory_bytes = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "seqd's resident memory (RSS), read at scrape time",
            resident_memory_bytes.clone(),
        );
        let connections_limit = Gauge::default();
        registry.register(
            "connections_limit",
            "Connections seqd serves at once: --max-connections, or fewer when the open-files limit is lower",
            connections_limit.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "buffered_bytes",
            "Bytes of client frames and unsent replies held now, against --max-buffered-bytes",
            buffered_bytes.clone(),
        );
        let buffer_budget_bytes = Gauge::default();
        registry.register(
            "buffer_budget_bytes",
            "--max-buffered-bytes: what all connections together may hold",
            buffer_budget_bytes.clone(),
        );
        let breaker_state = Family::<MasterLabels, Gauge>::default();
        // Local mode has no breaker: the one "default" reads closed, as
        // HEALTH says; Redis mode replaces it with its masters' breakers.
        breaker_state
            .get_or_create(&MasterLabels {
                master: DEFAULT_MASTER.to_string(),
            })
            .set(0);
        let breaker_transitions = Family::<TransitionLabels, Counter>::default();
        let redis_consecutive_failures = Gauge::default();
        let redis_master_changes = Counter::default();
        registry.register(
            "redis_master_changes",
            "Times a new connection reached another Redis master than before (a failover, or a restarted Redis: another run id)",
            redis_master_changes.clone(),
        );
        let fallback_answers = Family::<FallbackLabels, Counter>::default();
        let pending_reconciliation = Gauge::default();
        let reconciled_keys = Counter::default();
        let redis_regressions = Counter::default();
        let fallback_possible_overlap = Counter::default();
        registry.register(
            "fallback_possible_overlap",
            "Reconciliations that found Redis had moved past where this host's local numbers began: other hosts may hold the same bare numbers (told apart by host)",
            fallback_possible_overlap.clone(),
        );
        let gap_events = Family::<GapLabels, Counter>::default();
        let cache_reads = Family::<ResultLabels, Counter>::default();
        let cache_writes = Family::<ResultLabels, Counter>::default();
        let cache_redis_gets = Counter::default();
        let cache_coalesced = Counter::default();
        registry.register(
            "cache_coalesced",
            "Cache reads that joined another reader's Redis GET of the same key",
            cache_coalesced.clone(),
        );
        let cache_outbox_replayed = Counter::default();
        let cache_outbox = Gauge::default();
        registry.register(
            "cache_reads",
            "Cache reads, by result: hit, miss, unavailable",
            cache_reads.clone(),
        );
        registry.register(
            "cache_writes",
            "Cache writes and deletes, by result: stored, invalidated, deferred",
            cache_writes.clone(),
        );
        registry.register(
            "cache_redis_gets",
            "Redis GETs issued for cache reads (coalesced readers share one)",
            cache_redis_gets.clone(),
        );
        registry.register(
            "cache_outbox_replayed",
            "Deferred invalidations replayed in Redis",
            cache_outbox_replayed.clone(),
        );
        registry.register(
            "cache_outbox",
            "Invalidations waiting for Redis",
            cache_outbox.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by operation and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by operation and source",
            latency.clone(),
        );
        registry.register(
            "sequence_numbers_issued",
            "Sequence numbers issued, by kind and source",
            issued.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted, by protocol",
            connections_total.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        registry.register(
            "local_marks",
            "Keys with a high-water mark in the local store",
            local_marks.clone(),
        );
        registry.register(
            "breaker_state",
            "Redis circuit breaker per master: 0 closed, 1 open, 2 half_open",
            breaker_state.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Circuit breaker transitions, by state entered",
            breaker_transitions.clone(),
        );
        registry.register(
            "redis_consecutive_failures",
            "Redis transport failures and timeouts since the last success",
            redis_consecutive_failures.clone(),
        );
        registry.register(
            "fallback_answers",
            "Sequence numbers issued from the local store in Redis mode, by reason",
            fallback_answers.clone(),
        );
        registry.register(
            "pending_reconciliation",
            "Keys with locally issued numbers that Redis has not been raised to yet",
            pending_reconciliation.clone(),
        );
        registry.register(
            "reconciled_keys",
            "Redis counters raised to this seqd's high-water mark after local issuing",
            reconciled_keys.clone(),
        );
        registry.register(
            "redis_regressions",
            "Times Redis answered at or below a high-water mark with nothing pending (Redis lost data)",
            redis_regressions.clone(),
        );
        registry.register(
            "gap_events",
            "Gap tracker events, by exchange and event kind",
            gap_events.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            issued,
            connections_total,
            connections_open,
            local_marks,
            buffered_bytes,
            connections_limit,
            resident_memory_bytes,
            buffer_budget_bytes,
            breaker_state,
            breaker_transitions,
            redis_consecutive_failures,
            redis_master_changes,
            fallback_answers,
            pending_reconciliation,
            reconciled_keys,
            redis_regressions,
            fallback_possible_overlap,
            gap_events,
            cache_reads,
            cache_writes,
            cache_redis_gets,
            cache_coalesced,
            cache_outbox_replayed,
            cache_outbox,
            exchanges: Default::default(),
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

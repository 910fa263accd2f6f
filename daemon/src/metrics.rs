//! Metrics, exposed in the Prometheus text format by `METRICS` (text) and
//! `Request::Metrics` (binary). Encoding is prometheus-client's, not ours.

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
        registry.register(
            "requests",
            "Requests answered, by operation and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by operation",
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
        Metrics {
            registry,
            requests,
            latency,
            issued,
            connections_total,
            connections_open,
            local_marks,
        }
    }

    pub fn observe_request(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_connection(&self, protocol: &'static str) {
        self.connections_total
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

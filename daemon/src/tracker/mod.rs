//! Market-data gap tracking.
//!
//! # What it owns
//!
//! - [`classify`]: the classification itself, a pure function over a
//!   stream's state, with the name rules and the Redis key schema.
//! - [`gap_log`]: gap logs summarised per stream and interval.
//! - [`Tracker`]: where stream states live, with two implementations:
//!   [`local::LocalTracker`] (local mode: memory backed by the SQLite
//!   store) and [`redis::RedisTracker`] (Redis mode: the hash
//!   `k2:seq:{exchange}:{symbol}`, with the local tracker answering while
//!   Redis cannot).
//! - [`check`], [`check_batch`], [`stats`], [`clear`], [`clear_all`]: a
//!   request, validated ([`Checked`]) and answered.
//!
//! # What it guarantees (the promise to users: docs/gap-tracking.md)
//!
//! - A batch is classified in the order given, with results identical to
//!   checking its events one by one, also when a stream repeats in it: the
//!   same pure function ([`classify::check`]) runs in memory, and its Lua
//!   twin runs in Redis over the whole batch in one atomic script, so two
//!   consumers racing on one stream can never both see `normal`.
//! - Local state is committed to SQLite before the reply (it survives a
//!   restart). Streams changed while Redis was unreachable are written to
//!   Redis on recovery, unless Redis has moved further (never backwards).

pub mod classify;
pub mod gap_log;
pub mod local;
pub mod redis;

use crate::error::Error;
use crate::metrics::Metrics;
use classify::{Outcome, StreamState};
use futures_util::future::BoxFuture;
use gap_log::{GapLog, Verdict};
use seqd_protocol::{GapEvent, GapKind, GapResult, Response, Source, Stream, StreamStats};

/// A validated event: the stream's key and names, and the number.
#[derive(Debug, Clone)]
pub struct Checked {
    pub key: String,
    pub exchange: String,
    pub symbol: String,
    pub seq: u64,
}

/// Stream state storage.
pub trait Tracker: Send + Sync {
    /// Classifies `events` in order, atomically.
    fn check<'a>(&'a self, events: &'a [Checked]) -> BoxFuture<'a, Result<Vec<GapResult>, Error>>;
    fn stats<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StreamStats>, Error>>;
    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// Forgets every stream; returns how many were removed.
    fn clear_all(&self) -> BoxFuture<'_, Result<u64, Error>>;
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn result(o: Outcome, seq: u64, source: Source) -> GapResult {
    GapResult {
        kind: o.kind,
        seq,
        expected: o.expected,
        gap: o.gap,
        filled: o.filled,
        source,
    }
}

pub(crate) fn stats_of(st: &StreamState, source: Source) -> StreamStats {
    StreamStats {
        last_seq: st.last_seq,
        last_ts_ms: st.last_ts_ms,
        gap_count: st.gap_count,
        reset_count: st.reset_count,
        missing: st.missing.clone(),
        source,
    }
}

/// Counts an event and logs gaps by size (10 / 100 / 1000: info / warn /
/// error).
pub(crate) fn observe(log: &GapLog, e: &Checked, o: &Outcome) {
    if o.kind != GapKind::Gap || o.gap < classify::GAP_LOG_INFO {
        return;
    }
    let (ex, sym) = (&e.exchange, &e.symbol);
    match log.verdict(&e.key, o.gap, std::time::Instant::now()) {
        Verdict::Hold => return,
        Verdict::Log {
            held_back: Some((held_back, largest)),
        } => tracing::warn!(
            exchange = %ex, symbol = %sym, held_back, largest,
            "more sequence gaps on this stream were counted but not logged one by one (at most one line per stream every {} s)",
            gap_log::INTERVAL.as_secs()
        ),
        Verdict::Log { held_back: None } => {}
    }
    let expected = o.expected.unwrap_or(0);
    let (actual, gap) = (e.seq, o.gap);
    if gap >= classify::GAP_LOG_ERROR {
        tracing::error!(exchange = %ex, symbol = %sym, expected, actual, gap, "critical sequence gap");
    } else if gap >= classify::GAP_LOG_WARN {
        tracing::warn!(exchange = %ex, symbol = %sym, expected, actual, gap, "large sequence gap");
    } else {
        tracing::info!(exchange = %ex, symbol = %sym, expected, actual, gap, "sequence gap");
    }
}

/// Counts a batch's events per exchange and kind: one metric update per
/// pair, not per event.
pub(crate) fn count_events(metrics: &Metrics, events: &[Checked], results: &[GapResult]) {
    let mut counts: std::collections::HashMap<(&str, GapKind), u64> = Default::default();
    for (e, r) in events.iter().zip(results) {
        *counts.entry((e.exchange.as_str(), r.kind)).or_default() += 1;
    }
    for ((exchange, kind), n) in counts {
        metrics.count_gap_events(exchange, kind.as_str(), n);
    }
}

/// Validates a gap event (names, number) for the tracker.
pub fn checked(e: &GapEvent) -> Result<Checked, Error> {
    classify::validate_seq(e.seq)?;
    Ok(Checked {
        key: classify::stream_key(&e.stream)?,
        exchange: e.stream.exchange.clone(),
        symbol: e.stream.symbol.clone(),
        seq: e.seq,
    })
}

/// `GAP CHECK`: one event.
pub async fn check(t: &dyn Tracker, e: &GapEvent) -> Result<Response, Error> {
    let mut results = t.check(&[checked(e)?]).await?;
    let r = results
        .pop()
        .ok_or_else(|| Error::Internal("empty gap result".into()))?;
    Ok(Response::Gap(r))
}

/// A batch of events, in order, atomically; at most `max_batch` of them.
pub async fn check_batch(
    t: &dyn Tracker,
    events: &[GapEvent],
    max_batch: usize,
) -> Result<Response, Error> {
    if events.len() > max_batch {
        return Err(Error::TooLarge(format!(
            "batch of {} events; at most {max_batch} allowed",
            events.len(),
        )));
    }
    let events = events.iter().map(checked).collect::<Result<Vec<_>, _>>()?;
    Ok(Response::GapBatch(t.check(&events).await?))
}

/// `GAP STATS`: what is known about a stream.
pub async fn stats(t: &dyn Tracker, s: &Stream) -> Result<Response, Error> {
    Ok(Response::GapStats(
        t.stats(&classify::stream_key(s)?).await?,
    ))
}

/// `GAP CLEAR`: forgets a stream.
pub async fn clear(t: &dyn Tracker, s: &Stream) -> Result<Response, Error> {
    t.clear(&classify::stream_key(s)?).await?;
    Ok(Response::Done)
}

/// `GAP CLEARALL`: forgets every stream.
pub async fn clear_all(t: &dyn Tracker) -> Result<Response, Error> {
    Ok(Response::Cleared {
        count: t.clear_all().await?,
    })
}

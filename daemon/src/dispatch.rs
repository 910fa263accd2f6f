//! Dispatch: one exhaustive `match` from a request to the function that
//! answers it, plus the bookkeeping every request gets (timing, counting,
//! mapping errors to wire codes). Both protocols come through here.

use crate::backend::tracker::Checked;
use crate::backend::Issued;
use crate::capabilities::sequences::{self, DAILY_WIDTH_MAX};
use crate::capabilities::{cache, tracker};
use crate::context::Context;
use crate::error::Error;
use crate::metrics::IssuedLabels;
use chrono::Utc;
use seqd_protocol::{
    CacheItem, Conversation, DailyQuery, ErrorCode, GapEvent, Request, Response, WireError,
};
use std::time::Instant;

/// Answers one request: the outcome as it goes on the wire.
pub async fn serve(ctx: &Context, request: Request) -> Result<Response, WireError> {
    let op = request.op_name();
    let started = Instant::now();
    let result = handle(ctx, request).await.map_err(|e| {
        let wire = e.to_wire();
        match wire.code {
            ErrorCode::Internal | ErrorCode::Unavailable => {
                tracing::warn!(op, error = %e, "request failed")
            }
            _ => tracing::debug!(op, error = %e, "request refused"),
        }
        wire
    });
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    ctx.metrics
        .observe_request(op, source_of(&result), outcome, started.elapsed());
    result
}

/// Where an answer came from, for the latency histogram.
fn source_of(result: &Result<Response, WireError>) -> &'static str {
    match result {
        Ok(Response::Daily { source, .. } | Response::Conv { source, .. }) => source.as_str(),
        Ok(Response::Gap(r)) => r.source.as_str(),
        Ok(Response::GapBatch(r)) => r.first().map_or("-", |r| r.source.as_str()),
        Ok(Response::GapStats(Some(s))) => s.source.as_str(),
        _ => "-",
    }
}

async fn handle(ctx: &Context, request: Request) -> Result<Response, Error> {
    match request {
        Request::Ping => Ok(Response::Pong),
        Request::DailyNext(q) => daily(ctx, &q, true).await,
        Request::DailyGet(q) => daily(ctx, &q, false).await,
        Request::ConvNext(c) => conv(ctx, &c, true).await,
        Request::ConvGet(c) => conv(ctx, &c, false).await,
        Request::Health => health(ctx).await,
        Request::Metrics => Ok(metrics(ctx)),
        Request::GapCheck(e) => {
            let mut results = ctx.tracker.check(&[checked(&e)?]).await?;
            let r = results
                .pop()
                .ok_or_else(|| Error::Internal("empty gap result".into()))?;
            Ok(Response::Gap(r))
        }
        Request::GapBatch(events) => {
            if events.len() > ctx.config().max_batch as usize {
                return Err(Error::Wire(WireError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "batch of {} events; at most {} allowed",
                        events.len(),
                        ctx.config().max_batch
                    ),
                )));
            }
            let events = events.iter().map(checked).collect::<Result<Vec<_>, _>>()?;
            Ok(Response::GapBatch(ctx.tracker.check(&events).await?))
        }
        Request::GapStats(s) => Ok(Response::GapStats(
            ctx.tracker.stats(&tracker::stream_key(&s)?).await?,
        )),
        Request::GapClear(s) => {
            ctx.tracker.clear(&tracker::stream_key(&s)?).await?;
            Ok(Response::Done)
        }
        Request::GapClearAll => Ok(Response::Cleared {
            count: ctx.tracker.clear_all().await?,
        }),
        Request::CacheGet { key } => {
            cache::validate_key(&key)?;
            let v = ctx.cache.get(&key).await?;
            Ok(Response::CacheValue(v.map(|v| v.to_vec())))
        }
        Request::CacheGetMany { keys } => {
            keys.iter().try_for_each(|k| cache::validate_key(k))?;
            let v = ctx.cache.get_many(&keys).await?;
            Ok(Response::CacheValues(
                v.into_iter().map(|v| v.map(|v| v.to_vec())).collect(),
            ))
        }
        Request::CacheSet(item) => cache_set(ctx, vec![item]).await,
        Request::CacheSetMany(items) => cache_set(ctx, items).await,
        Request::CacheDel { keys } => {
            keys.iter().try_for_each(|k| cache::validate_key(k))?;
            let (count, deferred) = ctx.cache.del(&keys).await?;
            Ok(Response::CacheDeleted { count, deferred })
        }
        Request::CacheDelPrefix { prefix } => {
            cache::validate_prefix(&prefix)?;
            let (count, deferred) = ctx.cache.del_prefix(&prefix).await?;
            Ok(Response::CacheDeleted { count, deferred })
        }
    }
}

/// Validates every item before writing any.
async fn cache_set(ctx: &Context, items: Vec<CacheItem>) -> Result<Response, Error> {
    for item in &items {
        cache::validate_key(&item.key)?;
        cache::validate_value(&item.value, ctx.config().max_value as usize)?;
    }
    Ok(Response::CacheWritten(ctx.cache.set_many(items).await?))
}

/// Validates a gap event (names, number) for the tracker.
fn checked(e: &GapEvent) -> Result<Checked, Error> {
    tracker::validate_seq(e.seq)?;
    Ok(Checked {
        key: tracker::stream_key(&e.stream)?,
        exchange: e.stream.exchange.clone(),
        symbol: e.stream.symbol.clone(),
        seq: e.seq,
    })
}

async fn daily(ctx: &Context, q: &DailyQuery, next: bool) -> Result<Response, Error> {
    let k = sequences::daily_key(q, ctx.default_tz, Utc::now())?;
    let Issued { seq, source } = if next {
        let issued = ctx.sequences.next(&k.key).await?;
        count_issued(ctx, "daily", issued);
        if issued.seq == DAILY_WIDTH_MAX + 1 {
            // Exactly one request per key sees 100000, so this logs once
            // per key across all hosts sharing the counter.
            tracing::warn!(key = %k.key.key, "daily sequence passed 99999; numbers now have 6 digits (no wrap)");
        }
        issued
    } else {
        ctx.sequences.current(&k.key).await?
    };
    Ok(Response::Daily {
        seq,
        day: k.day,
        source,
    })
}

async fn conv(ctx: &Context, c: &Conversation, next: bool) -> Result<Response, Error> {
    let key = sequences::conv_key(c)?;
    let Issued { seq, source } = if next {
        let issued = ctx.sequences.next(&key).await?;
        count_issued(ctx, "conv", issued);
        issued
    } else {
        ctx.sequences.current(&key).await?
    };
    Ok(Response::Conv { seq, source })
}

fn count_issued(ctx: &Context, kind: &'static str, issued: Issued) {
    ctx.metrics
        .issued
        .get_or_create(&IssuedLabels {
            kind,
            source: issued.source.as_str(),
        })
        .inc();
}

async fn health(ctx: &Context) -> Result<Response, Error> {
    let mut fields = ctx.sequences.health().await;
    fields.extend(ctx.cache.health());
    fields.push(("mode".into(), ctx.sequences.mode().into()));
    fields.push(("local_marks".into(), ctx.store.len().to_string()));
    fields.push(("version".into(), env!("CARGO_PKG_VERSION").into()));
    Ok(Response::Health { fields })
}

fn metrics(ctx: &Context) -> Response {
    Response::Metrics {
        text: metrics_text(ctx),
    }
}

/// The Prometheus exposition, with the gauges read at scrape time updated.
pub fn metrics_text(ctx: &Context) -> String {
    ctx.metrics.local_marks.set(ctx.store.len() as i64);
    ctx.metrics
        .pending_reconciliation
        .set(ctx.store.pending() as i64);
    ctx.metrics.cache_outbox.set(ctx.cache.outbox_len() as i64);
    ctx.metrics.encode()
}

//! Dispatch: one exhaustive `match` from a request to the capability that
//! answers it, plus the bookkeeping every request gets (timing, counting,
//! mapping errors to wire codes through [`Error::to_wire`]). Both
//! protocols come through here.

use crate::context::Context;
use crate::error::Error;
use crate::sequences::keys::DailyRules;
use crate::{cache, sequences, tracker};
use seqd_protocol::{ErrorCode, Request, Response, WireError};
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
    let (seqs, m) = (&*ctx.sequences, &*ctx.metrics);
    let (gaps, cache) = (&*ctx.tracker, &*ctx.cache);
    let daily = DailyRules {
        default_tz: ctx.default_tz,
        window_days: ctx.config().daily_window_days,
    };
    match request {
        Request::Ping => Ok(Response::Pong),
        Request::DailyNext(q) => sequences::daily(seqs, m, daily, &q, true).await,
        Request::DailyGet(q) => sequences::daily(seqs, m, daily, &q, false).await,
        Request::ConvNext(c) => sequences::conv(seqs, m, &c, true).await,
        Request::ConvGet(c) => sequences::conv(seqs, m, &c, false).await,
        // HEALTH and METRICS span every capability: the context gathers them.
        Request::Health => Ok(Response::Health {
            fields: ctx.health().await,
        }),
        Request::Metrics => Ok(Response::Metrics {
            text: ctx.render_metrics(),
        }),
        Request::GapCheck(e) => tracker::check(gaps, &e).await,
        Request::GapBatch(events) => {
            tracker::check_batch(gaps, &events, ctx.config().max_batch as usize).await
        }
        Request::GapStats(s) => tracker::stats(gaps, &s).await,
        Request::GapClear(s) => tracker::clear(gaps, &s).await,
        Request::GapClearAll => tracker::clear_all(gaps).await,
        Request::CacheGet { key } => cache::get(cache, &key).await,
        Request::CacheGetMany { keys } => cache::get_many(cache, &keys).await,
        Request::CacheSet(item) => {
            cache::set(cache, vec![item], ctx.config().max_value as usize).await
        }
        Request::CacheSetMany(items) => {
            cache::set(cache, items, ctx.config().max_value as usize).await
        }
        Request::CacheDel { keys } => cache::del(cache, &keys).await,
        Request::CacheDelPrefix { prefix } => cache::del_prefix(cache, &prefix).await,
    }
}

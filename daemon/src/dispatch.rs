//! Dispatch: one exhaustive `match` from a request to the capability that
//! answers it, plus the bookkeeping every request gets (timing, counting,
//! mapping errors to wire codes through [`Error::to_wire`]). Both
//! protocols come through here.

use crate::context::Context;
use crate::error::Error;
use crate::failures::{Class, Level};
use crate::sequences::keys::DailyRules;
use crate::{cache, sequences, tracker};
use seqd_protocol::{Conversation, ErrorCode, Request, Response, Stream, WireError};
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

/// Answers one request: the outcome as it goes on the wire.
pub async fn serve(ctx: &Context, request: Request) -> Result<Response, WireError> {
    let op = request.op_name();
    let started = Instant::now();
    let result = handle(ctx, request).await.map_err(|e| {
        let wire = e.to_wire();
        let level = match wire.code {
            ErrorCode::Internal | ErrorCode::Unavailable => Level::Warn,
            _ => Level::Debug,
        };
        let class = Class {
            what: op,
            why: e.kind(),
        };
        ctx.failures.failed(class, level, &e);
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
        Ok(
            Response::Daily { source, .. }
            | Response::Conv { source, .. }
            | Response::DailyNumber { source, .. }
            | Response::ConvNumber { source, .. },
        ) => source.as_str(),
        Ok(Response::Gap(r)) => r.source.as_str(),
        Ok(Response::GapBatch(r)) => r.first().map_or("-", |r| r.source.as_str()),
        Ok(Response::GapStats(Some(s))) => s.source.as_str(),
        _ => "-",
    }
}

async fn handle(ctx: &Context, request: Request) -> Result<Response, Error> {
    let (seqs, m) = (&*ctx.sequences, &*ctx.metrics);
    let (gaps, cache) = (&*ctx.tracker, &*ctx.cache);
    let config = ctx.config();
    let daily = DailyRules {
        default_tz: ctx.default_tz,
        window_days: config.daily_window_days,
    };
    let limits = cache::Limits {
        max_keys: config.max_keys as usize,
        max_reply: config.max_frame,
    };
    let max_value = config.max_value as usize;
    match request {
        Request::Ping => Ok(Response::Pong),
        Request::DailyNext(q) => sequences::daily(seqs, m, daily, &q, true).await,
        Request::DailyGet(q) => sequences::daily(seqs, m, daily, &q, false).await,
        Request::ConvNext(c) => sequences::conv(seqs, m, &c, true).await,
        Request::ConvGet(c) => sequences::conv(seqs, m, &c, false).await,
        // HEALTH and METRICS span every capability: the context gathers them.
        Request::Health => Ok(Response::Health {
            fields: crate::status::health(ctx).await,
        }),
        Request::Metrics => Ok(Response::Metrics {
            text: crate::status::metrics(ctx),
        }),
        Request::Info => Ok(Response::Info {
            fields: crate::status::info(ctx),
        }),
        Request::GapCheck(e) => tracker::check(gaps, &e).await,
        Request::GapBatch(events) => {
            tracker::check_batch(gaps, &events, config.max_batch as usize).await
        }
        Request::GapStats(s) => tracker::stats(gaps, &s).await,
        Request::GapClear(s) => tracker::clear(gaps, &s).await,
        Request::GapClearAll => tracker::clear_all(gaps).await,
        Request::CacheGet { key } => cache::get(cache, &key).await,
        Request::CacheGetMany { keys } => cache::get_many(cache, &keys, limits).await,
        Request::CacheSet(item) => cache::set(cache, vec![item], max_value, limits).await,
        Request::CacheSetMany(items) => cache::set(cache, items, max_value, limits).await,
        Request::CacheDel { keys } => cache::del(cache, &keys, limits).await,
        Request::CacheDelPrefix { prefix } => cache::del_prefix(cache, &prefix).await,
    }
}

/// Which keys a request touches, as hashes (a collision only orders two
/// requests that did not need it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touches {
    /// Nothing with state (PING, HEALTH, METRICS).
    Nothing,
    /// These keys.
    Keys(Vec<u64>),
    /// Possibly every key (a prefix delete, clearing every stream): ordered
    /// after everything before it and before everything after it.
    Everything,
}

impl Touches {
    /// The hash of one key of a family (`"daily"`, `"gap"`, ...).
    pub fn key(family: &str, parts: &[&str]) -> u64 {
        // The same hash for the same key on every connection and shard
        // (fixed seed): it only orders one connection's requests.
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        family.hash(&mut h);
        parts.hash(&mut h);
        h.finish()
    }
}

/// True for requests whose reply may be large (cache values, the metrics):
/// a connection runs only a few of them at once (`transport::binary`).
pub fn reply_may_be_large(request: &Request) -> bool {
    matches!(
        request,
        Request::CacheGet { .. } | Request::CacheGetMany { .. } | Request::Metrics
    )
}

/// True for a draw: a request whose effect is the number it takes
/// (`NEXT`). A connection's draws of one key are ordered by their numbers
/// rather than run one after another (`transport::order`).
pub fn draws(request: &Request) -> bool {
    matches!(request, Request::DailyNext(_) | Request::ConvNext(_))
}

/// What a draw took: its counter's day (0 for counters without one) and
/// its number. Draws of one key are compared on the same day only: a
/// user's counters of two days are two counters.
pub type Drawn = (u32, u64);

/// The day (0 for a conversation) and number a draw's answer carries.
pub fn drawn(response: &Response) -> Option<Drawn> {
    match response {
        Response::Daily { seq, day, .. } | Response::DailyNumber { seq, day, .. } => {
            Some((*day, *seq))
        }
        Response::Conv { seq, .. } | Response::ConvNumber { seq, .. } => Some((0, *seq)),
        _ => None,
    }
}

/// True when a draw answered `result` after an earlier draw of its key
/// on its connection took `before`, on the same counter (the same day),
/// and did not come out above it: it must draw again so that the numbers
/// rise in the order the requests were sent.
pub fn drawn_too_low(before: Option<Drawn>, result: &Result<Response, WireError>) -> bool {
    match (before, result.as_ref().ok().and_then(drawn)) {
        (Some((day, earlier)), Some((this_day, seq))) => day == this_day && seq <= earlier,
        _ => false,
    }
}

/// Which keys `request` touches: a binary connection runs requests that
/// touch a common key in the order they were sent (`transport::order`).
/// Coarser than the real key where that is simpler and still correct: a
/// user's daily counters are one key whatever the day.
pub fn touches(request: &Request) -> Touches {
    let stream = |s: &Stream| Touches::key("gap", &[&s.exchange, &s.symbol]);
    let cache = |k: &str| Touches::key("cache", &[k]);
    match request {
        Request::Ping | Request::Health | Request::Metrics | Request::Info => Touches::Nothing,
        Request::DailyNext(q) | Request::DailyGet(q) => {
            Touches::Keys(vec![Touches::key("daily", &[&q.user])])
        }
        Request::ConvNext(c) | Request::ConvGet(c) => Touches::Keys(vec![match c {
            Conversation::Private { a, b } => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                Touches::key("private", &[lo, hi])
            }
            Conversation::Group { id } => Touches::key("group", &[id]),
        }]),
        Request::GapCheck(e) => Touches::Keys(vec![stream(&e.stream)]),
        Request::GapBatch(events) => {
            Touches::Keys(events.iter().map(|e| stream(&e.stream)).collect())
        }
        Request::GapStats(s) | Request::GapClear(s) => Touches::Keys(vec![stream(s)]),
        Request::CacheGet { key } => Touches::Keys(vec![cache(key)]),
        Request::CacheGetMany { keys } | Request::CacheDel { keys } => {
            Touches::Keys(keys.iter().map(|k| cache(k)).collect())
        }
        Request::CacheSet(item) => Touches::Keys(vec![cache(&item.key)]),
        Request::CacheSetMany(items) => {
            Touches::Keys(items.iter().map(|i| cache(&i.key)).collect())
        }
        Request::GapClearAll | Request::CacheDelPrefix { .. } => Touches::Everything,
    }
}

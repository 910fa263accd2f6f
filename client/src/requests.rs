//! Builders of requests, shared by the blocking and the async client.

use seqd_protocol::{CacheItem, DailyQuery, GapEvent, Request, Stream};
use std::time::Duration;

pub(crate) fn daily_query(user: &str, tz: Option<&str>, at_ms: Option<i64>) -> DailyQuery {
    DailyQuery {
        user: user.into(),
        tz: tz.map(Into::into),
        at_ms,
    }
}

/// A stream name pair.
pub fn stream(exchange: &str, symbol: &str) -> Stream {
    Stream {
        exchange: exchange.into(),
        symbol: symbol.into(),
    }
}

/// One event for [`Client::gap_batch`](crate::Client::gap_batch).
pub fn gap_event(exchange: &str, symbol: &str, seq: u64) -> GapEvent {
    GapEvent {
        stream: stream(exchange, symbol),
        seq,
    }
}

pub(crate) fn cache_set(key: &str, value: &[u8], ttl: Option<Duration>) -> Request {
    Request::CacheSet(CacheItem {
        key: key.into(),
        value: value.to_vec(),
        ttl_ms: ttl.map(|d| d.as_millis() as u64),
    })
}

pub(crate) fn cache_del(keys: &[&str]) -> Request {
    Request::CacheDel {
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

//! The settings cache.
//!
//! # What it owns
//!
//! - [`rules`]: which keys a caller may touch (counter families are
//!   `forbidden`) and how large a value may be.
//! - [`Cache`]: the storage interface, with two implementations:
//!   [`local::LocalCache`] (local mode: a bounded in-memory cache shared by
//!   every process on the host) and [`redis::RedisCache`] (Redis mode).
//! - [`get`], [`get_many`], [`set`], [`del`], [`del_prefix`]: a request,
//!   validated and answered.
//!
//! # What it guarantees (Redis mode; the promise to users: docs/cache.md)
//!
//! - **Zero staleness.** A write that cannot reach Redis deletes the key
//!   instead; if that fails too, or the breaker is open, the invalidation
//!   goes to a durable outbox in SQLite and the write is acknowledged as
//!   deferred. The outbox is replayed (every key deleted in Redis) before
//!   the breaker closes, and a key with an invalidation pending is never
//!   read from Redis meanwhile (`unavailable`), so no reader ever sees a
//!   value superseded during an outage — not even after a `kill -9` of
//!   seqd, since the outbox is loaded again at start.
//! - **Coalescing.** Concurrent gets of one key share one Redis round trip;
//!   every waiter gets the real result or error. A read never shares a
//!   round trip sent before a write it could have seen was acknowledged,
//!   and a reader that vanishes leaves nothing behind ([`reads`]).

pub mod local;
pub mod reads;
pub mod redis;
pub mod rules;

use crate::error::Error;
use futures_util::future::BoxFuture;
use seqd_protocol::{CacheItem, Response, WriteOutcome};
use std::sync::Arc;

/// A cached value, shared without copying among coalesced readers.
pub type Value = Arc<Vec<u8>>;

/// Settings cache storage.
pub trait Cache: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, Error>>;
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Value>>, Error>>;
    /// Writes items; the outcome of the whole call is the worst of its items.
    fn set_many(&self, items: Vec<CacheItem>) -> BoxFuture<'_, Result<WriteOutcome, Error>>;
    /// Returns keys removed now and whether the removal was deferred.
    fn del<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(u64, bool), Error>>;
    fn del_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(u64, bool), Error>>;
    /// `name=value` pairs for `HEALTH`.
    fn health(&self) -> Vec<(String, String)>;
    /// Invalidations waiting for Redis (0 in local mode).
    fn outbox_len(&self) -> usize;
}

pub(crate) fn worst(a: WriteOutcome, b: WriteOutcome) -> WriteOutcome {
    let rank = |o| match o {
        WriteOutcome::Stored => 0,
        WriteOutcome::Invalidated => 1,
        WriteOutcome::Deferred => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// `CACHE GET`: a value, or `None` on a miss.
pub async fn get(c: &dyn Cache, key: &str) -> Result<Response, Error> {
    rules::validate_key(key)?;
    let v = c.get(key).await?;
    Ok(Response::CacheValue(v.map(owned)))
}

/// Several values, one answer per key: at most `limits.max_keys` keys, and
/// a reply that fits one frame — checked on the shared values before any
/// is copied into the reply.
pub async fn get_many(c: &dyn Cache, keys: &[String], limits: Limits) -> Result<Response, Error> {
    limits.check_keys(keys.len())?;
    keys.iter().try_for_each(|k| rules::validate_key(k))?;
    let values = c.get_many(keys).await?;
    let total: usize = values.iter().flatten().map(|v| v.len() + 9).sum();
    if total > limits.max_reply {
        return Err(Error::TooLarge(format!(
            "the {} values come to {total} bytes, above the reply limit of {} bytes \
             (--max-frame); ask for fewer keys at a time",
            keys.len(),
            limits.max_reply
        )));
    }
    Ok(Response::CacheValues(
        values.into_iter().map(|v| v.map(owned)).collect(),
    ))
}

/// How much one cache request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Keys in one request (`--max-keys`).
    pub max_keys: usize,
    /// Bytes of one reply: it must fit one frame (`--max-frame`).
    pub max_reply: usize,
}

impl Limits {
    fn check_keys(&self, n: usize) -> Result<(), Error> {
        if n > self.max_keys {
            return Err(Error::TooLarge(format!(
                "{n} keys in one request; at most {} (--max-keys)",
                self.max_keys
            )));
        }
        Ok(())
    }
}

/// A value for a reply: moved out when nobody else holds it, copied
/// otherwise (a value shared by coalesced readers).
fn owned(v: Value) -> Vec<u8> {
    Arc::try_unwrap(v).unwrap_or_else(|shared| shared.to_vec())
}

/// `CACHE SET` of one or more items. Validates every item (values up to
/// `max_value` bytes) before writing any.
pub async fn set(
    c: &dyn Cache,
    items: Vec<CacheItem>,
    max_value: usize,
    limits: Limits,
) -> Result<Response, Error> {
    limits.check_keys(items.len())?;
    for item in &items {
        rules::validate_key(&item.key)?;
        rules::validate_value(&item.value, max_value)?;
    }
    Ok(Response::CacheWritten(c.set_many(items).await?))
}

/// `CACHE DEL`: invalidates keys.
pub async fn del(c: &dyn Cache, keys: &[String], limits: Limits) -> Result<Response, Error> {
    limits.check_keys(keys.len())?;
    keys.iter().try_for_each(|k| rules::validate_key(k))?;
    let (count, deferred) = c.del(keys).await?;
    Ok(Response::CacheDeleted { count, deferred })
}

/// `CACHE DELPREFIX`: invalidates every key with a prefix.
pub async fn del_prefix(c: &dyn Cache, prefix: &str) -> Result<Response, Error> {
    rules::validate_prefix(prefix)?;
    let (count, deferred) = c.del_prefix(prefix).await?;
    Ok(Response::CacheDeleted { count, deferred })
}

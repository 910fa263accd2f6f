//! Backends: where numbers come from and where they are kept.
//!
//! [`Sequences`] is the one interface the capabilities use. It has two
//! implementations: [`local::LocalSequences`] (local mode: the SQLite store
//! alone) and [`redis::RedisSequences`] (Redis mode: the shared Redis counter,
//! with every number also recorded in the store as a high-water mark, and
//! the store answering while Redis cannot).
//!
//! Redis is reached through [`link::RedisLink`]: a connection pool with
//! timeouts behind the [`breaker::Breaker`] state machine.

pub mod breaker;
pub mod cache;
pub mod link;
pub mod local;
pub mod pipe;
pub mod redis;
pub mod store;
pub mod tracker;

use crate::capabilities::sequences::SeqKey;
use crate::error::Error;
use futures_util::future::BoxFuture;
use seqd_protocol::Source;

/// A number and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub seq: u64,
    pub source: Source,
}

/// Issues and reads sequence numbers.
///
/// Implementations guarantee, per key and per seqd: a number returned by
/// [`Sequences::next`] is durable in the local store before it is returned,
/// and is greater than every number this seqd returned before for that key.
pub trait Sequences: Send + Sync {
    /// Issues the next number of `key`.
    fn next<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>>;

    /// Reads the latest number of `key` without issuing one (0 when none).
    fn current<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>>;

    /// `name=value` pairs for `HEALTH`, starting with `redis=` and `breaker=`.
    fn health(&self) -> BoxFuture<'_, Vec<(String, String)>>;

    /// "local" or "redis", for logs and `HEALTH`.
    fn mode(&self) -> &'static str;
}

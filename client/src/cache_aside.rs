//! Cache-aside and write-through over the settings cache (SPEC §6): the
//! database stays the truth, and seqd's zero-staleness rules decide when
//! the cache may be read or filled.

use crate::{CacheAsideError, Client};
use seqd_protocol::{ErrorCode, WriteOutcome};
use std::time::Duration;

impl Client {
    /// Cache-aside: a hit returns the cached value; a miss calls `loader`
    /// (your database read) and caches what it returns; while the cache is
    /// unavailable, `loader` alone answers and nothing is cached, so a
    /// value superseded during an outage is never written back.
    pub fn get_or_load<E>(
        &mut self,
        key: &str,
        ttl: Option<Duration>,
        loader: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, CacheAsideError<E>> {
        match self.cache_get(key) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => {
                let v = loader().map_err(CacheAsideError::Load)?;
                // A failed populate only costs a later miss.
                let _ = self.cache_set(key, &v, ttl);
                Ok(v)
            }
            Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                loader().map_err(CacheAsideError::Load)
            }
            Err(e) => Err(CacheAsideError::Cache(e)),
        }
    }

    /// Write-through: runs `db_write` (the database is the truth) and then
    /// updates the cache with `value`, or, with `None`, invalidates the key.
    /// The database write's error stops everything; the cache step's
    /// outcome is returned (`Deferred` still means no reader will see the
    /// old value).
    pub fn write_through<T, E>(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
        db_write: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, WriteOutcome), CacheAsideError<E>> {
        let written = db_write().map_err(CacheAsideError::Load)?;
        let outcome = match value {
            Some(v) => self
                .cache_set(key, v, ttl)
                .map_err(CacheAsideError::Cache)?,
            None => match self.cache_del(&[key]).map_err(CacheAsideError::Cache)? {
                (_, true) => WriteOutcome::Deferred,
                (_, false) => WriteOutcome::Invalidated,
            },
        };
        Ok((written, outcome))
    }
}

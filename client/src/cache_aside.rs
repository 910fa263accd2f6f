//! Cache-aside and write-through over the settings cache: the database
//! stays the truth, and seqd's zero-staleness rules decide when the cache
//! may be read or filled.
//!
//! Write-through never leaves a superseded value behind silently: once the
//! database is written, the cache step is tried again (reconnecting) until
//! the call's deadline, so a seqd restart does not leave the old value in
//! the cache; a retry invalidates rather than sets, because a value set
//! late could overwrite a newer writer's. If the deadline passes, the call
//! says so with [`CacheAsideError::NotInvalidated`].

use crate::{CacheAsideError, Client, ClientError};
use seqd_protocol::WriteOutcome;
use std::time::{Duration, Instant};

/// The first pause between two tries of a write-through's cache step; it
/// doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);

/// The next cache step of a write-through, after the database write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Store the new value (the first try, when there is one).
    Set,
    /// Invalidate the key.
    Del,
}

/// Decides, for the blocking and the async client alike, what a
/// write-through's cache step does after each failure: try again (after a
/// pause, invalidating), or give up with which error.
pub(crate) struct WriteThrough {
    deadline: Instant,
    pause: Duration,
    next: Step,
}

impl WriteThrough {
    /// Starts after the database write; `window` is how long the cache
    /// step may keep trying.
    pub(crate) fn new(has_value: bool, window: Duration) -> WriteThrough {
        WriteThrough {
            deadline: Instant::now() + window,
            pause: RETRY_PAUSE_MIN,
            next: if has_value { Step::Set } else { Step::Del },
        }
    }

    pub(crate) fn step(&self) -> Step {
        self.next
    }

    /// After a failed step: `Ok(pause)` to wait and try again
    /// (invalidating), or the error to end with.
    pub(crate) fn failed<E>(&mut self, e: ClientError) -> Result<Duration, CacheAsideError<E>> {
        let retry = e.is_unavailable();
        if !retry && self.next == Step::Del {
            // A key the cache refuses (forbidden, malformed) holds no value.
            return Err(CacheAsideError::Cache(e));
        }
        // A refused SET (too large, say) leaves the old value: invalidate.
        let was_set = self.next == Step::Set;
        self.next = Step::Del;
        if !retry && was_set {
            return Ok(Duration::ZERO);
        }
        let pause = self.pause;
        if Instant::now() + pause >= self.deadline {
            return Err(CacheAsideError::NotInvalidated(e));
        }
        self.pause = (self.pause * 2).min(RETRY_PAUSE_MAX);
        Ok(pause)
    }
}

/// The outcome of a successful invalidation.
pub(crate) fn deleted(deferred: bool) -> WriteOutcome {
    if deferred {
        WriteOutcome::Deferred
    } else {
        WriteOutcome::Invalidated
    }
}

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
            // seqd unreachable or the cache unavailable: the database
            // answers, and nothing is cached.
            Err(e) if e.is_unavailable() => loader().map_err(CacheAsideError::Load),
            Err(e) => Err(CacheAsideError::Cache(e)),
        }
    }

    /// Write-through: runs `db_write` (the database is the truth) and then
    /// updates the cache with `value`, or, with `None`, invalidates the key.
    /// The database write's error stops everything; the cache step's
    /// outcome is returned (`Deferred` still means no reader will see the
    /// old value). While seqd is unreachable the cache step is tried again,
    /// as an invalidation, for up to the client's timeout;
    /// [`CacheAsideError::NotInvalidated`] says the database was written
    /// but the cache could not be invalidated in that time.
    pub fn write_through<T, E>(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
        db_write: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, WriteOutcome), CacheAsideError<E>> {
        let written = db_write().map_err(CacheAsideError::Load)?;
        let mut steps = WriteThrough::new(value.is_some(), self.timeout());
        loop {
            let done = match (steps.step(), value) {
                (Step::Set, Some(v)) => self.cache_set(key, v, ttl),
                _ => self.cache_del(&[key]).map(|(_, d)| deleted(d)),
            };
            match done {
                Ok(outcome) => return Ok((written, outcome)),
                Err(e) => std::thread::sleep(steps.failed(e)?),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqd_protocol::{ErrorCode, WireError};

    fn refused(code: ErrorCode) -> ClientError {
        ClientError::Server(WireError {
            code,
            message: "no".into(),
        })
    }

    fn away() -> ClientError {
        ClientError::Io(std::io::ErrorKind::ConnectionRefused.into())
    }

    #[test]
    fn an_unreachable_seqd_is_tried_again_by_invalidating_with_growing_pauses() {
        let mut w = WriteThrough::new(true, Duration::from_secs(5));
        assert_eq!(w.step(), Step::Set);
        let first = w.failed::<()>(away()).unwrap();
        assert_eq!(first, RETRY_PAUSE_MIN);
        assert_eq!(w.step(), Step::Del, "a retry never sets a late value");
        let second = w.failed::<()>(away()).unwrap();
        assert_eq!(second, RETRY_PAUSE_MIN * 2);
        for _ in 0..10 {
            assert!(w.failed::<()>(away()).unwrap() <= RETRY_PAUSE_MAX);
        }
    }

    #[test]
    fn a_refused_set_invalidates_at_once_and_a_refused_key_ends_the_call() {
        let mut w = WriteThrough::new(true, Duration::from_secs(5));
        assert_eq!(
            w.failed::<()>(refused(ErrorCode::TooLarge)).unwrap(),
            Duration::ZERO
        );
        assert_eq!(w.step(), Step::Del);
        let end = w.failed::<()>(refused(ErrorCode::Forbidden)).unwrap_err();
        assert!(matches!(end, CacheAsideError::Cache(_)), "{end:?}");
    }

    #[test]
    fn past_the_window_the_call_says_the_cache_was_not_invalidated() {
        let mut w = WriteThrough::new(false, Duration::ZERO);
        let end = w.failed::<()>(away()).unwrap_err();
        assert!(matches!(end, CacheAsideError::NotInvalidated(_)), "{end:?}");
        let mut w = WriteThrough::new(false, Duration::ZERO);
        let end = w.failed::<()>(refused(ErrorCode::Unavailable)).unwrap_err();
        assert!(matches!(end, CacheAsideError::NotInvalidated(_)), "{end:?}");
    }
}

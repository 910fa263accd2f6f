//! Coalesced reads that never serve a value older than an acknowledged
//! write.
//!
//! # What it owns
//!
//! The Redis `GET`s in flight, by key, and a write *epoch* per stripe of
//! keys. Concurrent readers of a key share one round trip, under two rules:
//!
//! - **Fresh.** A reader joins a round trip only if no write to its key
//!   was acknowledged since that round trip's epoch was taken (before it
//!   was sent). Every write bumps its key's stripe after Redis acknowledged
//!   it and before the writer is answered, so a read that starts after an
//!   acknowledged write never shares a `GET` Redis may have run before it.
//! - **Independent of its leader.** The round trip runs as a task of its
//!   own and removes itself from the map when it ends: a reader that
//!   vanishes (its connection dropped) can neither leave a stale answer
//!   behind nor stop the others' answer.
//!
//! Stripes bound the memory (a fixed array, not a map of every key ever
//! written); two keys sharing a stripe only coalesce a little less.

use crate::redis::{LinkError, RedisFailure};
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A value read, shared without copying among coalesced readers.
pub type Read = Result<Option<Arc<Vec<u8>>>, LinkError>;

/// A read in flight, shared by the readers that joined it.
pub type PendingRead = Shared<BoxFuture<'static, Read>>;

/// Stripes of write epochs.
const STRIPES: usize = 256;

struct InFlight {
    /// The key's epoch when the round trip was created (before it was sent).
    epoch: u64,
    /// Tells this round trip from a later one for the same key.
    id: u64,
    read: Shared<BoxFuture<'static, Read>>,
}

/// See the module docs.
pub struct Reads {
    epochs: Box<[AtomicU64]>,
    hasher: RandomState,
    inflight: Mutex<HashMap<String, InFlight>>,
    next_id: AtomicU64,
}

impl Default for Reads {
    fn default() -> Self {
        Reads {
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }
}

/// What [`Reads::get`] did, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// This reader started the round trip.
    Led,
    /// This reader shared a round trip already in flight.
    Shared,
}

impl Reads {
    fn stripe(&self, key: &str) -> &AtomicU64 {
        &self.epochs[self.hasher.hash_one(key) as usize % STRIPES]
    }

    /// A write to `key` was acknowledged by Redis (call it before the
    /// writer is answered).
    pub fn written(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    /// Writes to unknown keys (a prefix delete) were acknowledged.
    pub fn written_all(&self) {
        for e in self.epochs.iter() {
            e.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The value of `key`, to await: a round trip in flight that is fresh
    /// enough, or `fetch` run as a task of its own. Whether it joined is
    /// known at once (before the answer, for the metrics).
    pub fn get<F>(self: &Arc<Self>, key: &str, fetch: F) -> (PendingRead, Joined)
    where
        F: Future<Output = Read> + Send + 'static,
    {
        // Taken before looking for (or sending) a round trip.
        let epoch = self.stripe(key).load(Ordering::SeqCst);
        let (read, joined) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(key) {
                Some(f) if f.epoch == epoch => (f.read.clone(), Joined::Shared),
                _ => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let this = self.clone();
                    let k = key.to_string();
                    let task = tokio::spawn(async move {
                        let out = fetch.await;
                        let mut inflight = this.inflight.lock().unwrap_or_else(|p| p.into_inner());
                        if inflight.get(&k).is_some_and(|f| f.id == id) {
                            inflight.remove(&k);
                        }
                        out
                    });
                    let read = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(LinkError::Failed(RedisFailure::Logic(format!(
                                "cache read task failed: {e}"
                            ))))
                        })
                    }
                    .boxed()
                    .shared();
                    // Replaces an older round trip, which still answers
                    // the readers that joined it.
                    inflight.insert(
                        key.to_string(),
                        InFlight {
                            epoch,
                            id,
                            read: read.clone(),
                        },
                    );
                    (read, Joined::Led)
                }
            }
        };
        (read, joined)
    }

    /// Round trips in flight (for tests and diagnostics).
    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn value(v: &str) -> Read {
        Ok(Some(Arc::new(v.as_bytes().to_vec())))
    }

    #[tokio::test]
    async fn readers_share_a_round_trip_until_a_write_is_acknowledged() {
        let reads = Arc::new(Reads::default());
        let (tx, rx) = oneshot::channel::<Read>();
        let first = {
            let reads = reads.clone();
            tokio::spawn(async move {
                let (read, joined) = reads.get("k", async { rx.await.unwrap() });
                (read.await, joined)
            })
        };
        tokio::task::yield_now().await;
        while reads.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        // A second reader joins the round trip in flight.
        let second = {
            let reads = reads.clone();
            tokio::spawn(async move {
                let (read, joined) = reads.get("k", async { value("never") });
                (read.await, joined)
            })
        };
        tokio::task::yield_now().await;
        // A write is acknowledged: a reader from now on must not join.
        reads.written("k");
        let (third, joined) = reads.get("k", async { value("v2") });
        assert_eq!(joined, Joined::Led);
        assert_eq!(third.await.unwrap(), value("v2").unwrap());
        tx.send(value("v1")).unwrap();
        let (r, j) = first.await.unwrap();
        assert_eq!((r.unwrap(), j), (value("v1").unwrap(), Joined::Led));
        let (r, j) = second.await.unwrap();
        assert_eq!((r.unwrap(), j), (value("v1").unwrap(), Joined::Shared));
        assert_eq!(reads.in_flight(), 0, "every round trip removed itself");
    }

    #[tokio::test]
    async fn a_vanished_leader_leaves_nothing_behind() {
        let reads = Arc::new(Reads::default());
        let (tx, rx) = oneshot::channel::<Read>();
        let leader = {
            let reads = reads.clone();
            tokio::spawn(async move {
                let (read, joined) = reads.get("k", async { rx.await.unwrap() });
                (read.await, joined)
            })
        };
        while reads.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        let _ = leader.await;
        tx.send(value("v1")).unwrap();
        while reads.in_flight() != 0 {
            tokio::task::yield_now().await;
        }
        let (later, joined) = reads.get("k", async { value("v2") });
        assert_eq!(joined, Joined::Led);
        assert_eq!(later.await.unwrap(), value("v2").unwrap());
    }
}

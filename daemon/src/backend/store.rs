//! The SQLite local store: per-key high-water marks.
//!
//! # What it owns
//!
//! For every sequence key this seqd has issued a number for, the highest
//! number issued (the *mark*), and when the mark may be forgotten. The marks
//! live twice: in memory (read on every request, without blocking) and in
//! `seqd.db` (so they survive a `kill -9`).
//!
//! # What it guarantees
//!
//! - A mark only ever rises, in memory and on disk.
//! - [`Store::issue`] and [`Store::raise`] return only after the new mark is
//!   committed to SQLite, so a number is durable before its reply leaves.
//! - SQLite runs on its own thread, fed by a bounded channel. The thread
//!   takes everything queued, writes it in one transaction and fsyncs once
//!   (group commit): N concurrent requests cost one commit, not N.
//! - Expired marks are pruned from disk and memory by [`Store::prune`].

use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The most operations the writer thread folds into one transaction. It
/// bounds the latency of the first request of a batch, not throughput.
const MAX_BATCH: usize = 4096;
/// Operations queued for the writer before senders wait (backpressure).
const QUEUE_CAPACITY: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("local store commit failed: {0}")]
    Commit(String),
    #[error("local store writer has stopped")]
    Stopped,
    #[error("local store: counter for {0} is exhausted")]
    Exhausted(String),
}

/// A key's mark in memory.
#[derive(Debug, Clone, Copy)]
struct Mark {
    value: u64,
    /// Unix seconds after which the mark may be dropped; `None` = never.
    expires_at: Option<i64>,
}

impl Mark {
    fn merge_expiry(a: Option<i64>, b: Option<i64>) -> Option<i64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        }
    }
}

enum Op {
    Raise {
        key: Arc<str>,
        value: u64,
        expires_at: Option<i64>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Prune {
        now: i64,
        done: oneshot::Sender<Result<usize, String>>,
    },
    Flush {
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// A `std::sync::Mutex`, not a Tokio one: nothing awaits while it is held.
    marks: Arc<Mutex<HashMap<Arc<str>, Mark>>>,
    tx: mpsc::Sender<Op>,
}

impl Store {
    /// Opens (or creates) `dir/seqd.db`, loads the marks that have not
    /// expired, and starts the writer thread.
    pub fn open(dir: &Path, now: i64) -> Result<Store, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        // WAL lets the writer commit without blocking readers; FULL makes
        // every commit durable against power loss, not only a process kill.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS marks (
                 key TEXT PRIMARY KEY,
                 value INTEGER NOT NULL,
                 expires_at INTEGER
             ) WITHOUT ROWID;",
        )?;
        let mut marks = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT key, value, expires_at FROM marks
                 WHERE expires_at IS NULL OR expires_at > ?1",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            for row in rows {
                let (key, value, expires_at) = row?;
                marks.insert(
                    Arc::from(key),
                    Mark {
                        value: value.max(0) as u64,
                        expires_at,
                    },
                );
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("seqd-store".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            marks: Arc::new(Mutex::new(marks)),
            tx,
        })
    }

    /// The highest number issued for `key` (0 when none), from memory.
    pub fn mark(&self, key: &str) -> u64 {
        self.lock().get(key).map_or(0, |m| m.value)
    }

    /// How many keys have a mark in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Mark>> {
        // A panic while holding this lock leaves the map consistent (every
        // update is a single insert), so poisoning is ignored.
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues the next number for `key` from the store alone (local mode):
    /// one more than the mark, made durable before it is returned.
    pub async fn issue(&self, key: &str, expires_at: Option<i64>) -> Result<u64, StoreError> {
        let (key, value) = {
            let mut marks = self.lock();
            let (key, mark) = match marks.get_key_value(key) {
                Some((k, m)) => (k.clone(), *m),
                None => (
                    Arc::<str>::from(key),
                    Mark {
                        value: 0,
                        expires_at,
                    },
                ),
            };
            let value = mark
                .value
                .checked_add(1)
                .filter(|v| *v <= i64::MAX as u64)
                .ok_or_else(|| StoreError::Exhausted(key.to_string()))?;
            marks.insert(
                key.clone(),
                Mark {
                    value,
                    expires_at: Mark::merge_expiry(mark.expires_at, expires_at),
                },
            );
            (key, value)
        };
        // Commits may complete out of order relative to the in-memory
        // increments; that is safe because the disk only keeps the maximum.
        self.persist(key, value, expires_at).await?;
        Ok(value)
    }

    /// Raises the mark of `key` to at least `value` (Redis mode: a number
    /// Redis issued), durable before it returns.
    pub async fn raise(
        &self,
        key: &str,
        value: u64,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        if value > i64::MAX as u64 {
            return Err(StoreError::Exhausted(key.to_string()));
        }
        let key = {
            let mut marks = self.lock();
            match marks.get_key_value(key) {
                Some((k, m)) => {
                    let k = k.clone();
                    let merged = Mark {
                        value: m.value.max(value),
                        expires_at: Mark::merge_expiry(m.expires_at, expires_at),
                    };
                    marks.insert(k.clone(), merged);
                    k
                }
                None => {
                    let k = Arc::<str>::from(key);
                    marks.insert(k.clone(), Mark { value, expires_at });
                    k
                }
            }
        };
        self.persist(key, value, expires_at).await
    }

    async fn persist(
        &self,
        key: Arc<str>,
        value: u64,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Raise {
                key,
                value,
                expires_at,
                done,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Commit(e)),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Drops marks that expired before `now`, on disk and in memory.
    /// Returns how many rows were deleted on disk.
    pub async fn prune(&self, now: i64) -> Result<usize, StoreError> {
        self.lock()
            .retain(|_, m| m.expires_at.is_none_or(|t| t > now));
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Prune { now, done })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match wait.await {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Flush { done })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match wait.await {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// The mark of `key` as stored on disk (for tests and diagnostics; runs
    /// a blocking query on its own connection).
    pub fn read_mark_from_disk(dir: &Path, key: &str) -> Result<Option<u64>, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        Ok(conn
            .query_row("SELECT value FROM marks WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|v| v as u64))
    }
}

/// The writer thread: one transaction per batch of queued operations.
fn writer(mut conn: Connection, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &batch).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = batch.len(), "local store commit failed");
        }
        for op in batch.drain(..) {
            match op {
                Op::Raise { done, .. } | Op::Flush { done } => {
                    let _ = done.send(result.clone().map(|_| ()));
                }
                Op::Prune { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

/// Writes one batch in one transaction; returns the rows pruned.
fn commit(conn: &mut Connection, batch: &[Op]) -> rusqlite::Result<usize> {
    // Fold repeated keys first: a hot key raised 500 times in one batch is
    // one row write.
    let mut folded: HashMap<&str, (u64, Option<i64>)> = HashMap::new();
    let mut prune_before = None;
    for op in batch {
        match op {
            Op::Raise {
                key,
                value,
                expires_at,
                ..
            } => {
                folded
                    .entry(key)
                    .and_modify(|(v, e)| {
                        *v = (*v).max(*value);
                        *e = Mark::merge_expiry(*e, *expires_at);
                    })
                    .or_insert((*value, *expires_at));
            }
            Op::Prune { now, .. } => prune_before = Some(*now),
            Op::Flush { .. } => {}
        }
    }
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO marks (key, value, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET
                 value = max(value, excluded.value),
                 expires_at = CASE
                     WHEN expires_at IS NULL OR excluded.expires_at IS NULL THEN NULL
                     ELSE max(expires_at, excluded.expires_at) END",
        )?;
        for (key, (value, expires_at)) in &folded {
            upsert.execute(params![key, *value as i64, expires_at])?;
        }
    }
    let pruned = match prune_before {
        Some(now) => tx.execute(
            "DELETE FROM marks WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            [now],
        )?,
        None => 0,
    };
    tx.commit()?;
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issued_numbers_survive_reopen_and_only_rise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        assert_eq!(store.issue("k", None).await.unwrap(), 1);
        assert_eq!(store.issue("k", None).await.unwrap(), 2);
        store.raise("k", 10, None).await.unwrap();
        store.raise("k", 5, None).await.unwrap();
        assert_eq!(store.mark("k"), 10);
        assert_eq!(
            Store::read_mark_from_disk(dir.path(), "k").unwrap(),
            Some(10)
        );
        drop(store);
        let store = Store::open(dir.path(), 0).unwrap();
        assert_eq!(store.mark("k"), 10);
        assert_eq!(store.issue("k", None).await.unwrap(), 11);
    }

    #[tokio::test]
    async fn concurrent_issues_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(
                async move { s.issue("hot", None).await.unwrap() },
            ));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (1..=200).collect::<Vec<u64>>());
        assert_eq!(
            Store::read_mark_from_disk(dir.path(), "hot").unwrap(),
            Some(200)
        );
    }

    #[tokio::test]
    async fn prune_drops_only_expired_marks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        store.raise("old", 3, Some(100)).await.unwrap();
        store.raise("new", 4, Some(300)).await.unwrap();
        store.raise("forever", 5, None).await.unwrap();
        assert_eq!(store.prune(200).await.unwrap(), 1);
        assert_eq!(store.mark("old"), 0);
        assert_eq!(store.mark("new"), 4);
        assert_eq!(store.mark("forever"), 5);
        assert_eq!(Store::read_mark_from_disk(dir.path(), "old").unwrap(), None);
        // A reopen at a later time does not load marks that expired meanwhile.
        drop(store);
        let store = Store::open(dir.path(), 400).unwrap();
        assert_eq!(store.mark("new"), 0);
        assert_eq!(store.mark("forever"), 5);
    }
}

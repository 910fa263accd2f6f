//! The writer thread: every SQLite write, grouped.
//!
//! # What it owns
//!
//! The store's one writing connection, fed by a bounded channel of
//! `Op`s. It takes everything queued and writes it in one transaction
//! (group commit): N concurrent requests cost one commit and at most one
//! fsync.
//!
//! # The fsync policy
//!
//! Most commits are a plain WAL write (`synchronous=NORMAL`: durable across
//! a process crash, not a power loss). A commit fsyncs (`FULL`) when a
//! key's number passes its reserved *ceiling* (the ceiling then rises to
//! the number plus `reserve`), and for every write a power loss must not
//! undo (`Op::must_sync`). A ceiling is trusted only once its commit
//! returned. A daily key (one that expires) that has no ceiling yet has an
//! implied one of `reserve`, written with its first row but not fsynced:
//! the first numbers of a cold daily key cost no fsync (what a power loss
//! may then lose whole is covered by `marks::Implied`). Gap-tracker stream
//! states are plain writes too: a power loss
//! may undo the last second of them (`Store::sync_every` fsyncs within a
//! second), never a `kill -9`.

use super::marks::Mark;
use super::outbox::{self, OutboxEntry};
use super::schema::{compact, load_ceilings, touch};
use super::streams::{self, StreamRow};
use super::StoreCounters;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most operations the writer thread folds into one transaction. It
/// bounds the latency of the first request of a batch, not throughput.
pub(super) const MAX_BATCH: usize = 4096;
/// Mark-log rows that trigger a fold into `marks` (see `schema::compact`).
const COMPACT_AT: usize = 32 * 1024;
/// Operations queued for the writer before senders wait (backpressure).
pub(super) const QUEUE_CAPACITY: usize = 16 * 1024;

/// One write, and where its outcome goes.
pub(super) enum Op {
    Raise {
        key: Arc<str>,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        /// `Some` when the number came from the store, not Redis: the mark
        /// the key's local numbers began from.
        dirty_from: Option<u64>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Redis holds at least `value` for `key` now.
    Reconciled {
        key: Arc<str>,
        value: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Drop marks that expired before `now`.
    Prune {
        now: i64,
        done: oneshot::Sender<Result<usize, String>>,
    },
    /// Drop streams last updated at or before `before_ms`.
    PruneStreams {
        before_ms: i64,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Commit everything queued, durably.
    Flush {
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Flush, record a clean stop and end the writer.
    Close {
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Gap-tracker stream states to write.
    SaveStreams {
        rows: Vec<StreamRow>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Streams to forget; `None` = all.
    DeleteStreams {
        keys: Option<Vec<String>>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Streams now in Redis: clear `dirty` where the state is unchanged
    /// (same `last_ts`).
    StreamsSynced {
        keys: Vec<(String, i64)>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Cache invalidations to run in Redis later (`add`), or done (remove).
    Outbox {
        entries: Vec<OutboxEntry>,
        add: bool,
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// The writer thread's state: the connection, and each key's ceiling as
/// last fsynced.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) reserve: u64,
    pub(super) ceilings: HashMap<Arc<str>, u64>,
    /// The connection's `synchronous` level is FULL now.
    pub(super) full: bool,
    /// Rows in the mark log since the last fold.
    pub(super) logged: usize,
    pub(super) counters: StoreCounters,
}

impl Writer {
    /// One transaction per batch of queued operations, until the store is
    /// closed or every handle is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut closing = false;
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            closing = batch.iter().any(|op| matches!(op, Op::Close { .. }));
            let result = self.commit(&batch).map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(error = %e, ops = batch.len(), "local store commit failed");
            }
            for op in batch.drain(..) {
                match op {
                    Op::Raise { done, .. }
                    | Op::Reconciled { done, .. }
                    | Op::Flush { done }
                    | Op::Close { done }
                    | Op::SaveStreams { done, .. }
                    | Op::DeleteStreams { done, .. }
                    | Op::StreamsSynced { done, .. }
                    | Op::PruneStreams { done, .. }
                    | Op::Outbox { done, .. } => {
                        let _ = done.send(result.clone().map(|_| ()));
                    }
                    Op::Prune { done, .. } => {
                        let _ = done.send(result.clone());
                    }
                }
            }
            if closing {
                break;
            }
        }
        if !closing {
            // Every handle is gone without a close (a failed start, tests):
            // make what was written durable, without claiming a clean stop.
            let _ = self.conn.pragma_update(None, "synchronous", "FULL");
            let _ = touch(&self.conn);
        }
    }

    /// Writes one batch in one transaction, fsynced when it must be;
    /// returns the marks pruned.
    fn commit(&mut self, batch: &[Op]) -> rusqlite::Result<usize> {
        let (folded, reconciled, prune_before) = fold(batch);
        // New ceilings for the keys whose numbers pass theirs (fsynced),
        // and the implied ceiling of new daily keys (written, not fsynced).
        let mut raised: Vec<(Arc<str>, u64)> = Vec::new();
        let mut implied: Vec<(Arc<str>, u64)> = Vec::new();
        for (key, row) in &folded {
            let known = self.ceilings.get(&***key).copied();
            let daily = row.expires_at.is_some();
            let ceiling = known.unwrap_or(if daily { self.reserve } else { 0 });
            if row.value > ceiling {
                let new = row.value.saturating_add(self.reserve).min(i64::MAX as u64);
                raised.push(((*key).clone(), new));
            } else if known.is_none() {
                implied.push(((*key).clone(), ceiling));
            }
        }
        let sync = !raised.is_empty() || batch.iter().any(Op::must_sync);
        if sync != self.full {
            let level = if sync { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level)?;
            self.full = sync;
        }
        let tx = self.conn.transaction()?;
        // Prunes and a clean stop work on `marks` in place: fold the log in
        // first, as for a log grown long. (Reconciliations fold it inside
        // `write_marks`, after this batch's rows.)
        let fold_first = prune_before.is_some()
            || self.logged >= COMPACT_AT
            || batch.iter().any(|op| matches!(op, Op::Close { .. }));
        if fold_first {
            compact(&tx)?;
            self.logged = 0;
        }
        write_marks(&tx, &folded, &raised, &implied, &reconciled)?;
        self.logged = if reconciled.is_empty() {
            self.logged + folded.len()
        } else {
            0
        };
        write_others(&tx, batch)?;
        let pruned = match prune_before {
            Some(now) => prune(&tx, now)?,
            None => 0,
        };
        if batch.iter().any(|op| matches!(op, Op::Flush { .. })) {
            touch(&tx)?;
        }
        if batch.iter().any(|op| matches!(op, Op::Close { .. })) {
            tx.execute("UPDATE meta SET value = '1' WHERE name = 'clean'", [])?;
        }
        tx.commit()?;
        self.counters.commits.inc();
        let unsynced = &self.counters.streams_unsynced;
        if sync {
            self.counters.fsyncs.inc();
            unsynced.store(false, std::sync::atomic::Ordering::Relaxed);
        } else if batch
            .iter()
            .any(|op| matches!(op, Op::SaveStreams { .. } | Op::StreamsSynced { .. }))
        {
            unsynced.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Only now are the new ceilings durable. (An implied one is the
        // same whether or not it reached the disk.)
        self.ceilings.extend(raised);
        self.ceilings.extend(implied);
        if prune_before.is_some() {
            self.ceilings = load_ceilings(&self.conn)?;
        }
        Ok(pruned)
    }
}

impl Op {
    /// Writes a power loss must not undo: an invalidation promised to
    /// readers, a cleared stream, and whatever a flush or close waits for.
    /// (A stream's state is a plain write, fsynced within a second: the
    /// tracker's bounded loss, see the module docs.)
    fn must_sync(&self) -> bool {
        match self {
            Op::Raise { .. }
            | Op::Reconciled { .. }
            | Op::Prune { .. }
            | Op::PruneStreams { .. }
            | Op::SaveStreams { .. }
            | Op::StreamsSynced { .. } => false,
            Op::Flush { .. } | Op::Close { .. } | Op::DeleteStreams { .. } | Op::Outbox { .. } => {
                true
            }
        }
    }
}

/// What one batch writes for a key: the highest value, the latest expiry,
/// the TTL, and whether any of its numbers came from the store (dirty, and
/// from which mark).
struct Row {
    value: u64,
    expires_at: Option<i64>,
    ttl: Option<u64>,
    dirty_from: Option<u64>,
}

impl Row {
    fn merge(&mut self, other: &Row) {
        self.value = self.value.max(other.value);
        self.expires_at = Mark::merge_expiry(self.expires_at, other.expires_at);
        self.ttl = self.ttl.or(other.ttl);
        self.dirty_from = match (self.dirty_from, other.dirty_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A batch's mark writes folded by key (a hot key raised 500 times in one
/// batch is one row write), its reconciliations, and its prune time.
type Folded<'a> = (HashMap<&'a Arc<str>, Row>, Vec<(&'a str, u64)>, Option<i64>);

fn fold(batch: &[Op]) -> Folded<'_> {
    let mut folded: HashMap<&Arc<str>, Row> = HashMap::new();
    let mut reconciled: Vec<(&str, u64)> = Vec::new();
    let mut prune_before = None;
    for op in batch {
        match op {
            Op::Raise {
                key,
                value,
                expires_at,
                ttl,
                dirty_from,
                ..
            } => {
                let row = Row {
                    value: *value,
                    expires_at: *expires_at,
                    ttl: *ttl,
                    dirty_from: *dirty_from,
                };
                folded
                    .entry(key)
                    .and_modify(|r| r.merge(&row))
                    .or_insert(row);
            }
            Op::Reconciled { key, value, .. } => reconciled.push((key, *value)),
            Op::Prune { now, .. } => prune_before = Some(*now),
            Op::SaveStreams { .. }
            | Op::DeleteStreams { .. }
            | Op::StreamsSynced { .. }
            | Op::PruneStreams { .. }
            | Op::Outbox { .. }
            | Op::Flush { .. }
            | Op::Close { .. } => {}
        }
    }
    (folded, reconciled, prune_before)
}

fn write_marks(
    tx: &rusqlite::Transaction<'_>,
    folded: &HashMap<&Arc<str>, Row>,
    raised: &[(Arc<str>, u64)],
    implied: &[(Arc<str>, u64)],
    reconciled: &[(&str, u64)],
) -> rusqlite::Result<()> {
    let ceiling_of: HashMap<&str, u64> = raised
        .iter()
        .chain(implied)
        .map(|(k, c)| (&**k, *c))
        .collect();
    // Appended to the log (one or two pages), folded into `marks` later.
    let mut upsert = tx.prepare_cached(
        "INSERT INTO mark_log (key, value, expires_at, dirty, ttl, ceiling, dirty_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (key, r) in folded {
        let key: &str = key;
        upsert.execute(params![
            key,
            r.value as i64,
            r.expires_at,
            r.dirty_from.is_some() as i64,
            r.ttl.map(|t| t as i64),
            ceiling_of.get(key).map(|c| *c as i64),
            r.dirty_from.map(|f| f as i64)
        ])?;
    }
    // After the raises of the same batch (folded in with the rest of the
    // log first): a key issued past the reconciled value stays dirty.
    if !reconciled.is_empty() {
        compact(tx)?;
    }
    let mut clean = tx.prepare_cached(
        "UPDATE marks SET dirty = 0, dirty_from = NULL WHERE key = ?1 AND value <= ?2",
    )?;
    for (key, value) in reconciled {
        clean.execute(params![key, *value as i64])?;
    }
    Ok(())
}

/// Stream and outbox operations, in their order: a delete after a save wins.
fn write_others(tx: &rusqlite::Transaction<'_>, batch: &[Op]) -> rusqlite::Result<()> {
    for op in batch {
        match op {
            Op::SaveStreams { rows, .. } => streams::save(tx, rows)?,
            Op::DeleteStreams { keys, .. } => streams::delete(tx, keys.as_deref())?,
            Op::StreamsSynced { keys, .. } => streams::synced(tx, keys)?,
            Op::PruneStreams { before_ms, .. } => streams::prune(tx, *before_ms)?,
            Op::Outbox { entries, add, .. } => outbox::write(tx, entries, *add)?,
            Op::Raise { .. }
            | Op::Reconciled { .. }
            | Op::Prune { .. }
            | Op::Flush { .. }
            | Op::Close { .. } => {}
        }
    }
    Ok(())
}

/// Deletes expired marks; returns how many.
fn prune(tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM marks WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        [now],
    )
}

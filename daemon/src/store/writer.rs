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
//!
//! # What the writer knows of the disk
//!
//! Nothing is loaded at start: the writer looks a key up in `marks` the
//! first time a batch writes it (its value and ceiling, kept in `known`
//! until the next fold of the mark log, which puts every row of the log
//! in `marks`), and checks there each *unchecked* number — one memory drew
//! for a key it had not verified against the disk (see `marks.rs`): one at
//! or below the mark on disk is refused, not written.

use super::journal::Record;
use super::marks::{HighWaterMarks, Mark, OnDisk, Settled, Unchecked};
use super::outbox::{self, OutboxEntry};
use super::schema::{compact, touch, Boot, EFFECTIVE};
use super::streams::{self, StreamRow};
use super::StoreCounters;
use foldhash::{HashMap, HashMapExt};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most operations the writer thread folds into one transaction. It
/// bounds the latency of the first request of a batch, not throughput.
pub(super) const MAX_BATCH: usize = 4096;
/// Mark-log rows that trigger a fold into `marks` (see `schema::compact`).
const COMPACT_AT: usize = 32 * 1024;
/// Keys the writer keeps in `known` before a fold empties it.
const KNOWN_AT: usize = 4 * COMPACT_AT;
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
        /// `None` when memory had verified the key's mark; otherwise
        /// `value` is compared with the disk as it was before the first
        /// number of that memory mark (its base: memory's when memory
        /// knows it, else the one the writer noted).
        unchecked: Option<Unchecked>,
        /// The journal file that made the number durable: nobody waits
        /// for this commit, and the writer settles it in memory itself.
        journaled: Option<u8>,
        /// Who waits for the commit (`None` for a journaled number, and
        /// for a journal's replay).
        done: Option<oneshot::Sender<Result<Settled, String>>>,
    },
    /// The mark of `key` on disk (0 when none), after what is queued.
    Read {
        key: Arc<str>,
        done: oneshot::Sender<Result<u64, String>>,
    },
    /// Up to `limit` marks of dirty keys, in key order after `after`.
    LoadDirty {
        after: Option<Arc<str>>,
        limit: usize,
        done: oneshot::Sender<Result<Vec<StoredMark>, String>>,
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
    /// Journaled numbers were handed over (`marks::Handed`) while the
    /// writer had none: take them within [`HOLD`].
    Wake,
}

/// How long journaled numbers may wait to be written together while no
/// request waits for a commit. Nobody waits for them (the journal holds
/// them), so a longer hold is fewer, larger commits; a request that waits
/// cuts it short.
const HOLD: std::time::Duration = std::time::Duration::from_millis(5);

/// How long journaled numbers whose commit failed wait before they are
/// tried again when no other write comes (a full disk is freed by
/// someone else: nothing announces it).
const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// A key and its mark as read from disk.
pub(super) type StoredMark = (Arc<str>, Mark);

/// A key's mark and ceiling on disk, as the writer last read or wrote
/// them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Known {
    value: u64,
    /// Pending reconciliation on disk, from which mark (see [`OnDisk`]).
    dirty: Option<Option<u64>>,
    /// The epoch of the memory mark whose unchecked numbers were last
    /// seen, and the value on disk before the first of them: the base an
    /// unchecked number is compared with until memory learns it (from the
    /// outcome, `OnDisk`) and sends it along. A fold of the mark log
    /// forgets both (it empties `known`): a number sent before memory
    /// learned the base and committed after a fold is compared with the
    /// disk then, its mark's earlier numbers included, and may be refused
    /// though fresh — a skipped number, never a repeat. It takes a key's
    /// first commits of a run straddling a fold.
    epoch: Option<u64>,
    base: u64,
    /// The reserved ceiling last fsynced; `None` when the key has no row
    /// (a daily key then has the implied one).
    ceiling: Option<u64>,
}

/// The writer thread's state: the connection, and what it knows of the
/// keys it wrote or read since the last fold of the mark log.
pub(super) struct Writer {
    /// The database's file (a scan of its keys opens it again).
    pub(super) path: std::path::PathBuf,
    pub(super) conn: Connection,
    pub(super) reserve: u64,
    pub(super) known: HashMap<Arc<str>, Known>,
    /// This start: the `gen` rows are written with, and which rows are
    /// read above their ceiling.
    pub(super) boot: Boot,
    /// The connection's `synchronous` level is FULL now.
    pub(super) full: bool,
    /// Rows in the mark log since the last fold.
    pub(super) logged: usize,
    pub(super) counters: StoreCounters,
    /// The marks in memory, which the writer settles for journaled
    /// numbers (see [`Writer::settle_in_memory`]).
    pub(super) marks: Arc<std::sync::Mutex<HighWaterMarks>>,
}

impl Writer {
    /// One transaction per batch of queued operations, until the store is
    /// closed or every handle is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        // A runtime of the writer's own, for a receive with a time limit.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "the store's writer cannot start");
                return;
            }
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut closing = false;
        let mut open = true;
        // Journaled numbers whose commit failed: in every batch until one
        // commits (their journal file is not reused before), tried again
        // after RETRY when nothing else comes.
        let mut retry: Vec<Op> = Vec::new();
        while open {
            if retry.is_empty() {
                match runtime.block_on(rx.recv()) {
                    Some(first) => batch.push(first),
                    None => open = false,
                }
            } else {
                match runtime.block_on(async { tokio::time::timeout(RETRY, rx.recv()).await }) {
                    Ok(Some(first)) => batch.push(first),
                    Ok(None) => open = false,
                    Err(_) => {}
                }
            }
            drain(&mut rx, &mut batch);
            if open && batch.iter().all(|op| matches!(op, Op::Wake)) {
                // Only journaled numbers: let more gather, unless a
                // request that waits for a commit comes first.
                let more = runtime.block_on(async { tokio::time::timeout(HOLD, rx.recv()).await });
                match more {
                    Ok(Some(op)) => batch.push(op),
                    Ok(None) => open = false,
                    Err(_) => {}
                }
                drain(&mut rx, &mut batch);
            }
            // After the queue: a request queued after a number was handed
            // over is committed with it or after it.
            self.take_handed(&mut batch);
            batch.retain(|op| !matches!(op, Op::Wake));
            batch.append(&mut retry);
            if batch.is_empty() {
                continue;
            }
            closing = batch.iter().any(|op| matches!(op, Op::Close { .. }));
            let result = self.commit(&batch);
            self.tell_condition(result.as_ref().err());
            let result = result.map_err(|e| e.to_string());
            match &result {
                Ok(committed) => self.settle_in_memory(&batch, committed),
                Err(_) => {
                    // Its waiters get the error; their writes are over. A
                    // journaled number stays outstanding (its mark in
                    // memory, its journal file not reused) and is
                    // committed with a later batch.
                    let mut marks = super::marks::lock(&self.marks);
                    for op in &batch {
                        if let Op::Raise {
                            key, done: Some(_), ..
                        } = op
                        {
                            marks.write_ended(key);
                        }
                    }
                    drop(marks);
                    let (journaled, rest) =
                        std::mem::take(&mut batch).into_iter().partition(|op| {
                            matches!(
                                op,
                                Op::Raise {
                                    journaled: Some(_),
                                    ..
                                }
                            )
                        });
                    retry = journaled;
                    batch = rest;
                }
            }
            for (i, op) in batch.drain(..).enumerate() {
                match op {
                    Op::Raise {
                        done: Some(done), ..
                    } => {
                        let _ =
                            done.send(result.as_ref().map(|c| c.settled[i]).map_err(Clone::clone));
                    }
                    Op::Raise { done: None, .. } | Op::Wake => {}
                    Op::Read { key, done } => {
                        let _ =
                            done.send(self.known(&key).map(|k| k.value).map_err(|e| e.to_string()));
                    }
                    Op::LoadDirty { after, limit, done } => {
                        let _ = done.send(
                            self.load_dirty(after.as_deref(), limit)
                                .map_err(|e| e.to_string()),
                        );
                    }
                    Op::Reconciled { done, .. }
                    | Op::Flush { done }
                    | Op::Close { done }
                    | Op::SaveStreams { done, .. }
                    | Op::DeleteStreams { done, .. }
                    | Op::StreamsSynced { done, .. }
                    | Op::PruneStreams { done, .. }
                    | Op::Outbox { done, .. } => {
                        let _ = done.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
                    }
                    Op::Prune { done, .. } => {
                        let _ = done.send(result.as_ref().map(|c| c.pruned).map_err(Clone::clone));
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

    /// Stops using the journal when its files are no longer the ones
    /// mapped (see `Journal::intact`); checked after every commit, in the
    /// lock that appends take. Its numbers still waiting for a commit are
    /// in memory and go to SQLite as before.
    fn check_journal(&self, marks: &mut HighWaterMarks) {
        let Some(Err(why)) = marks.journal.as_ref().map(|j| j.intact()) else {
            return;
        };
        tracing::error!(
            error = %why,
            "the mark journal is not used any more: every number waits for the store's commit \
             until seqd is restarted"
        );
        marks.journal = None;
        self.counters
            .condition
            .journal
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Keeps the store's condition (`HEALTH`'s `store`) after a commit,
    /// and logs when it changes: a failing disk fails every batch, and one
    /// line per batch would add to what fills it.
    fn tell_condition(&self, error: Option<&rusqlite::Error>) {
        let now = error.map_or(super::StoreState::Ok, super::StoreState::of);
        if error.is_some() {
            self.counters.commit_failures.inc();
        }
        if now == super::StoreState::Full {
            self.counters.condition.found_full();
        }
        let was = self.counters.condition.set(now);
        match (was, error) {
            (super::StoreState::Ok, Some(e)) => tracing::error!(
                error = %e,
                state = now.as_str(),
                "local store commits fail: numbers that need a commit are answered \
                 unavailable until one succeeds"
            ),
            (was, None) if was != super::StoreState::Ok => {
                tracing::warn!(was = was.as_str(), "local store commits succeed again")
            }
            (was, Some(e)) if was != now => {
                tracing::error!(error = %e, state = now.as_str(), "local store commits fail")
            }
            _ => {}
        }
    }

    /// Adds the journaled numbers handed over since the last batch.
    fn take_handed(&self, batch: &mut Vec<Op>) {
        let handed = std::mem::take(&mut super::marks::lock(&self.marks).handed);
        batch.extend(handed.into_iter().map(|h| Op::Raise {
            key: h.key,
            value: h.value,
            expires_at: h.expires_at,
            ttl: h.ttl,
            dirty_from: h.dirty_from,
            unchecked: None,
            journaled: Some(h.file),
            done: None,
        }));
    }

    /// After a commit: every journaled number of the batch is in SQLite
    /// (its mark may be evicted, its journal file reused), and memory
    /// learns the ceilings now durable. (A journaled number whose commit
    /// failed stays outstanding: its mark stays in memory, and its journal
    /// file is not reused.)
    fn settle_in_memory(&self, batch: &[Op], committed: &Committed) {
        let mut marks = super::marks::lock(&self.marks);
        self.check_journal(&mut marks);
        // Every key written (`ceilings` has one entry per key) is in the
        // filter of keys on disk before its mark may leave memory (in
        // this same hold of the lock; see `filter.rs`).
        for (key, ceiling) in &committed.ceilings {
            marks.rows.add(key);
            marks.learn_ceiling(key, *ceiling);
        }
        for op in batch {
            match op {
                Op::Raise {
                    key,
                    journaled: Some(file),
                    ..
                } => marks.settle_journaled(key, *file),
                Op::Raise {
                    key, done: Some(_), ..
                } => marks.write_ended(key),
                _ => {}
            }
        }
        if committed.folded_log {
            marks.log_folded();
        }
        // Closed: no number is journaled any more (each then waits for a
        // commit that never comes, and fails). What the journal holds is
        // replayed, to no effect, at the next start.
        if batch.iter().any(|op| matches!(op, Op::Close { .. })) {
            marks.journal = None;
            return;
        }
        let due = marks.rows.start();
        drop(marks);
        if due {
            super::scan::build(&self.path, &self.marks);
        }
    }

    /// Puts the journal's records in SQLite: those above the mark on disk,
    /// the highest per key. Run at open, before anything else is written.
    pub(super) fn replay(&mut self, records: Vec<Record>) -> rusqlite::Result<usize> {
        let mut highest: HashMap<Arc<str>, Row> = HashMap::new();
        for r in records {
            let row = Row {
                value: r.value,
                expires_at: r.expires_at,
                ttl: r.ttl,
                dirty_from: r.dirty_from,
            };
            highest
                .entry(Arc::from(r.key))
                .and_modify(|h| h.merge(&row))
                .or_insert(row);
        }
        let mut ops = Vec::new();
        self.conn.execute_batch("BEGIN")?;
        let read: rusqlite::Result<()> = highest.into_iter().try_for_each(|(key, r)| {
            if r.value > self.known(&key)?.value {
                ops.push(Op::Raise {
                    key,
                    value: r.value,
                    expires_at: r.expires_at,
                    ttl: r.ttl,
                    dirty_from: r.dirty_from,
                    unchecked: None,
                    journaled: None,
                    done: None,
                });
            }
            Ok(())
        });
        self.conn.execute_batch("COMMIT")?;
        read?;
        let replayed = ops.len();
        for chunk in ops.chunks(MAX_BATCH) {
            self.commit(chunk)?;
        }
        // Folded into `marks`, as at every start: the keys pending
        // reconciliation are counted there.
        self.fold_log()?;
        Ok(replayed)
    }

    /// Folds the mark log into `marks` when it holds rows (memory learns
    /// that a read of `marks` is whole again, see `marks.rs`).
    fn fold_log(&mut self) -> rusqlite::Result<()> {
        if self.logged > 0 {
            let tx = self.conn.transaction()?;
            compact(&tx)?;
            tx.commit()?;
            self.known.clear();
            self.logged = 0;
            super::marks::lock(&self.marks).log_folded();
        }
        Ok(())
    }

    /// What the writer knows of `key` on disk, read from `marks` the first
    /// time (every row of the mark log is in `known` already).
    fn known(&mut self, key: &Arc<str>) -> rusqlite::Result<Known> {
        if let Some(k) = self.known.get(key) {
            return Ok(*k);
        }
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {EFFECTIVE}, dirty, dirty_from FROM marks WHERE key = ?1"
            ))?
            .query_row([&**key], |r| {
                Ok((
                    self.boot.effective(r.get(0)?, r.get(1)?, r.get(2)?),
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()?;
        let k = match row {
            Some((value, ceiling, dirty, from)) => Known {
                value,
                dirty: (dirty != 0).then(|| from.map(|f| f.max(0) as u64)),
                ceiling: Some(ceiling.max(0) as u64),
                ..Known::default()
            },
            None => Known::default(),
        };
        self.known.insert(key.clone(), k);
        Ok(k)
    }

    /// Puts in `known`, without a read, the keys of the batch's raises
    /// that the filter of keys on disk says have no row: every row on
    /// disk was read into it or committed by this thread, which added
    /// the key then.
    fn know_absent(&mut self, batch: &[Op]) {
        let marks = super::marks::lock(&self.marks);
        for op in batch {
            if let Op::Raise { key, .. } = op {
                if !self.known.contains_key(key) && !marks.rows.may_have_row(key) {
                    self.known.insert(key.clone(), Known::default());
                }
            }
        }
    }

    /// Reads into `known` every key of the batch's raises it lacks.
    fn read_unknown(&mut self, batch: &[Op]) -> rusqlite::Result<()> {
        for op in batch {
            if let Op::Raise { key, .. } = op {
                self.known(key)?;
            }
        }
        Ok(())
    }

    /// A page of dirty marks, the mark log folded in first.
    fn load_dirty(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Vec<StoredMark>> {
        self.fold_log()?;
        super::schema::load_dirty(&self.conn, &self.boot, after, limit)
    }

    /// Writes one batch in one transaction, fsynced when it must be.
    fn commit(&mut self, batch: &[Op]) -> rusqlite::Result<Committed> {
        let settled = self.check(batch)?;
        let (folded, reconciled, prune_before) = fold(batch, &settled);
        let ceilings = self.ceilings(&folded);
        let sync = !ceilings.raised.is_empty() || batch.iter().any(Op::must_sync);
        if sync != self.full {
            let level = if sync { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level)?;
            self.full = sync;
        }
        let (pruned, folded_log) =
            self.write(batch, &folded, &ceilings, &reconciled, prune_before)?;
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
        let Ceilings {
            raised,
            implied,
            all,
        } = ceilings;
        self.remember(&folded, raised.into_iter().chain(implied), folded_log);
        Ok(Committed {
            pruned,
            settled,
            ceilings: all,
            folded_log,
        })
    }

    /// How each number of `batch` settles: an unchecked number at or
    /// below the disk's mark (as it was before the first number of its
    /// mark) is refused. The keys not known yet are read in one read
    /// transaction: outside one, every lookup takes and drops SQLite's
    /// file locks (a profile of a cold run had `fcntl` locking next to the
    /// B-tree search).
    fn check(&mut self, batch: &[Op]) -> rusqlite::Result<Vec<Settled>> {
        let unknown = |known: &HashMap<Arc<str>, Known>| {
            batch.iter().any(|op| match op {
                Op::Raise { key, .. } => !known.contains_key(key),
                _ => false,
            })
        };
        if unknown(&self.known) {
            self.know_absent(batch);
        }
        if unknown(&self.known) {
            self.conn.execute_batch("BEGIN")?;
            let read = self.read_unknown(batch);
            self.conn.execute_batch("COMMIT")?;
            read?;
        }
        let mut settled = vec![Settled::Written(None); batch.len()];
        for (i, op) in batch.iter().enumerate() {
            if let Op::Raise {
                key,
                value,
                unchecked,
                ..
            } = op
            {
                self.known(key)?;
                let (Some(unchecked), Some(k)) = (unchecked, self.known.get_mut(key)) else {
                    continue;
                };
                let base = match unchecked.base {
                    Some(base) => base,
                    None => {
                        if k.epoch != Some(unchecked.epoch) {
                            k.epoch = Some(unchecked.epoch);
                            k.base = k.value;
                        }
                        k.base
                    }
                };
                let on_disk = OnDisk {
                    value: base,
                    dirty: k.dirty,
                };
                settled[i] = if *value <= base {
                    Settled::Stale(on_disk)
                } else {
                    Settled::Written(Some(on_disk))
                };
            }
        }
        Ok(settled)
    }

    /// The ceilings of the keys `folded` writes: new ones for the keys
    /// whose numbers pass theirs (fsynced), the implied ceiling of new
    /// daily keys (written, not fsynced), and every written key's, for
    /// memory once the commit returned.
    fn ceilings(&self, folded: &HashMap<&Arc<str>, Row>) -> Ceilings {
        let mut c = Ceilings {
            raised: Vec::new(),
            implied: Vec::new(),
            all: Vec::with_capacity(folded.len()),
        };
        for (key, row) in folded {
            let known = self.known.get(&***key).and_then(|k| k.ceiling);
            let daily = row.expires_at.is_some();
            let ceiling = known.unwrap_or(if daily { self.reserve } else { 0 });
            if row.value > ceiling {
                let new = row.value.saturating_add(self.reserve).min(i64::MAX as u64);
                c.raised.push(((*key).clone(), new));
                c.all.push(((*key).clone(), new));
            } else {
                if known.is_none() {
                    c.implied.push(((*key).clone(), ceiling));
                }
                c.all.push(((*key).clone(), ceiling));
            }
        }
        c
    }

    /// Writes `batch` in one transaction. Returns the marks pruned and
    /// whether the mark log was folded into `marks`.
    fn write(
        &mut self,
        batch: &[Op],
        folded: &HashMap<&Arc<str>, Row>,
        ceilings: &Ceilings,
        reconciled: &[(&str, u64)],
        prune_before: Option<i64>,
    ) -> rusqlite::Result<(usize, bool)> {
        let tx = self.conn.transaction()?;
        let (raised, implied) = (&ceilings.raised, &ceilings.implied);
        write_marks(&tx, self.boot.gen, folded, raised, implied, reconciled)?;
        // Prunes and a clean stop work on `marks` in place: fold the log in
        // (with this batch's rows), as for a log grown long.
        // Reconciliations fold it inside `write_marks`.
        let fold = prune_before.is_some()
            || self.logged + folded.len() >= COMPACT_AT
            || self.known.len() >= KNOWN_AT
            || batch.iter().any(|op| matches!(op, Op::Close { .. }));
        if fold {
            compact(&tx)?;
        }
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
        Ok((pruned, fold || !reconciled.is_empty()))
    }

    /// What the writer knows of the disk after a commit of `folded` with
    /// these new `ceilings`: everything again from the disk when the log
    /// was folded, else these rows on top of what it knew.
    fn remember(
        &mut self,
        folded: &HashMap<&Arc<str>, Row>,
        ceilings: impl Iterator<Item = (Arc<str>, u64)>,
        folded_log: bool,
    ) {
        if folded_log {
            // Every row is in `marks` now: read again when needed.
            self.known.clear();
            self.logged = 0;
            return;
        }
        self.logged += folded.len();
        for (key, row) in folded {
            let k = self.known.entry((*key).clone()).or_default();
            k.value = k.value.max(row.value);
            if row.dirty_from.is_some() && k.dirty.is_none() {
                k.dirty = Some(row.dirty_from);
            }
        }
        for (key, ceiling) in ceilings {
            self.known.entry(key).or_default().ceiling = Some(ceiling);
        }
    }
}

/// The ceilings a commit writes (see `Writer::ceilings`).
struct Ceilings {
    raised: Vec<(Arc<str>, u64)>,
    implied: Vec<(Arc<str>, u64)>,
    all: Vec<(Arc<str>, u64)>,
}

/// Moves what is queued into `batch`, up to [`MAX_BATCH`].
fn drain(rx: &mut mpsc::Receiver<Op>, batch: &mut Vec<Op>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

/// What a commit did: the marks pruned, and each operation's outcome (by
/// its index in the batch; `Written` for all but refused numbers).
pub(super) struct Committed {
    pruned: usize,
    settled: Vec<Settled>,
    /// The ceiling of every key written.
    ceilings: Vec<(Arc<str>, u64)>,
    /// The mark log was folded into `marks`.
    folded_log: bool,
}

impl Op {
    /// Writes a power loss must not undo: an invalidation promised to
    /// readers, a cleared stream, and whatever a flush or close waits for.
    /// (A stream's state is a plain write, fsynced within a second: the
    /// tracker's bounded loss, see the module docs.)
    fn must_sync(&self) -> bool {
        match self {
            Op::Raise { .. }
            | Op::Read { .. }
            | Op::LoadDirty { .. }
            | Op::Reconciled { .. }
            | Op::Prune { .. }
            | Op::PruneStreams { .. }
            | Op::SaveStreams { .. }
            | Op::StreamsSynced { .. } => false,
            Op::Wake => false,
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

fn fold<'a>(batch: &'a [Op], settled: &[Settled]) -> Folded<'a> {
    let mut folded: HashMap<&Arc<str>, Row> = HashMap::new();
    let mut reconciled: Vec<(&str, u64)> = Vec::new();
    let mut prune_before = None;
    for (op, settled) in batch.iter().zip(settled) {
        match op {
            Op::Raise { .. } if matches!(settled, Settled::Stale(_)) => {}
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
            | Op::Read { .. }
            | Op::LoadDirty { .. }
            | Op::Flush { .. }
            | Op::Close { .. }
            | Op::Wake => {}
        }
    }
    (folded, reconciled, prune_before)
}

fn write_marks(
    tx: &rusqlite::Transaction<'_>,
    gen: i64,
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
        "INSERT INTO mark_log (key, value, expires_at, dirty, ttl, ceiling, dirty_from, gen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
            r.dirty_from.map(|f| f as i64),
            gen
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
            | Op::Read { .. }
            | Op::LoadDirty { .. }
            | Op::Reconciled { .. }
            | Op::Prune { .. }
            | Op::Flush { .. }
            | Op::Close { .. }
            | Op::Wake => {}
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

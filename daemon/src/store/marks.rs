//! High-water marks in memory, and the never-twice rule.
//!
//! # What it owns
//!
//! Per key: the highest number issued (the *mark*), when it may be
//! forgotten, its Redis TTL, whether it is *dirty* (issued from the store,
//! Redis not raised to it yet), and the bookkeeping of Redis requests in
//! flight for it.
//!
//! # What it guarantees
//!
//! - A mark only ever rises.
//! - `HighWaterMarks::claim` refuses a number Redis returned if it may
//!   already have been issued since the request began — by the store, or
//!   by Redis to another request after Redis went back in time — so a
//!   Redis answer in flight can never duplicate a number.
//! - What a request in flight needed is forgotten when the last one for
//!   the key ends: a quiet key costs nothing.
//!
//! - A daily key (one that expires) needs no fsync for its first
//!   `--mark-reserve` numbers: its ceiling is *implied* (see the writer). A
//!   power loss may then lose the key whole; so after an unclean stop,
//!   a daily key this store does not know starts above the reserve when
//!   its window opened before that stop ([`Implied`]): it may have been
//!   issued then. Conversation keys (which never expire) have no implied
//!   ceiling: their first number is fsynced.
//!
//! - Memory holds a *cache* of marks, not all of them: at most
//!   `--marks-in-memory` (see [`HighWaterMarks::cap`]); the disk holds
//!   every mark. A mark read from disk, or confirmed against it by a
//!   commit, is *verified*; a key met for the first time in this run (or
//!   again after its mark was evicted) starts unverified at what an unknown
//!   key may be assumed to hold, and its numbers go to the writer
//!   *unchecked* — so do Redis's answers to requests that began while it
//!   was, whatever memory learned since: their floors were assumed. The
//!   writer compares each with the mark on disk before that mark's first
//!   number, inside the commit, and refuses one at or below it
//!   (`Settled::Stale`); the handle then raises the mark to the disk's and
//!   draws (or asks Redis) again. So a start
//!   loads nothing but the keys pending reconciliation, and a key read from
//!   disk costs no extra round trip: the check rides on the commit the
//!   number waits for anyway.
//! - Only a mark nothing in memory depends on is evicted: verified, no
//!   Redis request in flight, no write outstanding. A dirty one may go
//!   too (its row on disk says dirty): `HighWaterMarks::unloaded` counts
//!   those, and reconciliation reads them back a page at a time
//!   (`Store::pending_batch`). A start loads none: a seqd that ran in
//!   local mode all day (every key dirty) starts at once as well.
//!
//! No SQLite here: the store's handle (`super::Store`) makes every change
//! durable before it returns; this file decides what the change is.

use super::filter::RowFilter;
use super::journal::{Entry, Journal};
use super::reader::Row;
use super::StoreError;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// A Redis request for a key, in flight. Dropping it (answered, failed or
/// cancelled by a timeout) lets the store forget numbers no other request
/// can collide with.
pub struct Flight {
    marks: Arc<Mutex<HighWaterMarks>>,
    pub(super) key: Arc<str>,
    /// The key's mark when the request began: the floor to send to Redis.
    pub floor: u64,
    start: u64,
    /// The mark's epoch when the request began unverified: the floor was
    /// what memory assumed, and the disk may hold more (an earlier run's
    /// numbers). Its answer goes to the writer unchecked even if memory
    /// has learned the disk's mark since, so that it is compared with the
    /// disk as it was before that mark's numbers ([`Mark::base`]).
    epoch: Option<u64>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(m) = lock(&self.marks).by_key.get_mut(&*self.key) {
            m.end_flight(self.start);
        }
    }
}

/// Why `HighWaterMarks::claim` (and so `Store::claim`) refused a number.
#[derive(Debug, thiserror::Error)]
pub enum Claim {
    /// The store issued this number (or a higher one) itself; ask Redis
    /// again with `mark` as the floor.
    #[error("number already issued locally; mark is {mark}")]
    Taken { mark: u64 },
    #[error(transparent)]
    Failed(StoreError),
}

/// Most numbers remembered per key while Redis requests for it are in
/// flight; past it, any Redis answer at or below the mark is refused (and
/// asked again), which is safe, only slower.
const MAX_CLAIMS_IN_FLIGHT: usize = 4096;

/// A key's mark in memory.
#[derive(Debug, Clone)]
pub(super) struct Mark {
    pub(super) value: u64,
    /// Unix seconds after which the mark may be dropped; `None` = never.
    pub(super) expires_at: Option<i64>,
    /// Redis TTL of the key, for reconciliation.
    pub(super) ttl: Option<u64>,
    /// While dirty: the mark when the store began issuing on its own (the
    /// local numbers are `dirty_from + 1 ..= value`), to tell on
    /// reconciliation whether Redis moved past it meanwhile.
    pub(super) dirty_from: Option<u64>,
    /// Numbers issued (by Redis or the store) while Redis requests for this
    /// key were in flight, each with its issue index. A Redis answer can
    /// only duplicate a number issued after its request began: everything
    /// before is at or below the floor the request carried.
    pub(super) recent: VecDeque<(u64, u64)>,
    /// Index given to the next number issued.
    next_index: u64,
    /// Start indexes of the Redis requests in flight (a multiset).
    pub(super) flights: BTreeMap<u64, u32>,
    /// The mark is at least the one on disk (read from it, or confirmed
    /// by a commit); until then numbers go to the writer unchecked (and so
    /// do Redis's answers to requests that began before).
    pub(super) verified: bool,
    /// Which mark this is among those the key had in memory (each new one
    /// gets the next): the writer compares the unchecked numbers of one
    /// mark with the disk as it was before the first of them, so two that
    /// reach it out of order are both written.
    epoch: u64,
    /// The disk's mark before this mark's first number, once the writer
    /// reported it: unchecked numbers carry it to the writer, which may
    /// have forgotten it (a fold of the mark log empties what it knows) —
    /// comparing them with the disk *now*, which holds this mark's own
    /// numbers, would refuse fresh ones (skips). Memory keeps it as long
    /// as anything depends on it: a mark with requests in flight or writes
    /// outstanding is never evicted.
    base: Option<u64>,
    /// Writes of this mark sent to the writer and not settled yet.
    writing: u32,
    /// Used since the last eviction sweep (a second chance).
    used: bool,
    /// The writer said the key is pending on disk (counted in
    /// `HighWaterMarks::unloaded` until then).
    pending_on_disk: bool,
    /// The key's reserved ceiling on disk, once a commit reported it
    /// (durable then): a verified number at or below it is made durable
    /// by the journal alone.
    pub(super) ceiling: Option<u64>,
}

impl Mark {
    pub(super) fn new(value: u64, expires_at: Option<i64>, ttl: Option<u64>) -> Mark {
        Mark {
            value,
            expires_at,
            ttl,
            dirty_from: None,
            recent: VecDeque::new(),
            next_index: 0,
            flights: BTreeMap::new(),
            verified: false,
            epoch: 0,
            base: None,
            writing: 0,
            used: true,
            pending_on_disk: false,
            ceiling: None,
        }
    }

    /// A mark as read from disk.
    pub(super) fn stored(value: u64, expires_at: Option<i64>, ttl: Option<u64>) -> Mark {
        Mark {
            verified: true,
            ..Mark::new(value, expires_at, ttl)
        }
    }

    /// What a write of this mark tells the writer: `None` when verified,
    /// else how to check it against the disk.
    fn unchecked(&self) -> Option<Unchecked> {
        (!self.verified).then_some(Unchecked {
            epoch: self.epoch,
            base: self.base,
        })
    }

    /// Nothing depends on this mark but the disk (unless it is dirty,
    /// which the caller checks): it may be evicted.
    fn evictable(&self) -> bool {
        self.verified && self.writing == 0 && self.flights.is_empty()
    }

    /// Records `n` as issued now.
    pub(super) fn record(&mut self, n: u64) {
        self.value = self.value.max(n);
        if !self.flights.is_empty() && self.recent.len() < MAX_CLAIMS_IN_FLIGHT {
            self.recent.push_back((n, self.next_index));
        }
        self.next_index += 1;
    }

    /// Raises the mark to `value`, read from (or reported by) the disk.
    fn learn_disk(&mut self, value: u64) {
        // Read while unverified and before the writer reported a base: the
        // disk's mark now is this mark's base or above it (only this
        // mark's own numbers can have reached the disk since it was
        // made), so requests that began unverified compare their answers
        // with it rather than with the disk at their commit, which holds
        // numbers issued after they began (a refused fresh answer is a
        // skipped number).
        if !self.verified && self.base.is_none() {
            self.base = Some(value);
        }
        self.value = self.value.max(value);
        self.verified = true;
    }

    /// True when `n`, answered by Redis for a request that began at
    /// `start` with floor `floor`, may already have been issued.
    fn maybe_issued(&self, n: u64, start: u64, floor: u64) -> bool {
        if n <= floor {
            return true;
        }
        if n > self.value {
            return false;
        }
        if self.recent.len() >= MAX_CLAIMS_IN_FLIGHT {
            return true;
        }
        self.recent.iter().any(|(m, i)| *m == n && *i >= start)
    }

    /// Forgets what no request in flight can collide with any more.
    fn end_flight(&mut self, start: u64) {
        if let Some(c) = self.flights.get_mut(&start) {
            *c -= 1;
            if *c == 0 {
                self.flights.remove(&start);
            }
        }
        match self.flights.keys().next() {
            None => self.recent.clear(),
            Some(&oldest) => {
                while self.recent.front().is_some_and(|(_, i)| *i < oldest) {
                    self.recent.pop_front();
                }
            }
        }
    }

    pub(super) fn merge_expiry(a: Option<i64>, b: Option<i64>) -> Option<i64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        }
    }
}

/// A key whose mark Redis has not been raised to yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    pub key: Arc<str>,
    pub value: u64,
    pub ttl: Option<u64>,
    /// The mark the local numbers began from (`None` for a store written
    /// before this was recorded).
    pub dirty_from: Option<u64>,
}

/// The marks in memory. Shared behind a `std::sync::Mutex`, not a Tokio
/// one: nothing awaits while it is held.
pub struct HighWaterMarks {
    pub(super) by_key: HashMap<Arc<str>, Mark>,
    /// Keys whose mark is dirty (issued locally, Redis not raised yet).
    pub(super) dirty: HashSet<Arc<str>>,
    /// The last unclean stop, if there ever was one.
    pub(super) implied: Option<Implied>,
    /// Most marks kept in memory: past it, a sweep evicts the marks not
    /// used since the previous sweep that nothing depends on (a busy key
    /// is never evicted, so the cap can be exceeded by those).
    pub(super) cap: usize,
    /// Dirty keys whose marks are on disk only (not in `dirty`).
    pub(super) unloaded: usize,
    /// Epochs given to new marks so far.
    epochs: u64,
    /// Where a verified number below its ceiling is made durable (see
    /// `journal.rs`): appended under this lock, so in the marks' order.
    /// `None` once the store is closed.
    pub(super) journal: Option<Journal>,
    /// What a row read on a shard needs (see [`HighWaterMarks::adopt`]):
    /// marks removed from memory so far (evicted or pruned), marks evicted
    /// since the mark log was last folded into `marks`, folds so far, the
    /// reserve (`--mark-reserve`), and the first run whose rows are exact
    /// (`Boot::suspect_below`).
    pub(super) removals: u64,
    pub(super) evicted_since_fold: u64,
    pub(super) folds: u64,
    pub(super) reserve: u64,
    pub(super) suspect_below: i64,
    /// Journaled numbers the writer has not taken yet (it takes them all
    /// at once, after the requests queued for it): handing one over costs
    /// a push under this lock, no channel and no wake-up. Bounded by the
    /// journal's room.
    pub(super) handed: Vec<Handed>,
    /// Which keys may have a row on disk (see `filter.rs`).
    pub(super) rows: RowFilter,
}

/// A journaled number on its way to SQLite.
pub(super) struct Handed {
    pub(super) key: Arc<str>,
    pub(super) value: u64,
    pub(super) expires_at: Option<i64>,
    pub(super) ttl: Option<u64>,
    pub(super) dirty_from: Option<u64>,
    /// The journal file that holds it.
    pub(super) file: u8,
}

/// Default of `--marks-in-memory`: about 250 MB of marks.
pub const DEFAULT_MARKS_IN_MEMORY: usize = 1_000_000;

impl Default for HighWaterMarks {
    fn default() -> Self {
        HighWaterMarks {
            by_key: HashMap::new(),
            dirty: HashSet::new(),
            implied: None,
            cap: DEFAULT_MARKS_IN_MEMORY,
            unloaded: 0,
            epochs: 0,
            journal: None,
            handed: Vec::new(),
            rows: RowFilter::default(),
            removals: 0,
            evicted_since_fold: 0,
            folds: 0,
            reserve: 0,
            suspect_below: 0,
        }
    }
}

/// What the writer made of a write sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Committed; for an unchecked number, with the disk's state of the
    /// key before it.
    Written(Option<OnDisk>),
    /// Refused: an unchecked number at or below the mark on disk, which
    /// is given.
    Stale(OnDisk),
}

/// A key's mark on disk, as the writer reports it with an unchecked
/// number's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OnDisk {
    /// The mark on disk before the first number of the memory mark (its
    /// epoch) reached the writer: what memory could not know. Not the mark
    /// now, which holds that memory mark's own numbers too: learning those
    /// would refuse Redis's answers still in flight below them (numbers
    /// Redis never answers again: skips).
    pub(super) value: u64,
    /// `Some` when the key is pending reconciliation on disk: the mark its
    /// local numbers began from (`None` inside for a store from before
    /// that was recorded).
    pub(super) dirty: Option<Option<u64>>,
}

/// How the writer checks an unchecked number: which memory mark drew it,
/// and, once known, the disk's mark before that mark's first number
/// ([`Mark::base`]); the number must be above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unchecked {
    pub(super) epoch: u64,
    pub(super) base: Option<u64>,
}

/// A number drawn from memory, on its way to the writer.
pub(super) struct Drawn {
    pub(super) key: Arc<str>,
    pub(super) value: u64,
    /// The mark the key's local numbers began from.
    pub(super) from: u64,
    /// `None` when the mark was verified; otherwise how the writer
    /// compares the number with the disk.
    pub(super) unchecked: Option<Unchecked>,
    /// `Some` when the journal holds the number: it is durable already,
    /// handed to the writer, which settles it (no one waits for its
    /// commit); `Some(true)` when the writer must be woken for it (it was
    /// the first handed since the writer last took them).
    pub(super) journaled: Option<bool>,
}

/// Marks removed and folds done, when a row began to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Snapshot {
    removals: u64,
    folds: u64,
}

/// A Redis answer memory accepted, on its way to the writer.
pub(super) struct Claimed {
    pub(super) key: Arc<str>,
    /// As [`Drawn::unchecked`].
    pub(super) unchecked: Option<Unchecked>,
    /// As [`Drawn::journaled`].
    pub(super) journaled: Option<bool>,
}

/// What an unclean stop leaves to assume of daily keys not in the store.
#[derive(Debug, Clone, Copy)]
pub(super) struct Implied {
    /// When the store found it had not stopped cleanly (Unix seconds).
    pub(super) since: i64,
    /// `--mark-reserve`: what a lost daily key may have issued.
    pub(super) reserve: u64,
}

impl HighWaterMarks {
    /// The mark of a key this store does not know: the reserve for a daily
    /// key whose window opened before the last unclean stop (it may have
    /// been issued, and its row lost), 0 otherwise.
    fn unknown_key_mark(&self, issuable_from: Option<i64>) -> u64 {
        match (self.implied, issuable_from) {
            (Some(i), Some(from)) if from <= i.since => i.reserve,
            _ => 0,
        }
    }
}

impl HighWaterMarks {
    /// Evicts, when over the cap, the marks nothing depends on: first
    /// those not used since the last sweep, then any.
    fn sweep(&mut self) {
        if self.by_key.len() < self.cap {
            return;
        }
        let target = self.cap - self.cap / 4;
        let before = self.by_key.len() as u64;
        let HighWaterMarks {
            by_key,
            dirty,
            unloaded,
            ..
        } = self;
        let mut evict = |k: &Arc<str>| {
            if dirty.remove(k) {
                *unloaded += 1;
            }
        };
        by_key.retain(|k, m| {
            let keep = !m.evictable() || m.used;
            m.used = false;
            if !keep {
                evict(k);
            }
            keep
        });
        if by_key.len() > target {
            let mut over = by_key.len() - target;
            by_key.retain(|k, m| {
                if over > 0 && m.evictable() {
                    over -= 1;
                    evict(k);
                    return false;
                }
                true
            });
        }
        let evicted = before - self.by_key.len() as u64;
        self.removals += evicted;
        self.evicted_since_fold += evicted;
    }

    /// What [`HighWaterMarks::adopt`] compares, taken before a row is read.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            removals: self.removals,
            folds: self.folds,
        }
    }

    /// The mark log was folded into `marks`: every row of a key evicted
    /// before is in `marks` now.
    pub(super) fn log_folded(&mut self) {
        self.folds += 1;
        self.evicted_since_fold = 0;
    }

    /// Starts `key` verified from its row in `marks` (`None`: no row), read
    /// since `snap` was taken, when that row is the whole truth: the key
    /// is still not in memory and no mark left memory meanwhile (so none
    /// was made and lost for it since the read began: every number of
    /// this run would be in memory), no mark was evicted since the mark
    /// log was last folded and no fold happened during the read (so this
    /// run wrote no row of it to the log: rows of earlier runs are all in
    /// `marks`, the log being folded at every start), and the row is not
    /// pending reconciliation (that bookkeeping stays with the writer).
    /// Returns whether the key was adopted; otherwise its first number
    /// goes to the writer to be checked, as before.
    pub(super) fn adopt(
        &mut self,
        key: &str,
        row: Option<Row>,
        snap: Snapshot,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> bool {
        if self.by_key.contains_key(key)
            || snap != self.snapshot()
            || self.evicted_since_fold != 0
            || row.is_some_and(|r| r.dirty)
        {
            return false;
        }
        self.start_verified(key, row, expires_at, ttl, issuable_from);
        true
    }

    /// Starts `key` verified without reading its row, when the filter of
    /// keys on disk says it has none (and memory does not hold it).
    /// Returns whether it did.
    pub(super) fn start_absent(
        &mut self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> bool {
        if self.by_key.contains_key(key) || self.rows.may_have_row(key) {
            return false;
        }
        self.start_verified(key, None, expires_at, ttl, issuable_from);
        true
    }

    /// Puts `key` in memory, verified, from its row (`None`: no row).
    fn start_verified(
        &mut self,
        key: &str,
        row: Option<Row>,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) {
        let (value, ceiling) = match row {
            Some(r) if r.gen < self.suspect_below => (r.value.max(r.ceiling), r.ceiling),
            Some(r) => (r.value, r.ceiling),
            // No row: what an unknown key may hold, and the ceiling the
            // writer gives its first row (implied for a daily key).
            None => (
                self.unknown_key_mark(issuable_from),
                if expires_at.is_some() {
                    self.reserve
                } else {
                    0
                },
            ),
        };
        self.sweep();
        self.epochs += 1;
        let mark = Mark {
            epoch: self.epochs,
            ceiling: Some(ceiling),
            ..Mark::stored(value, expires_at, ttl)
        };
        self.by_key.insert(Arc::from(key), mark);
    }

    /// Puts marks of dirty keys read from disk in memory; a key memory
    /// holds without knowing it is pending (verified by a read, say)
    /// becomes pending. Returns how many were on disk only before.
    pub(super) fn load_pending(&mut self, rows: Vec<(Arc<str>, Mark)>) -> usize {
        let mut added = 0;
        for (key, mut stored) in rows {
            if self.dirty.contains(&key) {
                continue;
            }
            match self.by_key.get_mut(&key) {
                Some(m) => {
                    m.learn_disk(stored.value);
                    m.dirty_from = m.dirty_from.or(stored.dirty_from);
                    if !m.pending_on_disk {
                        m.pending_on_disk = true;
                        added += 1;
                    }
                }
                None => {
                    stored.pending_on_disk = true;
                    self.by_key.insert(key.clone(), stored);
                    added += 1;
                }
            }
            self.dirty.insert(key);
        }
        self.unloaded = self.unloaded.saturating_sub(added);
        added
    }

    /// Puts a mark read from disk in memory, unless memory has a newer one
    /// (a number drawn meanwhile).
    pub(super) fn learn(&mut self, key: &str, value: u64) {
        if let Some(m) = self.by_key.get_mut(key) {
            m.learn_disk(value);
        }
    }

    /// The stored `Arc` for `key`, inserting a fresh mark when missing.
    fn entry(
        &mut self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> (Arc<str>, &mut Mark) {
        let k: Arc<str> = match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => {
                self.sweep();
                let k: Arc<str> = Arc::from(key);
                let value = self.unknown_key_mark(issuable_from);
                self.epochs += 1;
                let mark = Mark {
                    epoch: self.epochs,
                    ..Mark::new(value, expires_at, ttl)
                };
                self.by_key.insert(k.clone(), mark);
                k
            }
        };
        let m = self.by_key.get_mut(key).expect("present above");
        m.used = true;
        m.expires_at = Mark::merge_expiry(m.expires_at, expires_at);
        if ttl.is_some() {
            m.ttl = ttl;
        }
        (k, m)
    }

    /// The next number of `key` from the store alone: one more than the
    /// mark, recorded and marked dirty, its write outstanding until
    /// [`HighWaterMarks::settle`].
    pub(super) fn issue(
        &mut self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> Result<Drawn, StoreError> {
        let (key, mark) = self.entry(key, expires_at, ttl, issuable_from);
        let value = mark
            .value
            .checked_add(1)
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| StoreError::Exhausted(key.to_string()))?;
        let from = *mark.dirty_from.get_or_insert(mark.value);
        mark.record(value);
        mark.writing += 1;
        let unchecked = mark.unchecked();
        let ceiling = mark.ceiling;
        self.dirty.insert(key.clone());
        let journaled = self.journal_if_covered(
            unchecked,
            ceiling,
            &key,
            Entry {
                key: &key,
                value,
                expires_at,
                ttl,
                dirty_from: Some(from),
            },
        );
        Ok(Drawn {
            key,
            value,
            from,
            unchecked,
            journaled,
        })
    }

    /// Appends `entry` to the journal when the number may be made durable
    /// by it alone: its mark was verified (no comparison with the disk is
    /// due) and it is at or below the key's ceiling (no fsync is due).
    /// Then it is handed to the writer; returns whether the writer must
    /// be woken for it (see [`Drawn::journaled`]).
    fn journal_if_covered(
        &mut self,
        unchecked: Option<Unchecked>,
        ceiling: Option<u64>,
        key: &Arc<str>,
        entry: Entry<'_>,
    ) -> Option<bool> {
        if unchecked.is_some() || ceiling.is_none_or(|c| entry.value > c) {
            return None;
        }
        let file = self.journal.as_mut()?.append(&entry)?;
        let wake = self.handed.is_empty();
        self.handed.push(Handed {
            key: key.clone(),
            value: entry.value,
            expires_at: entry.expires_at,
            ttl: entry.ttl,
            dirty_from: entry.dirty_from,
            file,
        });
        Some(wake)
    }

    /// The writer committed a journaled number of `key` (in `file`).
    pub(super) fn settle_journaled(&mut self, key: &str, file: u8) {
        if let Some(m) = self.by_key.get_mut(key) {
            m.writing = m.writing.saturating_sub(1);
        }
        if let Some(j) = self.journal.as_mut() {
            j.committed(file);
        }
    }

    /// A commit made `ceiling` the key's durable ceiling.
    pub(super) fn learn_ceiling(&mut self, key: &str, ceiling: u64) {
        if let Some(m) = self.by_key.get_mut(key) {
            m.ceiling = Some(m.ceiling.map_or(ceiling, |c| c.max(ceiling)));
        }
    }

    /// A write of `key`'s mark that was waited for is over: the writer
    /// committed it or failed it, or it never reached the writer. (The
    /// writer says so, not the request that waits: that request may be
    /// dropped with its client, and the mark could then never leave
    /// memory.)
    pub(super) fn write_ended(&mut self, key: &str) {
        if let Some(m) = self.by_key.get_mut(key) {
            m.writing = m.writing.saturating_sub(1);
        }
    }

    /// The writer's answer to a write of `key` (`sent`: how it was to be
    /// checked): a commit of an unchecked number verifies the mark (memory
    /// is at or above the disk now); a refusal raises it to the disk's.
    pub(super) fn settle(&mut self, key: &str, sent: Option<Unchecked>, outcome: Option<Settled>) {
        let Some((k, _)) = self.by_key.get_key_value(key) else {
            return;
        };
        let k = k.clone();
        let m = self.by_key.get_mut(key).expect("present above");
        // Only an unchecked number's answer carries the disk's state.
        let (on_disk, stale) = match outcome {
            Some(Settled::Written(Some(d))) => (d, false),
            Some(Settled::Stale(d)) => (d, true),
            // Checked, or a failed commit (which decides nothing).
            Some(Settled::Written(None)) | None => return,
        };
        m.learn_disk(on_disk.value);
        // The smallest base reported is the true one (one reported after
        // the writer forgot it is higher). A write of an earlier mark of
        // the key (pruned meanwhile) tells this one nothing.
        if sent.is_some_and(|u| u.epoch == m.epoch) {
            m.base = Some(m.base.map_or(on_disk.value, |b| b.min(on_disk.value)));
        }
        match on_disk.dirty {
            // Pending on disk since an earlier run: memory takes it over,
            // with where its local numbers began.
            Some(from) => {
                m.dirty_from = from.or(m.dirty_from).or(Some(on_disk.value));
                if !m.pending_on_disk {
                    m.pending_on_disk = true;
                    self.unloaded = self.unloaded.saturating_sub(1);
                }
                self.dirty.insert(k);
            }
            // Local numbers (if any are left to issue) begin above the
            // disk's mark, not at what memory assumed.
            None if stale => {
                if let Some(from) = m.dirty_from.as_mut() {
                    *from = (*from).max(on_disk.value);
                }
            }
            None => {}
        }
    }

    /// Registers a Redis request for `key` as in flight until the
    /// [`Flight`] is dropped; its floor is the mark now.
    pub(super) fn begin(
        marks: &Arc<Mutex<HighWaterMarks>>,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> Flight {
        let mut this = lock(marks);
        let (key, mark) = this.entry(key, expires_at, ttl, issuable_from);
        let start = mark.next_index;
        *mark.flights.entry(start).or_default() += 1;
        Flight {
            marks: marks.clone(),
            floor: mark.value,
            key,
            start,
            epoch: mark.unchecked().map(|u| u.epoch),
        }
    }

    /// Records `value`, a number Redis answered to `flight`, unless it may
    /// already have been issued since the request began. Returns the key
    /// and, unless the mark was verified when the request began, its epoch
    /// (the writer checks the number); the write is outstanding until
    /// [`HighWaterMarks::settle`].
    pub(super) fn claim(
        &mut self,
        flight: &Flight,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
    ) -> Result<Claimed, Claim> {
        if value > i64::MAX as u64 {
            return Err(Claim::Failed(StoreError::Exhausted(flight.key.to_string())));
        }
        let (key, mark) = self.entry(&flight.key, expires_at, ttl, None);
        if mark.maybe_issued(value, flight.start, flight.floor) {
            return Err(Claim::Taken { mark: mark.value });
        }
        mark.record(value);
        mark.writing += 1;
        let unchecked = match flight.epoch {
            Some(epoch) => Some(Unchecked {
                epoch,
                base: mark.base.filter(|_| epoch == mark.epoch),
            }),
            None => mark.unchecked(),
        };
        let ceiling = mark.ceiling;
        let journaled = self.journal_if_covered(
            unchecked,
            ceiling,
            &key,
            Entry {
                key: &key,
                value,
                expires_at,
                ttl,
                dirty_from: None,
            },
        );
        Ok(Claimed {
            key,
            unchecked,
            journaled,
        })
    }

    /// Redis holds at least `value` for `key`: the key is no longer dirty,
    /// unless it was issued past `value` meanwhile. Returns the key when
    /// that is to be recorded.
    pub(super) fn reconciled(&mut self, key: &str, value: u64) -> Option<Arc<str>> {
        let Some((k, m)) = self.by_key.get_key_value(key) else {
            // Evicted meanwhile: the writer checks the value on disk.
            return Some(Arc::from(key));
        };
        if m.value > value {
            return None;
        }
        let k = k.clone();
        self.dirty.remove(&k);
        if let Some(m) = self.by_key.get_mut(&k) {
            m.dirty_from = None;
        }
        Some(k)
    }

    /// Up to `limit` keys pending reconciliation, with their marks.
    pub(super) fn pending_batch(
        &self,
        limit: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Vec<PendingKey> {
        self.dirty
            .iter()
            .filter(|k| keep(k))
            .take(limit)
            .filter_map(|k| {
                self.by_key.get(k).map(|m| PendingKey {
                    key: k.clone(),
                    value: m.value,
                    ttl: m.ttl,
                    dirty_from: m.dirty_from,
                })
            })
            .collect()
    }

    /// While `key` is dirty: the mark its local numbers began from.
    pub(super) fn dirty_from(&self, key: &str) -> Option<u64> {
        if !self.dirty.contains(key) {
            return None;
        }
        self.by_key.get(key).and_then(|m| m.dirty_from)
    }

    /// Drops marks that expired before `now` (a daily key's mark outlives
    /// its window: no `NEXT` can name its key any more).
    pub(super) fn prune(&mut self, now: i64) {
        let before = self.by_key.len() as u64;
        self.by_key
            .retain(|_, m| m.expires_at.is_none_or(|t| t > now));
        self.removals += before - self.by_key.len() as u64;
        let HighWaterMarks { by_key, dirty, .. } = self;
        dirty.retain(|k| by_key.contains_key(k));
    }
}

/// Locks the marks. A panic while holding the lock leaves the map
/// consistent (every update is a single insert), so poisoning is ignored.
pub(super) fn lock(marks: &Mutex<HighWaterMarks>) -> MutexGuard<'_, HighWaterMarks> {
    marks.lock().unwrap_or_else(|p| p.into_inner())
}

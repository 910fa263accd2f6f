//! The SQLite local store: per-key high-water marks, and the rows the
//! capabilities keep on this host (tracker streams, the cache outbox).
//!
//! # What it owns
//!
//! For every sequence key this seqd has issued a number for, the highest
//! number issued (the *mark*), when the mark may be forgotten, and whether
//! the number came from this store rather than from Redis (*dirty*: Redis
//! has not been raised to it yet, so it is pending reconciliation). Every
//! mark is in `seqd.db`, or in the mark journal until `seqd.db` has it
//! (either survives a `kill -9`); memory holds those
//! of the keys in use, at most `--marks-in-memory` of them, read on every
//! request without blocking. A start loads only the keys pending
//! reconciliation: a mark not in memory is read from the disk when its key
//! is first used, or checked against the disk inside the commit its number
//! waits for (see `marks.rs`), so a store of ten million keys starts at
//! once and costs memory only for the keys used (and a filter of the keys
//! on disk, 10 bits each, built in the background after the start).
//!
//! # What it guarantees
//!
//! - A mark only ever rises, in memory and on disk.
//! - [`Store::issue`] and [`Store::claim`] return only once the new mark
//!   survives a `kill -9` of seqd: appended to the mark journal (a number
//!   of a key whose mark memory verified, at or below its ceiling; see
//!   `journal.rs`), or else committed to SQLite (written to the WAL). A
//!   journaled number reaches SQLite within a few milliseconds, and a
//!   start replays the journal before it serves.
//! - Power loss is covered by a *reserved ceiling* per key: a number above
//!   the key's ceiling is only returned after a commit that raised the
//!   ceiling (to the number plus `reserve`) and fsynced. Most commits are a
//!   plain WAL write (`synchronous=NORMAL`, which SQLite keeps durable
//!   across a process crash but not across a power loss); one in `reserve`
//!   numbers per key pays for an fsync, which also makes every earlier
//!   write durable. Stream and outbox writes always fsync.
//! - On open, exact marks are trusted when the last stop was clean (a final
//!   fsynced commit) or the machine has not rebooted since (same kernel
//!   boot id: the page cache still held every WAL write). Otherwise each
//!   key goes on above its ceiling, skipping at most `reserve` numbers: never
//!   a number twice.
//! - [`Store::claim`] refuses a number Redis returned if this store has
//!   itself issued it (or a higher one) for the key, so a Redis answer that
//!   was in flight while the store issued numbers can never duplicate one.
//! - SQLite runs on its own thread, fed by a bounded channel (and, for
//!   journaled numbers, a list it takes whole). The thread takes
//!   everything queued and writes it in one transaction (group commit): N
//!   concurrent requests cost one commit, and at most one fsync.
//! - Expired marks are pruned from disk and memory by [`Store::prune`];
//!   [`Store::prune_every`] is the task that does it.
//!
//! # Layout
//!
//! - `lock.rs`: the data directory, private and held by one seqd.
//! - `marks.rs`: the marks in memory and the never-twice rule (no SQLite).
//! - `schema.rs`: tables, migration, how the last run ended.
//! - `journal.rs`: the mark journal (durable numbers without a commit).
//! - `writer.rs`: the writer thread, group commit, fsync policy, the
//!   journal's replay.
//! - `reader.rs`: a key's row read on the thread that meets the key
//!   first; `filter.rs`: which keys may have a row at all (a key with
//!   none is not read), built by `scan.rs` on a thread of its own.
//! - `streams.rs`, `outbox.rs`: the rows of the tracker and the cache, and
//!   their SQL; `tables.rs`: the store's requests about them (ops of the
//!   writer's queue).
//! - `tests.rs`: the store's tests.
//!
//! The store knows no capability: it stores keys, numbers and rows.

mod filter;
mod journal;
mod lock;
mod marks;
mod outbox;
mod reader;
mod scan;
mod schema;
mod streams;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

pub use lock::{lock_data_dir, DataDirLock, LockError, LOCK_FILE};
pub use marks::{Claim, Flight, HighWaterMarks, PendingKey, DEFAULT_MARKS_IN_MEMORY};
pub use outbox::OutboxEntry;
pub use streams::StreamRow;

use marks::{Claimed, Settled, Unchecked};
use prometheus_client::metrics::counter::Counter;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use writer::{Op, Writer, QUEUE_CAPACITY};

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
    /// The store was written by a newer seqd, in a schema this one does
    /// not know: reading it could misread a mark.
    #[error(
        "the store {path} has schema version {found} (last opened by seqd {written_by}); \
         this seqd {seqd} reads schema versions up to {supported}. Run seqd {written_by} or newer \
         on this data directory: a rollback across a schema change is refused, never read \
         (see docs/operations.md, \"Upgrades and rollbacks\")"
    )]
    Newer {
        path: String,
        found: u32,
        written_by: String,
        supported: u32,
        seqd: &'static str,
    },
}

impl StoreError {
    /// True when SQLite had no room for the write.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Sqlite(e) if StoreState::of(e) == StoreState::Full)
    }
}

/// Draws of one number from memory before [`Store::issue`] gives up (see
/// there).
const ISSUE_ATTEMPTS: usize = 8;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// A `std::sync::Mutex`, not a Tokio one: nothing awaits while it is held.
    marks: Arc<Mutex<HighWaterMarks>>,
    tx: mpsc::Sender<Op>,
    counters: StoreCounters,
    /// The last dirty key read from disk (see [`Store::pending_batch`]).
    cursor: Arc<Mutex<Option<Arc<str>>>>,
    /// Gap-tracker states waiting to be handed to the writer together
    /// (see `streams.rs`).
    streams: Arc<Mutex<streams::PendingStreams>>,
    /// Reads of the rows of keys met for the first time, on the thread
    /// that serves them (see `reader.rs`).
    readers: Arc<reader::Readers>,
    /// The writer thread, joined when the last handle goes (declared after
    /// `tx`, which is dropped first and so ends the thread's queue): a
    /// journaled number is in SQLite once every handle is gone, so a store
    /// opened again in the same process never races a writer left behind.
    _thread: Arc<WriterThread>,
}

/// The writer's answer to a queued operation.
async fn answer<T>(wait: oneshot::Receiver<Result<T, String>>) -> Result<T, StoreError> {
    match wait.await {
        Ok(r) => r.map_err(StoreError::Commit),
        Err(_) => Err(StoreError::Stopped),
    }
}

/// A write of a mark not handed to the writer yet: ends it when dropped
/// armed (the request failed or was dropped before the writer had it).
struct Unqueued<'a> {
    store: &'a Store,
    key: &'a str,
    armed: bool,
}

impl Drop for Unqueued<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.lock().write_ended(self.key);
        }
    }
}

/// Joins the writer thread when dropped.
struct WriterThread(Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let handle = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Counters of the writer thread, exported as metrics
/// (`seqd_store_commits_total`, `seqd_store_fsyncs_total`): a fsync rate
/// close to the commit rate says `--mark-reserve` is too small.
#[derive(Default, Clone)]
pub struct StoreCounters {
    pub commits: Counter,
    /// Commits that fsynced.
    pub fsyncs: Counter,
    /// Commits that failed (`seqd_store_commit_failures_total`).
    pub commit_failures: Counter,
    /// Whether the store takes writes now, and whether the journal is in
    /// use (`HEALTH`'s `store` and `journal`).
    pub condition: Arc<Condition>,
    /// Gap-tracker state was committed without an fsync since the last
    /// one: [`Store::sync_every`] fsyncs it soon.
    pub(crate) streams_unsynced: Arc<std::sync::atomic::AtomicBool>,
}

/// What the store can do now, as `HEALTH` says it. The writer sets it
/// after every commit; it ends by itself when a commit succeeds again.
pub struct Condition {
    /// [`StoreState`] as a `u8`.
    state: std::sync::atomic::AtomicU8,
    /// The journal is mapped and takes numbers.
    journal: std::sync::atomic::AtomicBool,
    /// When a commit last failed for want of space: milliseconds since
    /// `epoch`, plus one (0: never).
    full_at: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl Default for Condition {
    fn default() -> Condition {
        Condition {
            state: Default::default(),
            journal: Default::default(),
            full_at: Default::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

/// While the disk is full, how long a number that needs a commit is
/// refused at once rather than tried: a commit on a full disk carries
/// every journaled number still waiting and fails slowly (0.2–0.6 s with
/// a full journal), and would fail again.
const FULL_REFUSE_FOR: Duration = Duration::from_millis(250);

/// Whether the store takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// The last commit succeeded.
    Ok,
    /// The last commit failed for want of space: numbers that must be
    /// committed are answered `unavailable` until space is freed.
    Full,
    /// The last commit failed otherwise (an I/O error, a read-only file
    /// system).
    Failing,
}

impl StoreState {
    /// The number `seqd_store_state` shows (and [`Condition`] keeps).
    pub fn code(self) -> u8 {
        match self {
            StoreState::Ok => 0,
            StoreState::Full => 1,
            StoreState::Failing => 2,
        }
    }

    fn from_code(code: u8) -> StoreState {
        match code {
            0 => StoreState::Ok,
            1 => StoreState::Full,
            _ => StoreState::Failing,
        }
    }

    /// The word `HEALTH` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::Full => "full",
            StoreState::Failing => "failing",
        }
    }

    /// The state a commit error puts the store in.
    fn of(error: &rusqlite::Error) -> StoreState {
        let full = match error {
            rusqlite::Error::SqliteFailure(e, _) => e.code == rusqlite::ErrorCode::DiskFull,
            _ => false,
        };
        if full {
            StoreState::Full
        } else {
            StoreState::Failing
        }
    }
}

impl Condition {
    pub fn state(&self) -> StoreState {
        StoreState::from_code(self.state.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets the state; returns the one it replaced.
    fn set(&self, state: StoreState) -> StoreState {
        StoreState::from_code(
            self.state
                .swap(state.code(), std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// True while numbers can be made durable by the journal.
    pub fn journal(&self) -> bool {
        self.journal.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A commit failed for want of space (the writer tells).
    fn found_full(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.full_at.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Why a write that needs a commit is refused without trying: the
    /// disk was full at a commit less than [`FULL_REFUSE_FOR`] ago.
    fn refusing(&self) -> Option<String> {
        let at = self.full_at.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        (at != 0
            && self.state() == StoreState::Full
            && now - at < FULL_REFUSE_FOR.as_millis() as u64)
            .then(|| {
                format!(
                    "database or disk is full (a commit is tried again within {} ms)",
                    FULL_REFUSE_FOR.as_millis()
                )
            })
    }
}

impl Store {
    /// Opens (or creates) `dir/seqd.db`, loads the marks of the keys
    /// pending reconciliation, and starts the writer thread.
    pub fn open(dir: &Path, now: i64, reserve: u64) -> Result<Store, StoreError> {
        let mut conn = schema::open(dir)?;
        let boot = schema::start_boot(&mut conn, schema::current_boot_id().as_deref(), now)?;
        let (found, records) = journal::Journal::open(dir)
            .map_err(|e| StoreError::Commit(format!("opening the mark journal: {e}")))?;
        let mut marks = HighWaterMarks::default();
        marks.implied = boot
            .unclean_since
            .map(|since| marks::Implied { since, reserve });
        marks.reserve = reserve;
        marks.suspect_below = boot.suspect_below;
        // After a reboot without a clean stop the journal's pages may be
        // lost or half written: its numbers are all at or below their
        // keys' ceilings, above which every key goes on.
        let exact = boot.suspect_below < boot.gen;
        let marks = Arc::new(Mutex::new(marks));
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = StoreCounters::default();
        let path = dir.join("seqd.db");
        let mut writer = Writer {
            path: path.clone(),
            conn,
            reserve,
            known: Default::default(),
            boot,
            full: true,
            logged: 0,
            counters: counters.clone(),
            marks: marks.clone(),
        };
        if exact && !records.is_empty() {
            let replayed = writer.replay(records)?;
            tracing::info!(keys = replayed, "marks replayed from the journal");
        }
        let journal = match found.map() {
            Ok(journal) => Some(journal),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the mark journal is not used: every number waits for the store's commit"
                );
                // Replayed or not to be read: its blocks go back to the
                // disk that may be short of them.
                found.discard();
                None
            }
        };
        counters
            .condition
            .journal
            .store(journal.is_some(), std::sync::atomic::Ordering::Relaxed);
        {
            let mut m = marks::lock(&marks);
            m.unloaded = schema::count_dirty(&writer.conn)?;
            m.journal = journal;
        }
        let thread = std::thread::Builder::new()
            .name("seqd-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        // Until it is built, a key met for the first time is read.
        if marks::lock(&marks).rows.start() {
            scan::build(&path, &marks);
        }
        Ok(Store {
            marks,
            tx,
            counters,
            cursor: Arc::new(Mutex::new(None)),
            streams: Arc::default(),
            readers: Arc::new(reader::Readers::new(path)),
            _thread: Arc::new(WriterThread(Mutex::new(Some(thread)))),
        })
    }

    /// The writer's commit and fsync counters, for the metrics.
    pub fn counters(&self) -> StoreCounters {
        self.counters.clone()
    }

    /// Whether the store takes writes and the journal is in use.
    pub fn condition(&self) -> Arc<Condition> {
        self.counters.condition.clone()
    }

    /// Keeps at most `cap` marks in memory (`--marks-in-memory`).
    pub fn limit_marks_in_memory(&self, cap: usize) {
        self.lock().cap = cap.max(1);
    }

    /// The highest number issued for `key` (0 when none): from memory, or
    /// from the disk for a key memory has not verified.
    pub async fn mark(&self, key: &str) -> Result<u64, StoreError> {
        if let Some(m) = self.lock().by_key.get(key).filter(|m| m.verified) {
            return Ok(m.value);
        }
        let (done, wait) = oneshot::channel();
        let on_disk = self
            .send(
                Op::Read {
                    key: Arc::from(key),
                    done,
                },
                wait,
            )
            .await?;
        let mut marks = self.lock();
        marks.learn(key, on_disk);
        Ok(marks
            .by_key
            .get(key)
            .map_or(on_disk, |m| m.value.max(on_disk)))
    }

    /// True when `key` holds numbers issued locally that Redis has not been
    /// raised to yet.
    pub fn is_dirty(&self, key: &str) -> bool {
        self.lock().dirty.contains(key)
    }

    /// While `key` holds numbers issued locally: the mark they began from.
    pub fn dirty_from(&self, key: &str) -> Option<u64> {
        self.lock().dirty_from(key)
    }

    /// How many marks are in memory (the disk may hold more).
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// How many keys are pending reconciliation with Redis (in memory and
    /// on disk only).
    pub fn pending(&self) -> usize {
        let marks = self.lock();
        marks.dirty.len() + marks.unloaded
    }

    /// Up to `limit` keys pending reconciliation, with their marks: those
    /// in memory, and when they are fewer, the next page of those on disk
    /// only (read in key order, from where the last page ended).
    pub async fn pending_batch(
        &self,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<PendingKey>, StoreError> {
        let short = {
            let marks = self.lock();
            marks.dirty.len() < limit && marks.unloaded > 0
        };
        if short {
            let after = self
                .cursor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let (done, wait) = oneshot::channel();
            // A short page from the start is every dirty row on disk: all
            // are in memory then, whatever the count said (it drifts when
            // a key is reconciled after its mark was evicted).
            let from_start = after.is_none();
            let page = self
                .send(Op::LoadDirty { after, limit, done }, wait)
                .await?;
            let all = from_start && page.len() < limit;
            let last = (page.len() == limit)
                .then(|| page.last().map(|(k, _)| k.clone()))
                .flatten();
            *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = last;
            let mut marks = self.lock();
            marks.load_pending(page);
            if all {
                marks.unloaded = 0;
            }
        }
        Ok(self.lock().pending_batch(limit, keep))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HighWaterMarks> {
        marks::lock(&self.marks)
    }

    /// Issues the next number for `key` from the store alone (local mode,
    /// or Redis unavailable): one more than the mark, made durable before it
    /// is returned. The key becomes dirty: pending reconciliation with Redis.
    ///
    /// `issuable_from` (daily keys): when the key's window opened, which
    /// decides whether a key this store does not know may have been issued
    /// before an unclean stop (see [`HighWaterMarks`]).
    pub async fn issue(
        &self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> Result<u64, StoreError> {
        // A key memory had not verified may be refused once: its mark on
        // disk was higher than memory assumed. Memory then holds the disk's
        // mark and draws again. (Only an eviction between the two, under a
        // flood of new keys, could make that happen again.)
        for _ in 0..ISSUE_ATTEMPTS {
            let d = self.lock().issue(key, expires_at, ttl, issuable_from)?;
            if let Some(wake) = d.journaled {
                if wake {
                    self.wake_writer();
                }
                return Ok(d.value);
            }
            // Commits may complete out of order relative to the in-memory
            // increments; that is safe because the disk only keeps the
            // maximum.
            let settled = self
                .persist(&d.key, d.value, expires_at, ttl, Some(d.from), d.unchecked)
                .await?;
            if let Settled::Written(_) = settled {
                return Ok(d.value);
            }
        }
        Err(StoreError::Commit(format!(
            "the mark of {key} on disk kept moving past memory's"
        )))
    }

    /// Begins a Redis request for `key`: returns the floor to send (the
    /// mark) and registers the request as in flight until the [`Flight`]
    /// is dropped.
    pub fn begin(
        &self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) -> Flight {
        HighWaterMarks::begin(&self.marks, key, expires_at, ttl, issuable_from)
    }

    /// Call before [`Store::issue`] or [`Store::begin`]: for a key memory
    /// does not hold, reads its row here, on the calling thread, so that
    /// memory starts it verified (see `HighWaterMarks::adopt`) and its
    /// first number, like the next ones, can be made durable by the
    /// journal instead of waiting for the writer to check it against the
    /// disk. When the read fails or cannot be trusted whole, nothing
    /// changes: the key starts unverified and the writer checks its first
    /// number, as it always may.
    pub fn read_if_new(
        &self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        issuable_from: Option<i64>,
    ) {
        let snap = {
            let mut marks = self.lock();
            if marks.by_key.contains_key(key)
                || marks.start_absent(key, expires_at, ttl, issuable_from)
                || marks.evicted_since_fold != 0
            {
                return;
            }
            marks.snapshot()
        };
        match self.readers.row(key) {
            Ok(row) => {
                self.lock()
                    .adopt(key, row, snap, expires_at, ttl, issuable_from);
            }
            Err(e) => tracing::debug!(error = %e, key, "reading a new key's row failed"),
        }
    }

    /// Records `value`, a number Redis answered to `flight`, as issued:
    /// raises the mark to it, durable before it returns. Refuses (with the
    /// current mark) a number that may already have been issued since the
    /// request began — by the store, or by Redis to another request after
    /// Redis went back in time (lost data, a lagging replica). The caller
    /// then asks Redis again with the new mark as the floor.
    pub async fn claim(
        &self,
        flight: &Flight,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
    ) -> Result<(), Claim> {
        let claimed = self.lock().claim(flight, value, expires_at, ttl)?;
        self.commit_claim(claimed, value, expires_at, ttl).await
    }

    /// The second half of [`Store::claim`]: makes a number memory accepted
    /// durable — handed over when the journal holds it already, else
    /// committed (checked by the writer unless its mark was verified when
    /// the request began).
    async fn commit_claim(
        &self,
        Claimed {
            key,
            unchecked,
            journaled,
        }: Claimed,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
    ) -> Result<(), Claim> {
        if let Some(wake) = journaled {
            if wake {
                self.wake_writer();
            }
            return Ok(());
        }
        match self
            .persist(&key, value, expires_at, ttl, None, unchecked)
            .await
            .map_err(Claim::Failed)?
        {
            Settled::Written(_) => Ok(()),
            // Issued in an earlier run (its mark was not in memory).
            Settled::Stale(on_disk) => Err(Claim::Taken {
                mark: on_disk.value,
            }),
        }
    }

    /// Records that Redis holds at least `value` for `key`: the key is no
    /// longer pending, unless it was issued past `value` meanwhile.
    pub async fn reconciled(&self, key: &str, value: u64) -> Result<(), StoreError> {
        let Some(key) = self.lock().reconciled(key, value) else {
            return Ok(());
        };
        let (done, wait) = oneshot::channel();
        self.send(Op::Reconciled { key, value, done }, wait).await
    }

    /// Sends a number drawn in memory to the writer, waits for its commit
    /// and settles the write in memory.
    async fn persist(
        &self,
        key: &Arc<str>,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        dirty_from: Option<u64>,
        unchecked: Option<Unchecked>,
    ) -> Result<Settled, StoreError> {
        let (done, wait) = oneshot::channel();
        let op = Op::Raise {
            key: key.clone(),
            value,
            expires_at,
            ttl,
            dirty_from,
            unchecked,
            journaled: None,
            done: Some(done),
        };
        // Until the writer has the write, ending it is this request's
        // part, dropped or not; from then on the writer's.
        let mut unqueued = Unqueued {
            store: self,
            key,
            armed: true,
        };
        if let Some(why) = self.counters.condition.refusing() {
            // Ended by the guard; the number is skipped.
            return Err(StoreError::Commit(why));
        }
        self.tx.send(op).await.map_err(|_| StoreError::Stopped)?;
        unqueued.armed = false;
        let settled = answer(wait).await;
        self.lock()
            .settle(key, unchecked, settled.as_ref().ok().copied());
        settled
    }

    /// Wakes the writer for journaled numbers handed to it. A full queue
    /// means it is busy and takes them soon anyway; a closed one, that the
    /// store is closed (they are in the journal, replayed at the next
    /// start).
    fn wake_writer(&self) {
        let _ = self.tx.try_send(Op::Wake);
    }

    /// Queues `op` for the writer and waits for its commit.
    async fn send<T>(
        &self,
        op: Op,
        wait: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, StoreError> {
        self.tx.send(op).await.map_err(|_| StoreError::Stopped)?;
        answer(wait).await
    }

    /// Drops marks that expired before `now`, on disk and in memory.
    /// Returns how many rows were deleted on disk.
    pub async fn prune(&self, now: i64) -> Result<usize, StoreError> {
        self.lock().prune(now);
        let (done, wait) = oneshot::channel();
        self.send(Op::Prune { now, done }, wait).await
    }

    /// Waits until everything queued before this call is committed and
    /// fsynced.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.hand_over_streams().await?;
        let (done, wait) = oneshot::channel();
        self.send(Op::Flush { done }, wait).await
    }

    /// Flushes, records a clean stop (the next start trusts the exact marks
    /// even after a reboot) and stops the writer: every later write fails.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.hand_over_streams().await?;
        let (done, wait) = oneshot::channel();
        self.send(Op::Close { done }, wait).await
    }

    /// The mark of `key` as stored on disk and its dirty flag (for tests
    /// and diagnostics; runs a blocking query on its own connection).
    pub fn read_mark_from_disk(dir: &Path, key: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        Ok(conn
            .query_row(
                "SELECT max(value), max(dirty) FROM
                     (SELECT value, dirty FROM marks WHERE key = ?1
                      UNION ALL SELECT value, dirty FROM mark_log WHERE key = ?1)
                 HAVING count(*) > 0",
                [key],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)),
            )
            .optional()?)
    }

    /// Makes gap-tracker state durable against power loss within `every`
    /// of its write: stream writes are plain WAL writes (safe across
    /// `kill -9`), not an fsync per event; this fsyncs them, only when
    /// some are waiting.
    pub async fn sync_every(self, every: Duration, stop: CancellationToken) {
        use std::sync::atomic::Ordering;
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let waiting = !self.pending_streams_is_empty();
            if waiting || self.counters.streams_unsynced.load(Ordering::Relaxed) {
                if let Err(e) = self.flush().await {
                    tracing::warn!(error = %e, "syncing gap-tracker state failed");
                }
            }
        }
    }

    /// Prunes every `every` until `stop`: marks that expired, and streams
    /// not updated within `stream_retention`.
    pub async fn prune_every(
        self,
        every: Duration,
        stream_retention: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let now = chrono::Utc::now();
            match self.prune(now.timestamp()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "expired high-water marks pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning high-water marks failed"),
            }
            let before_ms = now.timestamp_millis() - stream_retention.as_millis() as i64;
            if let Err(e) = self.prune_streams(before_ms).await {
                tracing::warn!(error = %e, "pruning gap-tracker streams failed");
            }
        }
    }
}

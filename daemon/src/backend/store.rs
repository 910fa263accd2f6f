//! The SQLite local store: per-key high-water marks.
//!
//! # What it owns
//!
//! For every sequence key this seqd has issued a number for, the highest
//! number issued (the *mark*), when the mark may be forgotten, and whether
//! the number came from this store rather than from Redis (*dirty*: Redis
//! has not been raised to it yet, so it is pending reconciliation). The
//! marks live twice: in memory (read on every request, without blocking)
//! and in `seqd.db` (so they survive a `kill -9`).
//!
//! # What it guarantees
//!
//! - A mark only ever rises, in memory and on disk.
//! - [`Store::issue`] and [`Store::claim`] return only after the new mark is
//!   committed to SQLite (written to the WAL), so a number survives a
//!   `kill -9` of seqd before its reply leaves.
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
//! - SQLite runs on its own thread, fed by a bounded channel. The thread
//!   takes everything queued and writes it in one transaction (group
//!   commit): N concurrent requests cost one commit, and at most one fsync.
//! - Expired marks are pruned from disk and memory by [`Store::prune`].

use crate::capabilities::tracker::{decode_missing, encode_missing, StreamState, STREAM_TTL_SECS};
use prometheus_client::metrics::counter::Counter;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The most operations the writer thread folds into one transaction. It
/// bounds the latency of the first request of a batch, not throughput.
const MAX_BATCH: usize = 4096;
/// Operations queued for the writer before senders wait (backpressure).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// A Redis request for a key, in flight. Dropping it (answered, failed or
/// cancelled by a timeout) lets the store forget numbers no other request
/// can collide with.
pub struct Flight {
    store: Store,
    key: Arc<str>,
    /// The key's mark when the request began: the floor to send to Redis.
    pub floor: u64,
    start: u64,
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(m) = self.store.lock().by_key.get_mut(&*self.key) {
            m.end_flight(self.start);
        }
    }
}

/// Why [`Store::claim`] refused a number.
#[derive(Debug, thiserror::Error)]
pub enum Claim {
    /// The store issued this number (or a higher one) itself; ask Redis
    /// again with `mark` as the floor.
    #[error("number already issued locally; mark is {mark}")]
    Taken { mark: u64 },
    #[error(transparent)]
    Failed(StoreError),
}

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

/// Most numbers remembered per key while Redis requests for it are in
/// flight; past it, any Redis answer at or below the mark is refused (and
/// asked again), which is safe, only slower.
const MAX_CLAIMS_IN_FLIGHT: usize = 4096;

/// A key's mark in memory.
#[derive(Debug, Clone)]
struct Mark {
    value: u64,
    /// Unix seconds after which the mark may be dropped; `None` = never.
    expires_at: Option<i64>,
    /// Redis TTL of the key, for reconciliation.
    ttl: Option<u64>,
    /// Numbers issued (by Redis or the store) while Redis requests for this
    /// key were in flight, each with its issue index. A Redis answer can
    /// only duplicate a number issued after its request began: everything
    /// before is at or below the floor the request carried.
    recent: VecDeque<(u64, u64)>,
    /// Index given to the next number issued.
    next_index: u64,
    /// Start indexes of the Redis requests in flight (a multiset).
    flights: BTreeMap<u64, u32>,
}

impl Mark {
    fn new(value: u64, expires_at: Option<i64>, ttl: Option<u64>) -> Mark {
        Mark {
            value,
            expires_at,
            ttl,
            recent: VecDeque::new(),
            next_index: 0,
            flights: BTreeMap::new(),
        }
    }

    /// Records `n` as issued now.
    fn record(&mut self, n: u64) {
        self.value = self.value.max(n);
        if !self.flights.is_empty() && self.recent.len() < MAX_CLAIMS_IN_FLIGHT {
            self.recent.push_back((n, self.next_index));
        }
        self.next_index += 1;
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

    fn merge_expiry(a: Option<i64>, b: Option<i64>) -> Option<i64> {
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
}

enum Op {
    Raise {
        key: Arc<str>,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        /// True when the number came from the store, not Redis.
        dirty: bool,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Redis holds at least `value` for `key` now.
    Reconciled {
        key: Arc<str>,
        value: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Prune {
        now: i64,
        done: oneshot::Sender<Result<usize, String>>,
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

/// A cache invalidation waiting for Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OutboxEntry {
    /// Delete this key.
    Key(String),
    /// Delete every key with this prefix (the counter families excepted).
    Prefix(String),
}

impl OutboxEntry {
    fn columns(&self) -> (i64, &str) {
        match self {
            OutboxEntry::Key(k) => (0, k),
            OutboxEntry::Prefix(p) => (1, p),
        }
    }
}

/// A gap-tracker stream as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub key: String,
    pub state: StreamState,
    /// Changed while Redis could not be reached: to be written to Redis.
    pub dirty: bool,
}

#[derive(Default)]
struct Marks {
    by_key: HashMap<Arc<str>, Mark>,
    /// Keys whose mark is dirty (issued locally, Redis not raised yet).
    dirty: HashSet<Arc<str>>,
}

impl Marks {
    /// The stored `Arc` for `key`, inserting a fresh mark when missing.
    fn entry(
        &mut self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
    ) -> (Arc<str>, &mut Mark) {
        let k: Arc<str> = match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(key);
                self.by_key.insert(k.clone(), Mark::new(0, expires_at, ttl));
                k
            }
        };
        let m = self.by_key.get_mut(key).expect("present above");
        m.expires_at = Mark::merge_expiry(m.expires_at, expires_at);
        if ttl.is_some() {
            m.ttl = ttl;
        }
        (k, m)
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// A `std::sync::Mutex`, not a Tokio one: nothing awaits while it is held.
    marks: Arc<Mutex<Marks>>,
    tx: mpsc::Sender<Op>,
    counters: StoreCounters,
}

/// Counters of the writer thread, exported as metrics
/// (`seqd_store_commits_total`, `seqd_store_fsyncs_total`): a fsync rate
/// close to the commit rate says `--mark-reserve` is too small.
#[derive(Default, Clone)]
pub struct StoreCounters {
    pub commits: Counter,
    /// Commits that fsynced.
    pub fsyncs: Counter,
}

/// The kernel's id of this boot. A page cache survives a process crash but
/// never a reboot: the same id means every WAL write of the previous run is
/// still there.
fn current_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Records this start (durably) and tells whether the marks on disk are
/// exact: true after a clean stop, on the same boot as the last run, or for
/// a store that predates the bookkeeping (it fsynced every mark). When they
/// are not, every value on disk is raised to its key's ceiling first.
fn start_boot(conn: &mut Connection, boot: Option<&str>) -> rusqlite::Result<bool> {
    // IMMEDIATE: a read that turns into a write fails at once (busy
    // snapshot) if another connection wrote in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let get = |name: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
    };
    let (clean, last_boot) = (get("clean")?, get("boot_id")?);
    let exact = match clean.as_deref() {
        None | Some("1") => true,
        Some(_) => boot.is_some() && last_boot.as_deref() == boot,
    };
    if !exact {
        let raised = tx.execute(
            "UPDATE marks SET value = ceiling WHERE ceiling IS NOT NULL AND ceiling > value",
            [],
        )?;
        tracing::warn!(
            keys = raised,
            "seqd did not stop cleanly before a reboot or power loss: the last marks may be lost, \
             so every key goes on above its reserved ceiling"
        );
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('clean', '0'), ('boot_id', ?1)",
        [boot.unwrap_or("unknown")],
    )?;
    tx.commit()?;
    Ok(exact)
}

impl Store {
    /// Opens (or creates) `dir/seqd.db`, loads the marks that have not
    /// expired, and starts the writer thread.
    pub fn open(dir: &Path, now: i64, reserve: u64) -> Result<Store, StoreError> {
        let mut conn = Connection::open(dir.join("seqd.db"))?;
        // WAL lets the writer commit without blocking readers. Opening is
        // fsynced (FULL); the writer then picks the level per commit.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS marks (
                 key TEXT PRIMARY KEY,
                 value INTEGER NOT NULL,
                 expires_at INTEGER,
                 dirty INTEGER NOT NULL DEFAULT 0,
                 ttl INTEGER,
                 ceiling INTEGER
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 kind INTEGER NOT NULL,
                 target TEXT NOT NULL,
                 PRIMARY KEY (kind, target)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS streams (
                 key TEXT PRIMARY KEY,
                 last_seq INTEGER NOT NULL,
                 last_ts INTEGER NOT NULL,
                 gap_count INTEGER NOT NULL,
                 reset_count INTEGER NOT NULL,
                 missing TEXT NOT NULL,
                 dirty INTEGER NOT NULL DEFAULT 0
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (
                 name TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             ) WITHOUT ROWID;",
        )?;
        // A store written before ceilings existed fsynced every mark.
        let has_ceiling = conn
            .prepare("SELECT 1 FROM pragma_table_info('marks') WHERE name = 'ceiling'")?
            .exists([])?;
        if !has_ceiling {
            conn.execute_batch("ALTER TABLE marks ADD COLUMN ceiling INTEGER")?;
        }
        let exact = start_boot(&mut conn, current_boot_id().as_deref())?;
        let mut marks = Marks::default();
        let mut ceilings = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT key, value, expires_at, dirty, ttl, coalesce(ceiling, value) FROM marks
                 WHERE expires_at IS NULL OR expires_at > ?1",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            for row in rows {
                let (key, value, expires_at, dirty, ttl, ceiling) = row?;
                let key: Arc<str> = Arc::from(key);
                let ttl = ttl.map(|t| t.max(0) as u64);
                let (value, ceiling) = (value.max(0) as u64, ceiling.max(0) as u64);
                // Without exact marks, go on above the ceiling (start_boot
                // raised the values on disk to it as well).
                let value = if exact { value } else { value.max(ceiling) };
                marks
                    .by_key
                    .insert(key.clone(), Mark::new(value, expires_at, ttl));
                ceilings.insert(key.clone(), ceiling);
                if dirty != 0 {
                    marks.dirty.insert(key);
                }
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = StoreCounters::default();
        let writer = Writer {
            conn,
            reserve,
            ceilings,
            full: true,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("seqd-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            marks: Arc::new(Mutex::new(marks)),
            tx,
            counters,
        })
    }

    /// The writer's commit and fsync counters, for the metrics.
    pub fn counters(&self) -> StoreCounters {
        self.counters.clone()
    }

    /// The highest number issued for `key` (0 when none), from memory.
    pub fn mark(&self, key: &str) -> u64 {
        self.lock().by_key.get(key).map_or(0, |m| m.value)
    }

    /// True when `key` holds numbers issued locally that Redis has not been
    /// raised to yet.
    pub fn is_dirty(&self, key: &str) -> bool {
        self.lock().dirty.contains(key)
    }

    /// How many keys have a mark in memory.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// How many keys are pending reconciliation with Redis.
    pub fn pending(&self) -> usize {
        self.lock().dirty.len()
    }

    /// Up to `limit` keys pending reconciliation, with their marks.
    pub fn pending_batch(&self, limit: usize) -> Vec<PendingKey> {
        let marks = self.lock();
        marks
            .dirty
            .iter()
            .take(limit)
            .filter_map(|k| {
                marks.by_key.get(k).map(|m| PendingKey {
                    key: k.clone(),
                    value: m.value,
                    ttl: m.ttl,
                })
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        // A panic while holding this lock leaves the map consistent (every
        // update is a single insert), so poisoning is ignored.
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues the next number for `key` from the store alone (local mode,
    /// or Redis unavailable): one more than the mark, made durable before it
    /// is returned. The key becomes dirty: pending reconciliation with Redis.
    pub async fn issue(
        &self,
        key: &str,
        expires_at: Option<i64>,
        ttl: Option<u64>,
    ) -> Result<u64, StoreError> {
        let (key, value) = {
            let mut marks = self.lock();
            let (key, mark) = marks.entry(key, expires_at, ttl);
            let value = mark
                .value
                .checked_add(1)
                .filter(|v| *v <= i64::MAX as u64)
                .ok_or_else(|| StoreError::Exhausted(key.to_string()))?;
            mark.record(value);
            marks.dirty.insert(key.clone());
            (key, value)
        };
        // Commits may complete out of order relative to the in-memory
        // increments; that is safe because the disk only keeps the maximum.
        self.persist(key, value, expires_at, ttl, true).await?;
        Ok(value)
    }

    /// Begins a Redis request for `key`: returns the floor to send (the
    /// mark) and registers the request as in flight until the [`Flight`]
    /// is dropped.
    pub fn begin(&self, key: &str, expires_at: Option<i64>, ttl: Option<u64>) -> Flight {
        let mut marks = self.lock();
        let (key, mark) = marks.entry(key, expires_at, ttl);
        let start = mark.next_index;
        *mark.flights.entry(start).or_default() += 1;
        Flight {
            store: self.clone(),
            floor: mark.value,
            key,
            start,
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
        if value > i64::MAX as u64 {
            return Err(Claim::Failed(StoreError::Exhausted(flight.key.to_string())));
        }
        let key = {
            let mut marks = self.lock();
            let (key, mark) = marks.entry(&flight.key, expires_at, ttl);
            if mark.maybe_issued(value, flight.start, flight.floor) {
                return Err(Claim::Taken { mark: mark.value });
            }
            mark.record(value);
            key
        };
        self.persist(key, value, expires_at, ttl, false)
            .await
            .map_err(Claim::Failed)
    }

    /// Records that Redis holds at least `value` for `key`: the key is no
    /// longer pending, unless it was issued past `value` meanwhile.
    pub async fn reconciled(&self, key: &str, value: u64) -> Result<(), StoreError> {
        let key = {
            let mut marks = self.lock();
            let Some((k, m)) = marks.by_key.get_key_value(key) else {
                return Ok(());
            };
            if m.value > value {
                return Ok(());
            }
            let k = k.clone();
            marks.dirty.remove(&k);
            k
        };
        let (done, wait) = oneshot::channel();
        self.send(Op::Reconciled { key, value, done }, wait).await
    }

    async fn persist(
        &self,
        key: Arc<str>,
        value: u64,
        expires_at: Option<i64>,
        ttl: Option<u64>,
        dirty: bool,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let op = Op::Raise {
            key,
            value,
            expires_at,
            ttl,
            dirty,
            done,
        };
        self.send(op, wait).await
    }

    /// Queues `op` for the writer and waits for its commit.
    async fn send<T>(
        &self,
        op: Op,
        wait: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, StoreError> {
        self.tx.send(op).await.map_err(|_| StoreError::Stopped)?;
        match wait.await {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Writes gap-tracker stream states, durable before it returns.
    pub async fn save_streams(&self, rows: Vec<StreamRow>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::SaveStreams { rows, done }, wait).await
    }

    /// Forgets streams (`None`: all of them).
    pub async fn delete_streams(&self, keys: Option<Vec<String>>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::DeleteStreams { keys, done }, wait).await
    }

    /// Marks streams as written to Redis, unless they changed since
    /// (`last_ts` differs).
    pub async fn streams_synced(&self, keys: Vec<(String, i64)>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::StreamsSynced { keys, done }, wait).await
    }

    /// Queues cache invalidations durably (`add`) or records them as done.
    pub async fn outbox(&self, entries: Vec<OutboxEntry>, add: bool) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::Outbox { entries, add, done }, wait).await
    }

    /// Reads the cache outbox (at start; blocking, on its own connection).
    pub fn load_outbox(dir: &Path) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        let mut stmt = conn.prepare("SELECT kind, target FROM outbox")?;
        let rows = stmt.query_map([], |r| {
            let target: String = r.get(1)?;
            Ok(match r.get::<_, i64>(0)? {
                0 => OutboxEntry::Key(target),
                _ => OutboxEntry::Prefix(target),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reads every stream updated within the TTL before `now_ms` (at
    /// start; blocking, on its own connection).
    pub fn load_streams(dir: &Path, now_ms: i64) -> Result<Vec<StreamRow>, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        let mut stmt = conn.prepare(
            "SELECT key, last_seq, last_ts, gap_count, reset_count, missing, dirty
             FROM streams WHERE last_ts > ?1",
        )?;
        let since = now_ms - STREAM_TTL_SECS as i64 * 1000;
        let rows = stmt.query_map([since], |r| {
            Ok(StreamRow {
                key: r.get(0)?,
                state: StreamState {
                    last_seq: r.get::<_, i64>(1)? as u64,
                    last_ts_ms: r.get(2)?,
                    gap_count: r.get::<_, i64>(3)? as u64,
                    reset_count: r.get::<_, i64>(4)? as u64,
                    missing: decode_missing(&r.get::<_, String>(5)?),
                },
                dirty: r.get::<_, i64>(6)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops marks that expired before `now`, on disk and in memory.
    /// Returns how many rows were deleted on disk.
    pub async fn prune(&self, now: i64) -> Result<usize, StoreError> {
        {
            let mut marks = self.lock();
            marks
                .by_key
                .retain(|_, m| m.expires_at.is_none_or(|t| t > now));
            let Marks { by_key, dirty } = &mut *marks;
            dirty.retain(|k| by_key.contains_key(k));
        }
        let (done, wait) = oneshot::channel();
        self.send(Op::Prune { now, done }, wait).await
    }

    /// Waits until everything queued before this call is committed and
    /// fsynced.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::Flush { done }, wait).await
    }

    /// Flushes, records a clean stop (the next start trusts the exact marks
    /// even after a reboot) and stops the writer: every later write fails.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::Close { done }, wait).await
    }

    /// The mark of `key` as stored on disk and its dirty flag (for tests
    /// and diagnostics; runs a blocking query on its own connection).
    pub fn read_mark_from_disk(dir: &Path, key: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        Ok(conn
            .query_row(
                "SELECT value, dirty FROM marks WHERE key = ?1",
                [key],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)),
            )
            .optional()?)
    }
}

/// The writer thread's state: the connection, and each key's ceiling as
/// last fsynced.
struct Writer {
    conn: Connection,
    reserve: u64,
    ceilings: HashMap<Arc<str>, u64>,
    /// The connection's `synchronous` level is FULL now.
    full: bool,
    counters: StoreCounters,
}

impl Writer {
    /// One transaction per batch of queued operations, until the store is
    /// closed or every handle is gone.
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
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
        // New ceilings for the keys whose numbers pass theirs.
        let mut raised: Vec<(Arc<str>, u64)> = Vec::new();
        for (key, row) in &folded {
            let ceiling = self.ceilings.get(&***key).copied().unwrap_or(0);
            if row.value > ceiling {
                let new = row.value.saturating_add(self.reserve).min(i64::MAX as u64);
                raised.push(((*key).clone(), new));
            }
        }
        let sync = !raised.is_empty() || batch.iter().any(Op::must_sync);
        if sync != self.full {
            let level = if sync { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level)?;
            self.full = sync;
        }
        let tx = self.conn.transaction()?;
        write_marks(&tx, &folded, &raised, &reconciled)?;
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
        if sync {
            self.counters.fsyncs.inc();
        }
        // Only now are the new ceilings durable.
        self.ceilings.extend(raised);
        if prune_before.is_some() {
            self.ceilings = load_ceilings(&self.conn)?;
        }
        Ok(pruned)
    }
}

impl Op {
    /// Writes a power loss must not undo: an invalidation promised to
    /// readers, a stream's state, and whatever a flush or close waits for.
    fn must_sync(&self) -> bool {
        match self {
            Op::Raise { .. } | Op::Reconciled { .. } | Op::Prune { .. } => false,
            Op::Flush { .. }
            | Op::Close { .. }
            | Op::SaveStreams { .. }
            | Op::DeleteStreams { .. }
            | Op::StreamsSynced { .. }
            | Op::Outbox { .. } => true,
        }
    }
}

/// Writes a row that changes every time: a commit without any frame in the
/// WAL would not fsync, and a flush must make the earlier plain writes
/// durable.
fn touch(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('flushes', '1')
         ON CONFLICT(name) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

/// Every key's ceiling as stored (each was fsynced when written).
fn load_ceilings(conn: &Connection) -> rusqlite::Result<HashMap<Arc<str>, u64>> {
    let mut stmt = conn.prepare("SELECT key, coalesce(ceiling, value) FROM marks")?;
    let rows = stmt.query_map([], |r| {
        let key: String = r.get(0)?;
        Ok((Arc::from(key), r.get::<_, i64>(1)?.max(0) as u64))
    })?;
    rows.collect()
}

fn save_streams(tx: &rusqlite::Transaction<'_>, rows: &[StreamRow]) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO streams (key, last_seq, last_ts, gap_count, reset_count, missing, dirty)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(key) DO UPDATE SET
             last_seq = excluded.last_seq, last_ts = excluded.last_ts,
             gap_count = excluded.gap_count, reset_count = excluded.reset_count,
             missing = excluded.missing, dirty = max(dirty, excluded.dirty)",
    )?;
    for r in rows {
        let st = &r.state;
        upsert.execute(params![
            r.key,
            st.last_seq as i64,
            st.last_ts_ms,
            st.gap_count as i64,
            st.reset_count as i64,
            encode_missing(&st.missing),
            r.dirty as i64
        ])?;
    }
    Ok(())
}

/// What one batch writes for a key: the highest value, the latest expiry,
/// the TTL, and whether any of its numbers came from the store (dirty).
struct Row {
    value: u64,
    expires_at: Option<i64>,
    ttl: Option<u64>,
    dirty: bool,
}

impl Row {
    fn merge(&mut self, other: &Row) {
        self.value = self.value.max(other.value);
        self.expires_at = Mark::merge_expiry(self.expires_at, other.expires_at);
        self.ttl = self.ttl.or(other.ttl);
        self.dirty |= other.dirty;
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
                dirty,
                ..
            } => {
                let row = Row {
                    value: *value,
                    expires_at: *expires_at,
                    ttl: *ttl,
                    dirty: *dirty,
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
    reconciled: &[(&str, u64)],
) -> rusqlite::Result<()> {
    let ceiling_of: HashMap<&str, u64> = raised.iter().map(|(k, c)| (&**k, *c)).collect();
    let mut upsert = tx.prepare_cached(
        "INSERT INTO marks (key, value, expires_at, dirty, ttl, ceiling)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(key) DO UPDATE SET
             value = max(value, excluded.value),
             expires_at = CASE
                 WHEN expires_at IS NULL OR excluded.expires_at IS NULL THEN NULL
                 ELSE max(expires_at, excluded.expires_at) END,
             dirty = max(dirty, excluded.dirty),
             ttl = coalesce(excluded.ttl, ttl),
             ceiling = CASE
                 WHEN excluded.ceiling IS NULL THEN ceiling
                 ELSE max(coalesce(ceiling, 0), excluded.ceiling) END",
    )?;
    for (key, r) in folded {
        let key: &str = key;
        upsert.execute(params![
            key,
            r.value as i64,
            r.expires_at,
            r.dirty as i64,
            r.ttl.map(|t| t as i64),
            ceiling_of.get(key).map(|c| *c as i64)
        ])?;
    }
    // After the raises of the same batch: a key issued past the reconciled
    // value stays dirty.
    let mut clean =
        tx.prepare_cached("UPDATE marks SET dirty = 0 WHERE key = ?1 AND value <= ?2")?;
    for (key, value) in reconciled {
        clean.execute(params![key, *value as i64])?;
    }
    Ok(())
}

/// Stream and outbox operations, in their order: a delete after a save wins.
fn write_others(tx: &rusqlite::Transaction<'_>, batch: &[Op]) -> rusqlite::Result<()> {
    for op in batch {
        match op {
            Op::SaveStreams { rows, .. } => save_streams(tx, rows)?,
            Op::DeleteStreams { keys: None, .. } => {
                tx.execute("DELETE FROM streams", [])?;
            }
            Op::DeleteStreams {
                keys: Some(keys), ..
            } => {
                let mut del = tx.prepare_cached("DELETE FROM streams WHERE key = ?1")?;
                for k in keys {
                    del.execute([k])?;
                }
            }
            Op::StreamsSynced { keys, .. } => {
                let mut clean = tx.prepare_cached(
                    "UPDATE streams SET dirty = 0 WHERE key = ?1 AND last_ts = ?2",
                )?;
                for (k, ts) in keys {
                    clean.execute(params![k, ts])?;
                }
            }
            Op::Outbox { entries, add, .. } => {
                let sql = if *add {
                    "INSERT OR IGNORE INTO outbox (kind, target) VALUES (?1, ?2)"
                } else {
                    "DELETE FROM outbox WHERE kind = ?1 AND target = ?2"
                };
                let mut stmt = tx.prepare_cached(sql)?;
                for e in entries {
                    let (kind, target) = e.columns();
                    stmt.execute(params![kind, target])?;
                }
            }
            Op::Raise { .. }
            | Op::Reconciled { .. }
            | Op::Prune { .. }
            | Op::Flush { .. }
            | Op::Close { .. } => {}
        }
    }
    Ok(())
}

/// Deletes expired streams and marks; returns the marks deleted.
fn prune(tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM streams WHERE last_ts <= ?1",
        [(now - STREAM_TTL_SECS as i64) * 1000],
    )?;
    tx.execute(
        "DELETE FROM marks WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        [now],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One Redis request that began now and was answered `n`.
    async fn claim(store: &Store, key: &str, n: u64) -> Result<(), Claim> {
        let flight = store.begin(key, None, None);
        store.claim(&flight, n, None, None).await
    }

    #[tokio::test]
    async fn issued_numbers_survive_reopen_and_only_rise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        assert_eq!(store.issue("k", None, None).await.unwrap(), 1);
        assert_eq!(store.issue("k", None, None).await.unwrap(), 2);
        claim(&store, "k", 10).await.unwrap();
        assert!(claim(&store, "k", 5).await.is_err(), "below the floor");
        assert_eq!(store.mark("k"), 10);
        let on_disk = Store::read_mark_from_disk(dir.path(), "k").unwrap();
        assert_eq!(on_disk, Some((10, true)));
        drop(store);
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        assert_eq!(store.mark("k"), 10);
        assert!(store.is_dirty("k"), "dirty survives a restart");
        assert_eq!(store.issue("k", None, None).await.unwrap(), 11);
    }

    /// A key's value and ceiling on disk.
    fn disk(dir: &Path, key: &str) -> (u64, u64) {
        let conn = Connection::open(dir.join("seqd.db")).unwrap();
        conn.query_row(
            "SELECT value, ceiling FROM marks WHERE key = ?1",
            [key],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .unwrap()
    }

    /// Makes the store look as if the machine rebooted since it was last
    /// opened (another kernel boot id on record).
    fn pretend_reboot(dir: &Path) {
        let conn = Connection::open(dir.join("seqd.db")).unwrap();
        let n = conn
            .execute(
                "UPDATE meta SET value = 'an-earlier-boot' WHERE name = 'boot_id'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    /// Commits and fsyncs so far.
    fn stats(store: &Store) -> (u64, u64) {
        let c = store.counters();
        (c.commits.get(), c.fsyncs.get())
    }

    async fn issue_n(store: &Store, key: &str, n: u64) -> u64 {
        let mut last = 0;
        for _ in 0..n {
            last = store.issue(key, None, None).await.unwrap();
        }
        last
    }

    #[tokio::test]
    async fn ceilings_are_reserved_in_blocks_and_only_crossing_one_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 10).unwrap();
        assert_eq!(issue_n(&store, "k", 11).await, 11);
        // Eleven sequential issues: eleven commits, and only the first
        // (1 > ceiling 0, which reserved up to 11) fsynced.
        assert_eq!(stats(&store), (11, 1));
        assert_eq!(disk(dir.path(), "k"), (11, 11));
        assert_eq!(store.issue("k", None, None).await.unwrap(), 12);
        assert_eq!(stats(&store), (12, 2));
        assert_eq!(disk(dir.path(), "k"), (12, 22));
        // A Redis answer far above the ceiling reserves above it.
        claim(&store, "k", 500).await.unwrap();
        assert_eq!(stats(&store), (13, 3));
        assert_eq!(disk(dir.path(), "k"), (500, 510));
    }

    #[tokio::test]
    async fn a_reserve_of_zero_fsyncs_every_new_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        assert_eq!(issue_n(&store, "k", 5).await, 5);
        assert_eq!(stats(&store), (5, 5));
        assert_eq!(disk(dir.path(), "k"), (5, 5));
    }

    #[tokio::test]
    async fn a_crash_on_the_same_boot_keeps_exact_marks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 10).unwrap();
        issue_n(&store, "k", 3).await;
        drop(store); // no close: a crash, as far as the next start knows
        let store = Store::open(dir.path(), 0, 10).unwrap();
        assert_eq!(store.issue("k", None, None).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn after_a_reboot_without_a_clean_stop_keys_go_on_above_their_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 10).unwrap();
        issue_n(&store, "k", 3).await;
        claim(&store, "r", 7).await.unwrap();
        drop(store);
        pretend_reboot(dir.path());
        let store = Store::open(dir.path(), 0, 10).unwrap();
        // Numbers up to the ceiling may have been issued before the power
        // went: skip them, on disk too (a second crash must not forget it).
        assert_eq!((store.mark("k"), store.mark("r")), (11, 17));
        assert_eq!(disk(dir.path(), "k"), (11, 11));
        assert_eq!(store.issue("k", None, None).await.unwrap(), 12);
        assert_eq!(disk(dir.path(), "k"), (12, 22));
        drop(store);
        let store = Store::open(dir.path(), 0, 10).unwrap();
        assert_eq!(store.mark("r"), 17, "the raised value is on disk");
    }

    #[tokio::test]
    async fn a_clean_close_keeps_exact_marks_across_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 10).unwrap();
        issue_n(&store, "k", 3).await;
        store.close().await.unwrap();
        assert!(
            matches!(store.issue("k", None, None).await, Err(StoreError::Stopped)),
            "nothing is written after a close"
        );
        drop(store);
        pretend_reboot(dir.path());
        let store = Store::open(dir.path(), 0, 10).unwrap();
        assert_eq!(store.issue("k", None, None).await.unwrap(), 4);
        // This run did not close: a reboot now means the ceiling.
        drop(store);
        pretend_reboot(dir.path());
        let store = Store::open(dir.path(), 0, 10).unwrap();
        assert_eq!(
            store.mark("k"),
            11,
            "4 was within the ceiling reserved for 1"
        );
    }

    #[tokio::test]
    async fn concurrent_issues_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.issue("hot", None, None).await.unwrap()
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (1..=200).collect::<Vec<u64>>());
        let on_disk = Store::read_mark_from_disk(dir.path(), "hot").unwrap();
        assert_eq!(on_disk, Some((200, true)));
    }

    #[tokio::test]
    async fn a_redis_number_the_store_issued_meanwhile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        claim(&store, "k", 5).await.unwrap();
        // Two Redis requests begin (floor 5); meanwhile the store issues 6.
        let a = store.begin("k", None, None);
        let b = store.begin("k", None, None);
        assert_eq!((a.floor, b.floor), (5, 5));
        assert_eq!(store.issue("k", None, None).await.unwrap(), 6);
        let refused = store.claim(&a, 6, None, None).await;
        assert!(matches!(refused, Err(Claim::Taken { mark: 6 })));
        store.claim(&b, 7, None, None).await.unwrap();
        assert_eq!(store.mark("k"), 7);
    }

    #[tokio::test]
    async fn concurrent_redis_answers_may_arrive_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        let a = store.begin("k", None, None);
        let b = store.begin("k", None, None);
        store.claim(&b, 2, None, None).await.unwrap();
        store.claim(&a, 1, None, None).await.unwrap();
        assert_eq!(store.mark("k"), 2);
    }

    #[tokio::test]
    async fn redis_going_back_in_time_cannot_repeat_a_number_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        // Requests a and b began with floor 0; Redis answers a with 100,
        // then loses data and answers b with 100 again.
        let a = store.begin("k", None, None);
        let b = store.begin("k", None, None);
        store.claim(&a, 100, None, None).await.unwrap();
        let refused = store.claim(&b, 100, None, None).await;
        assert!(matches!(refused, Err(Claim::Taken { mark: 100 })));
        // A request that began after 100 was issued carries floor 100.
        let c = store.begin("k", None, None);
        assert_eq!(c.floor, 100);
        assert!(store.claim(&c, 100, None, None).await.is_err());
    }

    #[tokio::test]
    async fn finished_requests_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        for n in 1..=100 {
            let a = store.begin("k", None, None);
            let b = store.begin("k", None, None);
            store.claim(&a, 2 * n - 1, None, None).await.unwrap();
            store.claim(&b, 2 * n, None, None).await.unwrap();
        }
        let marks = store.lock();
        let m = &marks.by_key["k"];
        assert!(m.recent.is_empty() && m.flights.is_empty());
    }

    #[tokio::test]
    async fn reconciliation_clears_dirty_unless_issued_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        store.issue("a", None, Some(172_800)).await.unwrap();
        store.issue("b", None, None).await.unwrap();
        claim(&store, "c", 3).await.unwrap();
        assert_eq!(store.pending(), 2);
        let mut batch = store.pending_batch(10);
        batch.sort_by(|x, y| x.key.cmp(&y.key));
        let want = vec![
            PendingKey {
                key: "a".into(),
                value: 1,
                ttl: Some(172_800),
            },
            PendingKey {
                key: "b".into(),
                value: 1,
                ttl: None,
            },
        ];
        assert_eq!(batch, want);
        store.reconciled("a", 1).await.unwrap();
        // "b" was issued again before its reconciliation was recorded.
        store.issue("b", None, None).await.unwrap();
        store.reconciled("b", 1).await.unwrap();
        assert!(!store.is_dirty("a"));
        assert!(store.is_dirty("b"));
        let disk = |k| Store::read_mark_from_disk(dir.path(), k).unwrap();
        assert_eq!(disk("a"), Some((1, false)));
        assert_eq!(disk("b"), Some((2, true)));
        assert_eq!(disk("c"), Some((3, false)));
    }

    #[tokio::test]
    async fn prune_drops_only_expired_marks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 1000).unwrap();
        let f = store.begin("old", Some(100), None);
        store.claim(&f, 3, Some(100), None).await.unwrap();
        drop(f);
        store.issue("new", Some(300), None).await.unwrap();
        claim(&store, "forever", 5).await.unwrap();
        store.issue("old-dirty", Some(100), None).await.unwrap();
        assert_eq!(store.prune(200).await.unwrap(), 2);
        assert_eq!(store.mark("old"), 0);
        assert_eq!(store.mark("new"), 1);
        assert_eq!(store.mark("forever"), 5);
        assert_eq!(store.pending(), 1, "pruned keys are no longer pending");
        assert_eq!(Store::read_mark_from_disk(dir.path(), "old").unwrap(), None);
        // A reopen at a later time does not load marks that expired meanwhile.
        drop(store);
        let store = Store::open(dir.path(), 400, 1000).unwrap();
        assert_eq!(store.mark("new"), 0);
        assert_eq!(store.mark("forever"), 5);
    }
}

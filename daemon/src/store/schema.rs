//! The store's schema: its tables, their migration, and the record of
//! how the last run ended (clean stop, kernel boot id).
//!
//! # Tables
//!
//! - `marks`: per sequence key, the mark (`value`), when it may be dropped
//!   (`expires_at`), whether Redis is behind it (`dirty`), the key's Redis
//!   TTL, and the reserved `ceiling` last fsynced.
//! - `streams`: gap-tracker stream states (`streams.rs`).
//! - `outbox`: cache invalidations waiting for Redis (`outbox.rs`).
//! - `meta`: `clean` (the last run stopped cleanly), `boot_id`, `flushes`,
//!   `gen` (this start's number), `suspect_below` (see [`Boot`]),
//!   `written_by` (the seqd version that opened the store last).
//!
//! # Versions
//!
//! The schema's version is `PRAGMA user_version` ([`SCHEMA_VERSION`]). A
//! store of an older version is migrated in place when opened (version 0
//! is every store written before the version was recorded, whatever
//! columns it has); a store of a newer version is refused with both
//! versions named, never read: a mark misread by a binary that does not
//! know its format could hand out a number twice.
//!
//! Every mark row records the `gen` of the run that wrote it last. After
//! an unclean stop followed by a reboot, rows written before this start
//! may have lost their last values (never their fsynced ceilings): such a
//! row's *effective* value is `max(value, ceiling)`. Nothing is rewritten
//! at start — ten million rows took ten seconds — the rule is applied
//! where a mark is read ([`EFFECTIVE`]), and a row written again is exact.

use super::marks::Mark;
use super::StoreError;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

/// The version of the schema this seqd writes and reads. Raise it with
/// every change of the tables' meaning or layout, and migrate from the
/// one before in [`migrate`].
pub const SCHEMA_VERSION: u32 = 1;

/// This seqd's version, recorded in the store it opens.
const SEQD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Opens (or creates) `dir/seqd.db` with its tables, migrated; refuses a
/// store of a newer schema.
pub(super) fn open(dir: &Path) -> Result<Connection, StoreError> {
    let path = dir.join("seqd.db");
    make_private(&path).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("{}: {e}", path.display())),
        )
    })?;
    let conn = Connection::open(&path)?;
    // WAL lets the writer commit without blocking readers. Opening is
    // fsynced (FULL); the writer then picks the level per commit.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Marks are read from disk when their keys come back (see `marks.rs`)
    // and the mark log is folded into a table of millions of rows: keep
    // its upper levels in SQLite's own cache (32 MiB, used only as needed).
    conn.pragma_update(None, "cache_size", -32 * 1024)?;
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: path.display().to_string(),
            found,
            written_by: written_by(&conn).unwrap_or_else(|| "unknown".into()),
            supported: SCHEMA_VERSION,
            seqd: SEQD_VERSION,
        });
    }
    let before = written_by(&conn);
    let existed = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'marks'")?
        .exists([])?;
    migrate(&conn)?;
    let tx = conn.unchecked_transaction()?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.execute(
        "INSERT INTO meta (name, value) VALUES ('written_by', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [SEQD_VERSION],
    )?;
    tx.commit()?;
    if found < SCHEMA_VERSION && existed {
        tracing::info!(
            from = found,
            to = SCHEMA_VERSION,
            written_by = before.as_deref().unwrap_or("unknown"),
            "store migrated to the current schema"
        );
    }
    Ok(conn)
}

/// The seqd version that opened the store last, if it recorded one (the
/// `meta` table may not exist yet).
fn written_by(conn: &Connection) -> Option<String> {
    conn.query_row(
        "SELECT value FROM meta WHERE name = 'written_by'",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// Creates what is missing and brings an older store's tables to
/// [`SCHEMA_VERSION`]: columns are added by presence, so every store
/// written before the version was recorded (version 0) is covered.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS marks (
             key TEXT PRIMARY KEY,
             value INTEGER NOT NULL,
             expires_at INTEGER,
             dirty INTEGER NOT NULL DEFAULT 0,
             ttl INTEGER,
             ceiling INTEGER
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS mark_log (
             seq INTEGER PRIMARY KEY,
             key TEXT NOT NULL,
             value INTEGER NOT NULL,
             expires_at INTEGER,
             dirty INTEGER NOT NULL,
             ttl INTEGER,
             ceiling INTEGER,
             dirty_from INTEGER
         );
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
    // Columns added since the first stores, each with what its absence
    // meant: not pending (`dirty`), no TTL known (`ttl`), every mark
    // fsynced (`ceiling`), local range unknown (`dirty_from`, reported as
    // such), written before runs were numbered (`gen` 0).
    let added = [
        ("marks", "dirty", "INTEGER NOT NULL DEFAULT 0"),
        ("marks", "ttl", "INTEGER"),
        ("marks", "ceiling", "INTEGER"),
        ("marks", "dirty_from", "INTEGER"),
        ("marks", "gen", "INTEGER NOT NULL DEFAULT 0"),
        ("mark_log", "gen", "INTEGER NOT NULL DEFAULT 0"),
    ];
    for (table, column, decl) in added {
        let has = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
            ))?
            .exists([])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    conn.execute_batch(
        "-- Only the keys pending reconciliation are read at start.
         CREATE INDEX IF NOT EXISTS marks_dirty ON marks (key) WHERE dirty = 1;
         -- A prune finds expired marks without reading every row.
         CREATE INDEX IF NOT EXISTS marks_expiry ON marks (expires_at)
             WHERE expires_at IS NOT NULL;",
    )
}

/// Creates the store file `0600` if it is missing (SQLite gives its WAL and
/// shared-memory files the same mode), and tightens an existing one and
/// its companions that others may read: the store holds user ids and who
/// chats with whom.
fn make_private(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(meta) = std::fs::metadata(&p) {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// The kernel's id of this boot. A page cache survives a process crash but
/// never a reboot: the same id means every WAL write of the previous run is
/// still there.
pub(super) fn current_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The columns a mark is trusted from: `value`, `ceiling` (a row without
/// one: its value) and `gen`, in that order, for [`Boot::effective`].
pub(super) const EFFECTIVE: &str = "value, coalesce(ceiling, value), gen";

/// This start: its number, and below which number rows are suspect.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Boot {
    /// This start's number; every row written now records it.
    pub(super) gen: i64,
    /// Rows written by a run numbered below this may have lost their last
    /// values (0: none).
    pub(super) suspect_below: i64,
    /// When the last unclean stop was found (for `marks::Implied`).
    pub(super) unclean_since: Option<i64>,
}

impl Boot {
    /// A row's trusted value from its `value`, `ceiling` and `gen`: above
    /// the ceiling when the row was written before the last unclean start.
    pub(super) fn effective(&self, value: i64, ceiling: i64, gen: i64) -> u64 {
        let v = if gen < self.suspect_below {
            value.max(ceiling)
        } else {
            value
        };
        v.max(0) as u64
    }
}

/// Records this start (durably): its number, and whether the marks on disk
/// are exact — true after a clean stop, on the same boot as the last run,
/// or for a store that predates the bookkeeping (it fsynced every mark).
/// When they are not, every row written so far becomes suspect (read above
/// its ceiling, see [`Boot::effective`]).
pub(super) fn start_boot(
    conn: &mut Connection,
    boot: Option<&str>,
    now: i64,
) -> rusqlite::Result<Boot> {
    // IMMEDIATE: a read that turns into a write fails at once (busy
    // snapshot) if another connection wrote in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // What the last run appended and did not fold in yet.
    compact(&tx)?;
    let get = |name: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
    };
    let (clean, last_boot) = (get("clean")?, get("boot_id")?);
    let mut unclean_since = get("unclean_since")?.and_then(|v| v.parse::<i64>().ok());
    let number = |name: &str| -> rusqlite::Result<i64> {
        Ok(get(name)?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0))
    };
    let gen = number("gen")? + 1;
    let mut suspect_below = number("suspect_below")?;
    let exact = match clean.as_deref() {
        None | Some("1") => true,
        Some(_) => boot.is_some() && last_boot.as_deref() == boot,
    };
    if !exact {
        suspect_below = gen;
        tracing::warn!(
            "seqd did not stop cleanly before a reboot or power loss: the last marks may be lost, \
             so every key goes on above its reserved ceiling, and daily keys whose window was \
             open then start above --mark-reserve"
        );
        // Daily keys may have been issued without an fsync (the implied
        // reserve) and be lost whole: any whose window opened before now
        // starts above the reserve (see `HighWaterMarks`).
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('unclean_since', ?1)",
            [now.to_string()],
        )?;
        unclean_since = Some(now);
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('clean', '0'), ('boot_id', ?1),
             ('gen', ?2), ('suspect_below', ?3)",
        rusqlite::params![
            boot.unwrap_or("unknown"),
            gen.to_string(),
            suspect_below.to_string()
        ],
    )?;
    tx.commit()?;
    Ok(Boot {
        gen,
        suspect_below,
        unclean_since,
    })
}

/// How many keys are pending reconciliation with Redis. None is loaded at
/// start: reconciliation reads them a page at a time ([`load_dirty`]), and
/// every other mark is read when its key is next used (see `marks.rs`).
pub(super) fn count_dirty(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT count(*) FROM marks WHERE dirty = 1", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as usize)
}

/// Up to `limit` marks of keys pending reconciliation, in key order after
/// `after`. Values on disk are exact or were raised to their ceiling by
/// [`start_boot`]; the mark log must be folded in first.
pub(super) fn load_dirty(
    conn: &Connection,
    boot: &Boot,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<(Arc<str>, Mark)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT key, {EFFECTIVE}, expires_at, ttl, dirty_from FROM marks
         WHERE dirty = 1 AND key > ?1 ORDER BY key LIMIT ?2"
    ))?;
    let rows = stmt.query_map(rusqlite::params![after.unwrap_or(""), limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            boot.effective(r.get(1)?, r.get(2)?, r.get(3)?),
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    rows.map(|row| {
        let (key, value, expires_at, ttl, dirty_from) = row?;
        let ttl = ttl.map(|t| t.max(0) as u64);
        let mut mark = Mark::stored(value, expires_at, ttl);
        mark.dirty_from = dirty_from.map(|f| f.max(0) as u64);
        Ok((Arc::from(key), mark))
    })
    .collect()
}

/// Folds the mark log into `marks`, in key order (locality) and, per key,
/// in the order written (the merge keeps the highest value, the latest
/// expiry, the first `dirty_from`, the latest TTL, the highest ceiling);
/// returns the log rows folded.
///
/// # Why a log
///
/// A commit appends its marks to `mark_log` (a rowid table: one or two
/// pages per commit) instead of updating `marks` in place: a batch of
/// cold keys lands on as many B-tree pages as keys, and SQLite's WAL
/// writes whole pages, so 50 new keys cost 200 KiB of WAL per commit. The
/// log is folded in now and then, many commits at once.
pub(super) fn compact(conn: &Connection) -> rusqlite::Result<usize> {
    let folded = conn.execute(
        "INSERT INTO marks (key, value, expires_at, dirty, ttl, ceiling, dirty_from, gen)
         SELECT key, value, expires_at, dirty, ttl, ceiling, dirty_from, gen FROM mark_log
         WHERE true ORDER BY key, seq
         ON CONFLICT(key) DO UPDATE SET
             value = max(value, excluded.value),
             -- A later write was drawn above the row's trusted value, so
             -- the merged row is exact as of the later run.
             gen = max(gen, excluded.gen),
             expires_at = CASE
                 WHEN expires_at IS NULL OR excluded.expires_at IS NULL THEN NULL
                 ELSE max(expires_at, excluded.expires_at) END,
             dirty = max(dirty, excluded.dirty),
             dirty_from = coalesce(dirty_from, excluded.dirty_from),
             ttl = coalesce(excluded.ttl, ttl),
             ceiling = CASE
                 WHEN excluded.ceiling IS NULL THEN ceiling
                 ELSE max(coalesce(ceiling, 0), excluded.ceiling) END",
        [],
    )?;
    conn.execute("DELETE FROM mark_log", [])?;
    Ok(folded)
}

/// Writes a row that changes every time: a commit without any frame in the
/// WAL would not fsync, and a flush must make the earlier plain writes
/// durable.
pub(super) fn touch(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('flushes', '1')
         ON CONFLICT(name) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

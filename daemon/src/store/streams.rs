//! Gap-tracker stream states on disk: the `streams` table.
//!
//! The store keeps rows, not tracker types: a stream is its key and plain
//! columns, and the tracker converts them (`tracker::local`). Stream
//! writes always fsync (see the writer's policy): a stream's state is the
//! answer a consumer already acted on.

use super::{Store, StoreError};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// How long stream states wait in memory to be written together: a
/// stream checked thousands of times a second costs the writer one row a
/// commit, not one commit a check.
pub(super) const STREAM_SAVE_DELAY: Duration = Duration::from_millis(10);

/// Stream states not yet handed to the writer: the latest row per stream.
#[derive(Default)]
pub(super) struct PendingStreams {
    pub(super) rows: HashMap<String, StreamRow>,
    /// A hand-over to the writer is scheduled.
    pub(super) scheduled: bool,
}

/// A gap-tracker stream as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub key: String,
    pub last_seq: u64,
    pub last_ts_ms: i64,
    pub gap_count: u64,
    pub reset_count: u64,
    /// The missing ranges, encoded by the tracker.
    pub missing: String,
    /// Changed while Redis could not be reached: to be written to Redis.
    pub dirty: bool,
}

impl Store {
    /// Reads every stream updated after `since_ms` (at start; blocking, on
    /// its own connection).
    pub fn load_streams(dir: &Path, since_ms: i64) -> Result<Vec<StreamRow>, StoreError> {
        let conn = Connection::open(dir.join("seqd.db"))?;
        let mut stmt = conn.prepare(
            "SELECT key, last_seq, last_ts, gap_count, reset_count, missing, dirty
             FROM streams WHERE last_ts > ?1",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok(StreamRow {
                key: r.get(0)?,
                last_seq: r.get::<_, i64>(1)? as u64,
                last_ts_ms: r.get(2)?,
                gap_count: r.get::<_, i64>(3)? as u64,
                reset_count: r.get::<_, i64>(4)? as u64,
                missing: r.get(5)?,
                dirty: r.get::<_, i64>(6)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

pub(super) fn save(tx: &rusqlite::Transaction<'_>, rows: &[StreamRow]) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO streams (key, last_seq, last_ts, gap_count, reset_count, missing, dirty)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(key) DO UPDATE SET
             last_seq = excluded.last_seq, last_ts = excluded.last_ts,
             gap_count = excluded.gap_count, reset_count = excluded.reset_count,
             missing = excluded.missing, dirty = max(dirty, excluded.dirty)",
    )?;
    for r in rows {
        upsert.execute(params![
            r.key,
            r.last_seq as i64,
            r.last_ts_ms,
            r.gap_count as i64,
            r.reset_count as i64,
            r.missing,
            r.dirty as i64
        ])?;
    }
    Ok(())
}

/// Deletes `keys`, or every stream (`None`).
pub(super) fn delete(
    tx: &rusqlite::Transaction<'_>,
    keys: Option<&[String]>,
) -> rusqlite::Result<()> {
    match keys {
        None => {
            tx.execute("DELETE FROM streams", [])?;
        }
        Some(keys) => {
            let mut del = tx.prepare_cached("DELETE FROM streams WHERE key = ?1")?;
            for k in keys {
                del.execute([k])?;
            }
        }
    }
    Ok(())
}

/// Clears `dirty` of streams whose `last_ts` is still the one synced.
pub(super) fn synced(
    tx: &rusqlite::Transaction<'_>,
    keys: &[(String, i64)],
) -> rusqlite::Result<()> {
    let mut clean =
        tx.prepare_cached("UPDATE streams SET dirty = 0 WHERE key = ?1 AND last_ts = ?2")?;
    for (k, ts) in keys {
        clean.execute(params![k, ts])?;
    }
    Ok(())
}

/// Deletes streams last updated at or before `before_ms`.
pub(super) fn prune(tx: &rusqlite::Transaction<'_>, before_ms: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM streams WHERE last_ts <= ?1", [before_ms])?;
    Ok(())
}

//! Gap-tracker stream states on disk: the `streams` table.
//!
//! The store keeps rows, not tracker types: a stream is its key and plain
//! columns, and the tracker converts them (`tracker::local`). Stream
//! writes always fsync (see the writer's policy): a stream's state is the
//! answer a consumer already acted on.

use super::writer::Op;
use super::{Store, StoreError};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long stream states wait in memory to be written together: a
/// stream checked thousands of times a second costs the writer one row a
/// commit, not one commit a check.
pub(super) const STREAM_SAVE_DELAY: Duration = Duration::from_millis(10);

/// Stream states not yet handed to the writer: the latest row per stream.
#[derive(Default)]
pub(super) struct PendingStreams {
    rows: HashMap<String, StreamRow>,
    /// A hand-over to the writer is scheduled.
    scheduled: bool,
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
    /// Keeps stream states for writing without waiting for the commit:
    /// the gap tracker answers from memory, and what a crash may lose is
    /// bounded instead (the states of the last [`STREAM_SAVE_DELAY`] and
    /// the writes still queued at a `kill -9`, a few milliseconds; the
    /// last second at a power loss). The latest state of each stream is
    /// handed to the writer once per delay, all in one commit. A failed
    /// commit is logged by the writer.
    pub async fn save_streams_soon(&self, rows: Vec<StreamRow>) -> Result<(), StoreError> {
        if self.tx.is_closed() {
            return Err(StoreError::Stopped);
        }
        let schedule = {
            let mut pending = self.pending_streams();
            for row in rows {
                pending.rows.insert(row.key.clone(), row);
            }
            !std::mem::replace(&mut pending.scheduled, true)
        };
        if schedule {
            let store = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(STREAM_SAVE_DELAY).await;
                let _ = store.hand_over_streams().await;
            });
        }
        Ok(())
    }

    /// True when no stream state waits to be handed to the writer.
    pub(super) fn pending_streams_is_empty(&self) -> bool {
        self.pending_streams().rows.is_empty()
    }

    fn pending_streams(&self) -> std::sync::MutexGuard<'_, PendingStreams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the pending stream states to the writer, ahead of whatever is
    /// sent after them (a delete, a sync, a flush, the close): the writer
    /// takes its queue in order, so no older state lands after them.
    pub(super) async fn hand_over_streams(&self) -> Result<(), StoreError> {
        let rows: Vec<StreamRow> = {
            let mut pending = self.pending_streams();
            pending.scheduled = false;
            pending.rows.drain().map(|(_, row)| row).collect()
        };
        if rows.is_empty() {
            return Ok(());
        }
        let (done, _) = oneshot::channel();
        self.tx
            .send(Op::SaveStreams { rows, done })
            .await
            .map_err(|_| StoreError::Stopped)
    }

    /// Forgets streams (`None`: all of them).
    pub async fn delete_streams(&self, keys: Option<Vec<String>>) -> Result<(), StoreError> {
        self.hand_over_streams().await?;
        let (done, wait) = oneshot::channel();
        self.send(Op::DeleteStreams { keys, done }, wait).await
    }

    /// Marks streams as written to Redis, unless they changed since
    /// (`last_ts` differs).
    pub async fn streams_synced(&self, keys: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.hand_over_streams().await?;
        let (done, wait) = oneshot::channel();
        self.send(Op::StreamsSynced { keys, done }, wait).await
    }

    /// Drops streams last updated at or before `before_ms`.
    pub async fn prune_streams(&self, before_ms: i64) -> Result<(), StoreError> {
        self.hand_over_streams().await?;
        let (done, wait) = oneshot::channel();
        self.send(Op::PruneStreams { before_ms, done }, wait).await
    }

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

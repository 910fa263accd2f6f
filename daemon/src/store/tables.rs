//! The store's requests about the rows it keeps for the capabilities: the
//! gap tracker's streams and the cache's outbox. Each becomes an op of the
//! writer's queue; `streams.rs` and `outbox.rs` hold the rows and their
//! SQL, and the writer runs it, so neither row file needs the writer.

use super::outbox::OutboxEntry;
use super::streams::{PendingStreams, StreamRow, STREAM_SAVE_DELAY};
use super::writer::Op;
use super::{Store, StoreError};
use tokio::sync::oneshot;

impl Store {
    /// Keeps stream states for writing without waiting for the commit:
    /// the gap tracker answers from memory, and what a crash may lose is
    /// bounded instead (the states of the last 10 ms and
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

    /// Queues cache invalidations durably (`add`) or records them as done.
    pub async fn outbox(&self, entries: Vec<OutboxEntry>, add: bool) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::Outbox { entries, add, done }, wait).await
    }
}

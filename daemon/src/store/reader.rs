//! Reads of a key's row on the thread that serves its request.
//!
//! # What it owns
//!
//! One read-only SQLite connection per thread that asks (each shard),
//! opened at its first read. A key met for the first time in this run is
//! read here, so that memory starts it verified — and its numbers can be
//! journaled — instead of sending its first number to the writer thread
//! to be checked against the disk inside a commit. The read looks at
//! `marks` only: whether that is the whole truth for the key is decided
//! in `marks.rs` (`HighWaterMarks::adopt`), which refuses the read when
//! the key may have rows in the mark log.
//!
//! A read is a B-tree lookup in SQLite's page cache, in WAL mode beside
//! the writer (readers never wait for it).

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// Threads with a connection of their own; past it, the first is shared.
const MAX_READERS: usize = 64;

/// A key's row in `marks`, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) value: u64,
    pub(super) ceiling: u64,
    pub(super) gen: i64,
    pub(super) dirty: bool,
}

/// The read connections, one per thread.
pub(super) struct Readers {
    path: PathBuf,
    /// Rows read so far.
    pub(super) reads: AtomicU64,
    conns: Mutex<Vec<(ThreadId, Arc<Mutex<Connection>>)>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            reads: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
        }
    }

    /// The row of `key` in `marks` (`None`: no row).
    pub(super) fn row(&self, key: &str) -> rusqlite::Result<Option<Row>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let shared = self.conn()?;
        let conn = shared.lock().unwrap_or_else(|p| p.into_inner());
        let row = conn
            .prepare_cached(
                "SELECT value, coalesce(ceiling, value), gen, dirty FROM marks WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok(Row {
                    value: r.get::<_, i64>(0)?.max(0) as u64,
                    ceiling: r.get::<_, i64>(1)?.max(0) as u64,
                    gen: r.get(2)?,
                    dirty: r.get::<_, i64>(3)? != 0,
                })
            })
            .optional();
        row
    }

    /// The calling thread's connection, opened at its first read.
    fn conn(&self) -> rusqlite::Result<Arc<Mutex<Connection>>> {
        let me = std::thread::current().id();
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = conns.iter().find(|(t, _)| *t == me) {
            return Ok(c.clone());
        }
        if conns.len() >= MAX_READERS {
            return Ok(conns[0].1.clone());
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The upper levels of a table of millions of rows stay cached.
        conn.pragma_update(None, "cache_size", -8 * 1024)?;
        let conn = Arc::new(Mutex::new(conn));
        conns.push((me, conn.clone()));
        Ok(conn)
    }
}

//! The scan that builds the filter of keys on disk (`filter.rs`): every
//! key of `marks` and the mark log, read on a thread of its own while
//! seqd serves.

use super::marks::{lock, HighWaterMarks};
use rusqlite::{Connection, OpenFlags};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// Hashes a scan adds per hold of the marks' lock.
const SCAN_CHUNK: usize = 1024;

/// Builds a new filter from the rows of the database at `path`, on a
/// thread of its own; the caller started the build ([`RowFilter::start`]
/// said it was due). Gives up, leaving the current filter, when the store
/// is closed meanwhile or a read fails.
///
/// [`RowFilter::start`]: super::filter::RowFilter::start
pub(super) fn build(path: &Path, marks: &Arc<Mutex<HighWaterMarks>>) {
    let (path, weak) = (path.to_path_buf(), Arc::downgrade(marks));
    let spawned = std::thread::Builder::new()
        .name("seqd-filter".into())
        .spawn(move || {
            lower_priority();
            let began = std::time::Instant::now();
            let scanned = scan(&path, &weak);
            if let Some(m) = weak.upgrade() {
                let mut m = lock(&m);
                match scanned {
                    Ok(keys) => {
                        m.rows.finish();
                        tracing::debug!(
                            keys,
                            seconds = began.elapsed().as_secs_f64(),
                            "filter of keys on disk built"
                        );
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "building the filter of keys on disk stopped");
                        m.rows.abandon();
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start building the filter of keys on disk");
        lock(marks).rows.abandon();
    }
}

/// Puts the calling thread below the shards: a start on ten million keys
/// drew 20% more cold numbers while the scan ran (5 s runs, alternating).
/// A refusal (a sandbox's system-call filter answering `EPERM`) leaves
/// the thread at the process's priority: the scan is slower to finish,
/// nothing else changes.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if r != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the priority of the scan of keys on disk (a sandbox refused \
             setpriority): it runs at the shards' priority"
        );
    }
}

/// Why a scan stopped early.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store closed")]
    Closed,
}

/// Reads every key on disk into the started build's filter; returns how
/// many it read.
fn scan(path: &Path, marks: &Weak<Mutex<HighWaterMarks>>) -> Result<u64, Stopped> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let keys: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM marks) + (SELECT count(*) FROM mark_log)",
        [],
        |r| r.get(0),
    )?;
    let hasher = {
        let m = marks.upgrade().ok_or(Stopped::Closed)?;
        let mut m = lock(&m);
        m.rows.begin(keys.max(0) as usize);
        m.rows.hasher()
    };
    // The read snapshot begins after the new filter exists: a row
    // committed after it is added to the filter by the writer.
    conn.execute_batch("BEGIN")?;
    let read = (|| -> Result<u64, Stopped> {
        let mut stmt = conn.prepare("SELECT key FROM marks UNION ALL SELECT key FROM mark_log")?;
        let mut rows = stmt.query([])?;
        let mut chunk = Vec::with_capacity(SCAN_CHUNK);
        let mut read = 0;
        loop {
            let row = rows.next()?;
            if let Some(r) = row {
                read += 1;
                let key = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                chunk.push(hasher.hash_one(key));
            }
            if chunk.len() == SCAN_CHUNK || (row.is_none() && !chunk.is_empty()) {
                let m = marks.upgrade().ok_or(Stopped::Closed)?;
                let mut m = lock(&m);
                if m.journal.is_none() {
                    return Err(Stopped::Closed);
                }
                m.rows.add_scanned(&chunk);
                chunk.clear();
            }
            if row.is_none() {
                return Ok(read);
            }
        }
    })();
    conn.execute_batch("COMMIT")?;
    read
}

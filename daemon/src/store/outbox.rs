//! The cache outbox on disk: invalidations promised to readers and not yet
//! run in Redis (the `outbox` table). Outbox writes always fsync: a power
//! loss must not forget an invalidation a writer was told is deferred.

use super::{Store, StoreError};
use rusqlite::{params, Connection};
use std::path::Path;

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

impl Store {
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
}

/// Adds `entries` to the outbox (`add`) or removes them.
pub(super) fn write(
    tx: &rusqlite::Transaction<'_>,
    entries: &[OutboxEntry],
    add: bool,
) -> rusqlite::Result<()> {
    let sql = if add {
        "INSERT OR IGNORE INTO outbox (kind, target) VALUES (?1, ?2)"
    } else {
        "DELETE FROM outbox WHERE kind = ?1 AND target = ?2"
    };
    let mut stmt = tx.prepare_cached(sql)?;
    for e in entries {
        let (kind, target) = e.columns();
        stmt.execute(params![kind, target])?;
    }
    Ok(())
}

# Sourced by the bench scripts: fill_daily_keys DB N writes N daily marks
# into the store DB (made by a seqd that stopped cleanly), as a day of
# NEXTs in local mode would leave them: value 1..3, today's expiry, an
# implied ceiling, pending reconciliation.
fill_daily_keys() {
  python3 - "$1" "$2" <<'PY'
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
day = time.strftime("%Y%m%d", time.gmtime())
expires = int(time.time()) + 172800
conn = sqlite3.connect(db)
conn.execute("PRAGMA synchronous=OFF")
# Dirty, as a day in local mode leaves them (pending reconciliation).
rows = ((f"user:u{i}:sequence:{day}", 1 + i % 3, expires, 1, 172800, 1000, 0) for i in range(n))
conn.executemany(
    "INSERT INTO marks (key, value, expires_at, dirty, ttl, ceiling, dirty_from)"
    " VALUES (?,?,?,?,?,?,?)", rows)
conn.commit()
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
conn.close()
PY
}

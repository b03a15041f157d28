"""The disk's commit rate as SQLite sees it: one-row write transactions in a loop, WAL,
synchronous=FULL (as repayd opens its database). Usage: sqlite_commits.py DB SECONDS.
Prints one JSON line."""
import json, sqlite3, sys, time

db, seconds = sys.argv[1], float(sys.argv[2])
con = sqlite3.connect(db, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=FULL")
con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
n, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    con.execute("BEGIN")
    con.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100,))
    con.execute("COMMIT")
    n += 1
secs = time.monotonic() - start
print(json.dumps({"commits": n, "seconds": secs, "per_second": n / secs}))

"""The import's limit: a raw bulk insert of the same rows into the same schema.

Reads the generated portfolio CSV and inserts its customers, funding accounts,
agreements (one event each) and installments (principal split evenly, no schedule
arithmetic, no validation) with executemany, 1,000 agreements per transaction, WAL and
synchronous=FULL like repayd. Usage: bulk_insert.py DB CSV. Prints one JSON line.
"""
import csv, json, sqlite3, sys, time

db, path = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=FULL")
con.execute("PRAGMA foreign_keys=ON")
start = time.monotonic()
now = int(time.time() * 1000)
customers, accounts = {}, {}
rows = installments = 0


def flush(batch):
    global installments
    con.execute("BEGIN")
    for r in batch:
        cid = customers.get(r["customer_external_id"])
        if cid is None:
            cid = con.execute(
                "INSERT INTO customers (external_id, name, email, locale, time_zone, created_at_ms, updated_at_ms) VALUES (?,?,?,?,?,?,?)",
                (r["customer_external_id"], r["customer_name"], r["email"], r["locale"], r["time_zone"], now, now),
            ).lastrowid
            customers[r["customer_external_id"]] = cid
        aid = accounts.get(r["account_ref"])
        if aid is None:
            aid = con.execute(
                "INSERT INTO funding_accounts (customer_id, external_ref, mandate_ref, mandate_status, created_at_ms, updated_at_ms) VALUES (?,?,?,?,?,?)",
                (cid, r["account_ref"], r["mandate_ref"], r["mandate_status"], now, now),
            ).lastrowid
            accounts[r["account_ref"]] = aid
    agreement_rows = []
    for r in batch:
        minor = int(r["principal"].replace(".", ""))
        agreement_rows.append((r["agreement_id"], customers[r["customer_external_id"]], accounts[r["account_ref"]],
                               r["currency"], minor, 0, 0, minor, r["method"], "h" * 64, now, now))
    con.executemany(
        "INSERT INTO agreements (external_id, customer_id, funding_account_id, currency, principal_minor, total_interest_minor, total_fee_minor, total_minor, method, content_hash, created_at_ms, updated_at_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        agreement_rows,
    )
    first = con.execute("SELECT id FROM agreements WHERE external_id = ?", (batch[0]["agreement_id"],)).fetchone()[0]
    inst_rows, events = [], []
    for i, r in enumerate(batch):
        n = int(r["installments"])
        minor = int(r["principal"].replace(".", ""))
        each = minor // n
        for seq in range(1, n + 1):
            amount = each if seq < n else minor - each * (n - 1)
            inst_rows.append((first + i, seq, r["first_due"], amount, 0, 0, amount))
        events.append((now, "agreement_imported", first + i, '{"installments": %d}' % n))
    con.executemany(
        "INSERT INTO installments (agreement_id, seq, due_date, principal_minor, interest_minor, fee_minor, total_minor) VALUES (?,?,?,?,?,?,?)",
        inst_rows,
    )
    con.executemany("INSERT INTO events (at_ms, kind, agreement_id, detail) VALUES (?,?,?,?)", events)
    con.execute("COMMIT")
    installments += len(inst_rows)


with open(path, newline="") as f:
    batch = []
    for r in csv.DictReader(f):
        batch.append(r)
        rows += 1
        if len(batch) >= 1000:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
secs = time.monotonic() - start
print(json.dumps({"agreements": rows, "installments": installments, "seconds": secs}))

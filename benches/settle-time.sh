#!/usr/bin/env bash
# Settle time of a due day with gateway faults against the same day without (issue 11).
#
#   benches/settle-time.sh [REPAYD_BINARY] [FAULT_PERCENT...]    (default: target/release/repayd, 0 10)
#
# For each fault share: 2,000 agreements of one installment due today (Europe/London, the
# debit time 06:00 local is past or the run waits for it), imported into a fresh SQLite
# file; `repayd run` against the sandbox bank with 20 ms latency and `fault_percent` of
# debits booked but answered as lost (the outcome is unknown and must be looked up by key)
# and the same share of funds checks failing; technical backoff 1, 1, 5, 15 minutes.
# Prints the seconds from the daemon's start until every installment is paid, sampled
# every second with python's sqlite3, and the attempts by state. Nothing is asserted.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$repo/target/release/repayd}
shift || true
faults=("$@")
[ ${#faults[@]} -gt 0 ] || faults=(0 10)
[ -x "$bin" ] || { echo "no repayd binary at $bin (cargo build --release)" >&2; exit 2; }
work=$(mktemp -d /tmp/repayd-settle.XXXXXX)
trap 'rm -rf "$work"' EXIT

for f in "${faults[@]}"; do
    d=$work/f$f
    mkdir -p "$d"
    python3 - "$d/agreements.csv" <<'PY'
import datetime, sys
today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
head = ("customer_external_id,customer_name,email,locale,time_zone,account_ref,mandate_ref,"
        "mandate_status,agreement_id,currency,principal,method,installments,annual_rate,"
        "fee_rate,first_due,frequency,rounding,remainder,business_day,schedule")
with open(sys.argv[1], "w") as out:
    out.write(head + "\n")
    for i in range(2000):
        out.write(f"C{i},Customer {i},c{i}@example.com,en-GB,Europe/London,ACC-{i:06d},"
                  f"MND-{i:06d},active,AGR-{i:06d},GBP,100.00,interest-free,1,0,0,{today},"
                  "monthly,,,,\n")
PY
    sed -e "s|sqlite://var/repayd.db|sqlite://$d/repayd.db|" \
        -e "s|outbox_dir = \"var/outbox\"|outbox_dir = \"$d/outbox\"|" \
        -e "s|^latency_ms = 50|latency_ms = 20\nfault_percent = $f|" \
        -e 's|technical_backoff_minutes = \[5, 15, 60, 240\]|technical_backoff_minutes = [1, 1, 5, 15]|' \
        -e 's|listen = "127.0.0.1:9464"|listen = "127.0.0.1:0"|' \
        "$repo/config/repayd.toml" >"$d/repayd.toml"
    grep -q "fault_percent = $f" "$d/repayd.toml" || { echo "config/repayd.toml changed shape" >&2; exit 2; }
    "$bin" --config "$d/repayd.toml" import "$d/agreements.csv" >"$d/import.log" 2>&1
    t0=$(date +%s.%N)
    "$bin" --config "$d/repayd.toml" run >"$d/run.log" 2>&1 &
    pid=$!
    echo "fault_percent = $f:"
    python3 - "$d/repayd.db" "$t0" <<'PY'
import sqlite3, sys, time
db, t0 = sys.argv[1], float(sys.argv[2])
while True:
    time.sleep(1)
    try:
        c = sqlite3.connect(db, timeout=5)
        unpaid = c.execute("SELECT count(*) FROM installments WHERE status <> 'paid'").fetchone()[0]
        states = dict(c.execute("SELECT state, count(*) FROM debit_attempts GROUP BY state"))
        c.close()
    except sqlite3.Error:
        continue
    took = time.time() - t0
    if unpaid == 0:
        print(f"  settled in {took:.1f} s; attempts by state: {states}")
        break
    if took > 3600:
        print(f"  NOT settled after {took:.0f} s: {unpaid} unpaid; attempts by state: {states}")
        break
PY
    kill -TERM "$pid"
    wait "$pid" || true
done

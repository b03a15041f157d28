#!/usr/bin/env bash
# The Debian package under a real systemd: boots a minimal Debian bookworm root (systemd
# 252 as PID 1) with `systemd-nspawn -b`, installs the .deb built from this tree and checks
# what an operator relies on, printing what each check saw:
#
#   install (user, directories, config owner and mode, examples; no warnings), start
#   reaching READY, /readyz, the watchdog keeping a healthy daemon alive past twice its
#   interval, journald priorities, a good reload applied before `systemctl reload`
#   returns, bad reloads (unknown key, broken TOML) failing `systemctl reload` with the
#   old settings still running and the error in `journalctl -p err`, a stop that drains
#   in-flight debits (for longer than the watchdog interval), a database error at start
#   exiting 78 without a restart loop, an upgrade to a second package version whose extra
#   migration is applied at start (edited conffile and its mode kept), and purge.
#
# The second version is built from a temporary copy of this tree with one throw-away
# migration; nothing is added to the tree itself. Packages are built from the debug binary
# (REPAYD_DEB_PROFILE=dev) that `cargo test` has built already.
#
# Needs root, apt-get (debootstrap, systemd-container), cargo-deb (installed from crates.io
# if missing) and deb.debian.org the first time; the root is cached in
# $REPAYD_CI_CACHE (default /var/cache/repayd-ci). Prints `SKIPPED: <reason>` and exits 0
# where the machine cannot boot a container; any failed check exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$(date +%s)

cache=${REPAYD_CI_CACHE:-/var/cache/repayd-ci}
suite=bookworm
mirror=${REPAYD_CI_MIRROR:-http://deb.debian.org/debian}
include=systemd,systemd-sysv,dbus,adduser,curl,ca-certificates,sqlite3
root=$cache/$suite-$(printf '%s' "$include" | sha256sum | cut -c1-8)
machine=repayd-ci-$$
export DEBIAN_FRONTEND=noninteractive

skip() {
    echo "SKIPPED: $*"
    exit 0
}
section() { printf '\n=== %s\n' "$*"; }
elapsed() { echo "$(($(date +%s) - started)) s"; }

# ---------------------------------------------------------------- preconditions (skip)
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap and systemd-nspawn)"
command -v apt-get >/dev/null || skip "no apt-get: not a Debian-like machine"
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nsenter >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    section "installing ${missing[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        skip "cannot install ${missing[*]} with apt-get"
fi
if ! command -v cargo-deb >/dev/null; then
    section "installing cargo-deb"
    cargo install cargo-deb --locked --quiet || skip "cannot install cargo-deb from crates.io"
fi

work=$(mktemp -d /tmp/repayd-systemd-test.XXXXXX)
nspawn_pid=
leader=
cleanup() {
    set +e
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        [ -n "$leader" ] && in_ct systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 1 30); do
            kill -0 "$nspawn_pid" 2>/dev/null || break
            sleep 1
        done
        kill "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------- the cached root
section "Debian $suite root ($root)"
if [ ! -x "$root/usr/bin/systemctl" ]; then
    mkdir -p "$cache"
    rm -rf "$root.tmp"
    t0=$(date +%s)
    if ! debootstrap --variant=minbase --include="$include" "$suite" "$root.tmp" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log"
        rm -rf "$root.tmp"
        skip "debootstrap $suite failed (see above)"
    fi
    mv "$root.tmp" "$root"
    echo "made with debootstrap in $(($(date +%s) - t0)) s"
else
    echo "cached"
fi

# ---------------------------------------------------------------- two package versions
section "packages (debug binary, REPAYD_DEB_PROFILE=dev)"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
v1="$version-1"
v2="$version-1+ci2"
mkdir -p "$work/pkgs"
t0=$(date +%s)
# The binary `cargo test` builds (dev-dependency features included, so nothing is built
# again after the test step).
cargo test --no-run --locked --quiet
REPAYD_DEB_NO_BUILD=1 REPAYD_DEB_PROFILE=dev debian/build-deb.sh --deb-version "$v1" -o "$work/pkgs/" --quiet --fast
echo "v1 $v1 in $(($(date +%s) - t0)) s"
# Version 2: a copy of the tree plus one throw-away migration (and, instead of the test
# suite, one empty test, which makes `cargo test --no-run` build the binary as above).
# Its own target directory starts as hard links to the tree's dependencies, so only
# repayd itself is compiled; the tree's target directory is not touched.
t0=$(date +%s)
tree2=$work/tree-v2
target2=$repo/target/ci-upgrade
mkdir -p "$tree2"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$tree2"
for backend in sqlite postgres; do
    printf -- '-- Throw-away migration of packaging/systemd-test.sh (upgrade test only).\nCREATE TABLE ci_upgrade_marker (id INTEGER PRIMARY KEY);\n' \
        >"$tree2/migrations/$backend/9999_ci_upgrade_marker.sql"
done
rm -rf "$tree2/tests" && mkdir "$tree2/tests" && echo '#[test] fn builds() {}' >"$tree2/tests/ci_upgrade.rs"
# A new version of the conffile too, so the upgrade meets dpkg's conffile question.
printf '\n# (packaging/systemd-test.sh: version 2 of this file)\n' >>"$tree2/debian/repayd.toml"
rm -rf "$target2" && mkdir -p "$target2"
cp -al target/debug "$target2/debug"
rm -rf "$target2"/debug/repayd "$target2"/debug/deps/*repayd-* "$target2"/debug/deps/it-* \
    "$target2"/debug/.fingerprint/repayd-* "$target2"/debug/incremental/repayd-* \
    "$target2"/debug/incremental/it-* "$target2"/debug/build/repayd-*
(cd "$tree2" && CARGO_TARGET_DIR="$target2" cargo test --no-run --locked --quiet --test ci_upgrade &&
    CARGO_TARGET_DIR="$target2" REPAYD_DEB_NO_BUILD=1 REPAYD_DEB_PROFILE=dev \
        debian/build-deb.sh --deb-version "$v2" -o "$work/pkgs/" --quiet --fast)
rm -rf "$target2"
echo "v2 $v2 (with migration 9999) in $(($(date +%s) - t0)) s"
ls -l "$work/pkgs"
deb1=$(basename "$(ls "$work"/pkgs/repayd_"$v1"_*.deb)")
deb2=$(basename "$(ls "$work"/pkgs/repayd_"${v2}"_*.deb)")

# ---------------------------------------------------------------- boot
section "boot $suite under systemd-nspawn -b"
in_ct() {
    timeout 180 nsenter -t "$leader" -m -u -i -n -p -r -w \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER= "$@"
}
# Runs a shell command in the container, printing it and what it printed.
ct() {
    echo "\$ $1"
    in_ct sh -c "$1" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}
# Quiet: only the output, for values the script compares.
ctq() { in_ct sh -c "$1"; }
fail() {
    echo "FAIL: $*"
    if [ -n "$leader" ]; then
        echo "--- journalctl -u repayd (last 60 lines)"
        in_ct journalctl -u repayd --no-pager -n 60 2>&1 | sed 's/^/    /'
    fi
    exit 1
}
ok() { echo "ok: $*"; }

systemd-nspawn -q -b -D "$root" --ephemeral --register=no --keep-unit --private-network \
    -M "$machine" --bind-ro="$work/pkgs:/mnt/pkgs" >"$work/console.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 1 60); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$leader" ]; then
    tail -n 20 "$work/console.log"
    skip "systemd-nspawn could not boot $suite on this machine (see above)"
fi
# Until the container's manager answers (its socket appears a moment after exec), then
# until start-up is over.
state=
for _ in $(seq 1 120); do
    state=$(in_ct timeout 90 systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in
    running | degraded) break ;;
    esac
    sleep 1
done
case "$state" in
running | degraded) ;;
*)
    tail -n 20 "$work/console.log"
    skip "the container's systemd did not come up (state: ${state:-none})"
    ;;
esac
ct "systemctl --version | head -n 1; systemctl is-system-running"
ok "booted in $(elapsed) since the script started"

# ---------------------------------------------------------------- install
section "install $deb1"
out=$(ctq "dpkg -i /mnt/pkgs/$deb1 2>&1")
echo "$out" | sed 's/^/    /'
echo "$out" | grep -qi 'warn' && fail "dpkg -i printed a warning"
ct "stat -c '%U:%G %a %n' /var/lib/repayd /etc/repayd/repayd.toml; getent passwd repayd; dpkg-statoverride --list"
[ "$(ctq "stat -c '%U:%G %a' /var/lib/repayd")" = "repayd:repayd 750" ] || fail "/var/lib/repayd owner/mode"
[ "$(ctq "stat -c '%U:%G %a' /etc/repayd/repayd.toml")" = "root:repayd 640" ] || fail "config owner/mode"
ct "ls /usr/share/doc/repayd/examples/"
ctq "test -f /usr/share/doc/repayd/examples/agreements.csv" || fail "samples missing"
ok "user, directories, config owner/mode and examples as documented; no warnings"
# Reinstalling the same version: postinst is idempotent and changes nothing.
ctq "chmod 0600 /etc/repayd/repayd.toml && dpkg -i /mnt/pkgs/$deb1 >/dev/null 2>&1"
[ "$(ctq "stat -c '%U:%G %a' /etc/repayd/repayd.toml")" = "root:repayd 600" ] ||
    fail "reinstall reset the admin's mode"
ctq "chmod 0640 /etc/repayd/repayd.toml"
ok "reinstall left an admin's mode (0600) alone"

# ---------------------------------------------------------------- configure and start
section "configure for the test"
# Debits due at 00:00 local time (so today's are due now), a sandbox bank that takes 3 s
# per call (debits in flight when we stop), a fast poll; a 4 s watchdog via a drop-in.
ct "sed -i -e 's/^local_time = \"06:00\"/local_time = \"00:00\"/' \
    -e 's/^poll_seconds = 5$/poll_seconds = 1/' -e 's|^planner_cron = .*|planner_cron = \"*/2 * * * * *\"|' \
    -e 's/^kind = \"sandbox\" .*/kind = \"sandbox\"\n\n[gateway.sandbox]\nlatency_ms = 3000/' \
    /etc/repayd/repayd.toml && grep -n -e local_time -e poll_seconds -e planner_cron -e latency_ms /etc/repayd/repayd.toml"
ct "mkdir -p /etc/systemd/system/repayd.service.d && printf '[Service]\nWatchdogSec=4s\n' >/etc/systemd/system/repayd.service.d/ci.conf && systemctl daemon-reload"
ct "runuser -u repayd -- repayd import /usr/share/doc/repayd/examples/agreements.csv | tail -n 2"

section "start reaches READY"
t0=$(date +%s%N)
ct "systemctl start repayd" || fail "systemctl start"
echo "systemctl start returned after $((($(date +%s%N) - t0) / 1000000)) ms"
ct "systemctl show -p Type -p ActiveState -p SubState -p MainPID -p NRestarts -p WatchdogUSec -p StatusText repayd"
[ "$(ctq 'systemctl show -p ActiveState --value repayd')" = active ] || fail "not active"
ctq 'systemctl show -p StatusText --value repayd' | grep -q 'settings in force' || fail "no STATUS="
ct "journalctl -u repayd --no-pager -o cat | grep -m1 'repayd is running'" || fail "no 'repayd is running'"
ok "Type=notify start returned once READY=1 was sent; STATUS names the settings in force"

section "/readyz"
ct "curl -sS -w ' (HTTP %{http_code})\n' http://127.0.0.1:9464/readyz"
[ "$(ctq "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/readyz")" = 200 ] || fail "/readyz"
ok "/readyz answers 200"

section "watchdog keeps a healthy daemon alive past twice its interval"
pid=$(ctq 'systemctl show -p MainPID --value repayd')
echo "MainPID $pid, WatchdogSec=4s; sleeping 10 s"
sleep 10
ct "systemctl show -p ActiveState -p MainPID -p NRestarts -p WatchdogTimestampMonotonic repayd"
[ "$(ctq 'systemctl show -p MainPID --value repayd')" = "$pid" ] || fail "restarted"
[ "$(ctq 'systemctl show -p NRestarts --value repayd')" = 0 ] || fail "NRestarts"
ok "same process after 10 s (2.5 x the interval), no restart"

section "journald: priorities, one entry per event, no second timestamp"
ct "journalctl -u repayd --no-pager -o verbose -t repayd -g 'repayd is running' | grep -E '^ +(PRIORITY|SYSLOG_IDENTIFIER|MESSAGE|REPAYD_CONFIG)='"
[ "$(ctq "journalctl -u repayd -o json -t repayd -g 'repayd is running' --output-fields=PRIORITY | grep -c '\"PRIORITY\":\"6\"'")" -ge 1 ] ||
    fail "info is not priority 6"
ctq "journalctl -u repayd -o cat -t repayd | grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T'" && fail "a second timestamp"
ok "info at priority 6 with structured REPAYD_* fields; messages carry no timestamp"

digest() { ctq "sha256sum /etc/repayd/repayd.toml | cut -c1-12"; }
status() { ctq 'systemctl show -p StatusText --value repayd'; }

section "a good reload is in force when systemctl reload returns"
ct "sed -i 's/^max_attempts = 4/max_attempts = 5/' /etc/repayd/repayd.toml && grep -n max_attempts /etc/repayd/repayd.toml"
good=$(digest)
ct "systemctl reload repayd; echo \"exit \$?\"" | tee "$work/out"
grep -q 'exit 0' "$work/out" || fail "good reload failed"
st=$(status)
echo "StatusText right after: $st"
case "$st" in *"sha256 $good"*) ;; *) fail "status does not name $good" ;; esac
[ "$(ctq 'systemctl show -p MainPID --value repayd')" = "$pid" ] || fail "reload restarted it"
ok "exit 0; STATUS names the new file (sha256 $good) before systemctl returned"

section "bad reloads fail systemctl reload; the old settings keep running"
ctq "cp /etc/repayd/repayd.toml /root/good.toml"
since=$(ctq "date '+%Y-%m-%d %H:%M:%S'")
sleep 1
ct "sed -i 's/^batch_size = 50/batch_size = 50\nbatch_sise = 5/' /etc/repayd/repayd.toml"
ct "systemctl reload repayd; echo \"exit \$?\"" | tee "$work/out"
grep -q 'exit 0' "$work/out" && fail "a reload with an unknown key succeeded"
ct "cp /root/good.toml /etc/repayd/repayd.toml && printf '[debit\nbatch_size = \n' >>/etc/repayd/repayd.toml"
ct "systemctl reload repayd; echo \"exit \$?\"" | tee "$work/out"
grep -q 'exit 0' "$work/out" && fail "a reload of broken TOML succeeded"
st=$(status)
echo "StatusText: $st"
case "$st" in *"sha256 $good"*"rejected"*) ;; *) fail "status should name $good and the rejection" ;; esac
ct "systemctl show -p ActiveState -p MainPID repayd; curl -s -o /dev/null -w '/readyz HTTP %{http_code}\n' http://127.0.0.1:9464/readyz"
[ "$(ctq 'systemctl show -p MainPID --value repayd')" = "$pid" ] || fail "bad reload restarted it"
[ "$(ctq 'systemctl show -p ActiveState --value repayd')" = active ] || fail "not active"
ok "both exit non-zero; same process, still active, STATUS still names sha256 $good"

section "journalctl -p err shows why"
ct "journalctl -u repayd --no-pager -p err --since '$since'"
errs=$(ctq "journalctl -u repayd -p err --since '$since' -o cat")
echo "$errs" | grep -q 'batch_sise' || fail "the unknown key is not in journalctl -p err"
echo "$errs" | grep -q 'TOML\|toml\|expected' || fail "the TOML error is not in journalctl -p err"
echo "$errs" | grep -q '\.\./' && fail "a relative ../ file name"
# One entry per event: the daemon's rejection of the broken TOML is a single entry.
n=$(ctq "journalctl -u repayd -p err --since '$since' -o json -t repayd _PID=$pid | grep -c 'reload rejected'")
echo "daemon entries with 'reload rejected' since the first bad reload: $n (2 reloads)"
[ "$n" -eq 2 ] || fail "expected 2 daemon entries, one per rejected reload"
ctq "cp /root/good.toml /etc/repayd/repayd.toml && systemctl reload repayd" || fail "restoring"
ok "errors at priority 3, one entry per rejection, file named /etc/repayd/repayd.toml"

section "stop drains in-flight debits (longer than the watchdog interval)"
ctq "printf '%s\n' 'customer_external_id,customer_name,email,locale,time_zone,account_ref,mandate_ref,mandate_status,agreement_id,currency,principal,method,installments,annual_rate,fee_rate,first_due,frequency,rounding,remainder,business_day,schedule' >/tmp/due.csv
for i in 1 2 3; do echo \"CUST-CI\$i,CI \$i,ci\$i@example.com,en,UTC,CN622202020000CI0\$i,MND-CI-\$i,active,AGR-CI-\$i,CNY,100.00,interest-free,2,0,0,\$(date -u +%F),monthly,,,,\" >>/tmp/due.csv; done"
ct "runuser -u repayd -- repayd import /tmp/due.csv | tail -n 1"
inflight_sql="SELECT count(*) FROM debit_attempts WHERE state IN ('claimed','funds_checked','submitted')"
seen=
for _ in $(seq 1 40); do
    n=$(ctq "sqlite3 -readonly /var/lib/repayd/repayd.db \"$inflight_sql\"" 2>/dev/null || echo 0)
    if [ "${n:-0}" -gt 0 ]; then
        seen=$n
        break
    fi
    sleep 0.5
done
[ -n "$seen" ] || fail "no debit was ever in flight"
echo "debit attempts in flight: $seen"
t0=$(date +%s%N)
ct "systemctl stop repayd"
stop_ms=$((($(date +%s%N) - t0) / 1000000))
echo "systemctl stop took $stop_ms ms"
ct "systemctl show -p ActiveState -p Result -p ExecMainStatus repayd"
ct "journalctl -u repayd --no-pager -o cat _PID=$pid | tail -n 6"
ct "sqlite3 -readonly /var/lib/repayd/repayd.db \"SELECT state, count(*) FROM debit_attempts GROUP BY state\""
[ "$(ctq "sqlite3 -readonly /var/lib/repayd/repayd.db \"$inflight_sql\"")" = 0 ] || fail "left in flight"
[ "$(ctq 'systemctl show -p Result --value repayd')" = success ] || fail "stop result"
[ "$stop_ms" -gt 4000 ] || echo "note: the drain took less than the watchdog interval"
ok "in-flight debits finished and were recorded; Result=success after a ${stop_ms} ms drain"

section "a database error at start exits 78 and is not restarted"
ct "cp /etc/repayd/repayd.toml /root/good.toml && sed -i 's|^url = .*|url = \"postgres://repayd@db.invalid:99999/repayd\"|' /etc/repayd/repayd.toml"
ct "systemctl start repayd; echo \"exit \$?\"" | tee "$work/out"
grep -q 'exit 0' "$work/out" && fail "started with a bad database URL"
sleep 7 # past RestartSec=5s
ct "systemctl show -p ActiveState -p Result -p ExecMainStatus -p NRestarts repayd"
[ "$(ctq 'systemctl show -p ExecMainStatus --value repayd')" = 78 ] || fail "exit status not 78"
[ "$(ctq 'systemctl show -p NRestarts --value repayd')" = 0 ] || fail "restarted"
ct "journalctl -u repayd --no-pager -p err -o cat -n 3"
ctq "journalctl -u repayd -p err -o cat -n 5" | grep -q 'database.url' || fail "key not named"
ct "cp /root/good.toml /etc/repayd/repayd.toml && systemctl reset-failed repayd && systemctl start repayd"
ok "exit 78 naming database.url; RestartPreventExitStatus=78 held it"

section "upgrade $v1 -> $v2 (extra migration), edited conffile and its mode kept"
ctq "chmod 0440 /etc/repayd/repayd.toml"
pid=$(ctq 'systemctl show -p MainPID --value repayd')
echo "MainPID before the upgrade: $pid"
ct "sqlite3 -readonly /var/lib/repayd/repayd.db 'SELECT max(version) FROM _sqlx_migrations'"
# Both versions of the conffile changed (ours edited, the package's new): dpkg would ask.
# --force-confold answers "keep mine" without a terminal, as unattended upgrades do
# (apt-get -o Dpkg::Options::=--force-confold).
echo "\$ dpkg -i --force-confold /mnt/pkgs/$deb2"
out=$(ctq "dpkg -i --force-confold /mnt/pkgs/$deb2 2>&1 </dev/null")
echo "$out" | sed 's/^/    /'
echo "$out" | grep -qi 'warn' && fail "upgrade printed a warning"
ct "dpkg-query -W repayd; systemctl show -p ActiveState -p MainPID repayd"
[ "$(ctq 'systemctl show -p MainPID --value repayd')" != "$pid" ] || fail "not restarted by the upgrade"
ct "sqlite3 -readonly /var/lib/repayd/repayd.db 'SELECT version, description, success FROM _sqlx_migrations ORDER BY version DESC LIMIT 2'"
[ "$(ctq "sqlite3 -readonly /var/lib/repayd/repayd.db 'SELECT count(*) FROM _sqlx_migrations WHERE version = 9999 AND success'")" = 1 ] ||
    fail "migration 9999 not applied"
ct "stat -c '%U:%G %a %n' /etc/repayd/repayd.toml*; grep -n max_attempts /etc/repayd/repayd.toml"
echo "$out" | grep -q "Configuration file '/etc/repayd/repayd.toml'" || fail "dpkg did not meet the conffile question"
ctq "test -f /etc/repayd/repayd.toml.dpkg-dist" || fail "no .dpkg-dist beside the kept file"
[ "$(ctq "stat -c '%U:%G %a' /etc/repayd/repayd.toml")" = "root:repayd 440" ] || fail "mode reset"
ctq "grep -q '^max_attempts = 5' /etc/repayd/repayd.toml" || fail "edit lost"
ct "curl -sS -w ' (HTTP %{http_code})\n' http://127.0.0.1:9464/readyz"
ok "restarted on upgrade, migration 9999 applied at start, /readyz 200; the conffile question answered 'keep', edit and mode 0440 kept, the package's version beside it as .dpkg-dist"

section "purge"
out=$(ctq "dpkg --purge repayd 2>&1")
echo "$out" | sed 's/^/    /'
echo "$out" | grep -q '/var/lib/repayd' || fail "purge does not say what it keeps"
ct "systemctl is-active repayd; ls -la /var/lib/repayd | head -n 5; ls /etc/repayd 2>&1; dpkg-statoverride --list; getent passwd repayd"
ctq "test ! -e /etc/repayd" || fail "/etc/repayd left"
ctq "test -f /var/lib/repayd/repayd.db" || fail "the data was removed"
ok "stopped, configuration gone, /var/lib/repayd kept and said so"

section "systemd test passed in $(elapsed)"

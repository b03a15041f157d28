#!/usr/bin/env bash
# Checks systemd/repayd.service with `systemd-analyze verify` (syntax, directives, the
# binary it starts) and prints `systemd-analyze security --offline` (exposure score).
# The unit's /usr/bin/repayd is pointed at the built binary (default target/debug/repayd)
# in a temporary copy. Skips, saying so, where systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/debug/repayd}")
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIPPED: systemd-analyze is not installed (apt-get install systemd)"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/usr/bin/repayd|$binary|" systemd/repayd.service >"$work/repayd.service"
echo "--- systemd-analyze verify"
# --man=no: the man page is installed by the package, not on the CI machine.
out=$(systemd-analyze verify --man=no "$work/repayd.service" 2>&1) || {
    echo "$out"
    exit 1
}
# verify exits 0 on some warnings; treat any message about our unit as a failure.
if echo "$out" | grep -q "repayd.service"; then
    echo "$out"
    exit 1
fi
echo "${out:-no findings}"
echo "--- systemd-analyze security --offline=true"
systemd-analyze security --offline=true --no-pager "$work/repayd.service" | tail -n 25 || echo "(security analysis not available here)"

#!/usr/bin/env bash
# The whole test suite: real alembic for the interop tests, the binaries the end-to-end tests
# start, then every test of the workspace. The fault battery (tests/faults/) appends a line per
# scenario to target/faults-report.txt; its table is printed at the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${SILICA_CRON_FAULTS_REPORT:-$PWD/target/faults-report.txt}"
export SILICA_CRON_FAULTS_REPORT="$report"
rm -f "$report"
print_report() {
    [ -s "$report" ] || return 0
    echo
    echo "Fault battery (tests/faults/), $(date -u '+%Y-%m-%d %H:%M UTC'):"
    printf '%-4s | %-7s | %10s | %9s | %s\n' id result iterations recovery scenario
    sort -V "$report" | while IFS=$'\t' read -r id title result n recovery took held; do
        printf '%-4s | %-7s | %10s | %9s | %s (%s)\n' "$id" "$result" "$n" "$recovery" "$title" "$took"
        echo "       held: $held"
    done
}
trap print_report EXIT
scripts/setup-alembic.sh >/dev/null
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"

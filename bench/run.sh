#!/usr/bin/env bash
# The benchmarks of issue #2 (DESIGN §9), each figure beside an anchor measured in the same run:
#
#   1. whole-process wall times (bench/timeit.py, cases interleaved round by round):
#      - `silica-cron migrate status`, daemon down (one-shot) and up, vs `alembic current`
#      - `silica-cron migrate upgrade` empty -> head, daemon down and up, vs `alembic upgrade head`
#      - `silica-cron status` (daemon up) vs `/bin/true`
#   2. request latency over the control socket vs a raw Unix-socket server
#      (`cargo bench -p silica-cron-tests --bench latency`)
#   3. a Markdown summary of both (bench/report.py), with the command line that produced it.
#
#   BENCH_RUNS   timed runs per whole-process case (default 30)
#   BENCH_ITERS  timed round trips per client in the latency bench (default 2000)
#   BENCH_OUT    also write the Markdown summary to this file
#   BENCH_KEEP   set to keep the temp directory (databases, daemon log, raw results)
#
# Needs cargo and python3 (with venv, for alembic: scripts/setup-alembic.sh). Takes a few
# minutes: alembic is most of it.
set -euo pipefail
bench_name=bench
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_RUNS="${BENCH_RUNS:-30}"
runs="$BENCH_RUNS"
iters="${BENCH_ITERS:-2000}"
cmdline="$(command_line "bench/run.sh${*:+ $*}" BENCH_RUNS BENCH_ITERS)"
positive BENCH_RUNS "$runs"
positive BENCH_ITERS "$iters"
need_tools python3 cargo

# Same work on both sides: alembic's environment has the original three revisions, so ours
# runs the same three (tests/fixtures/original-chain), not the ones this project added since.
export SILICA_CRON_MIGRATIONS="$repo/tests/fixtures/original-chain"

build_release
cargo bench -p silica-cron-tests --bench latency --no-run
alembic="$(scripts/setup-alembic.sh | tail -n1)"
ini="$repo/tests/alembic_env/alembic.ini"

make_work scbench "$alembic"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    remove_work
}
trap cleanup EXIT

down="$work/down"       # database made by alembic; no daemon
up="$work/up"           # the same database, served by a daemon
a_up="$work/a-up"       # alembic upgrade head on a fresh database
o_up="$work/o-up"       # silica-cron migrate upgrade on a fresh database, no daemon
mkdir -p "$down" "$up" "$a_up" "$o_up"
results="$work/results.jsonl"

step "prepare and check (untimed)"
DATABASE_URL="sqlite:///$down/silica-cron.db" "$alembic" -c "$ini" upgrade head 2>/dev/null
cp "$down/silica-cron.db" "$up/silica-cron.db"
out="$(DATABASE_URL="sqlite:///$down/silica-cron.db" "$alembic" -c "$ini" current 2>/dev/null)"
[[ "$out" == *"34065a4cc718 (head)"* ]] || die "alembic current printed: $out"
echo "alembic current:                 $out"
out="$(cd "$down" && "$cli" migrate status)" || die "migrate status (daemon down) failed: $out"
echo "migrate status, daemon down:     $out"

(cd "$up" && exec "$crond" >"$work/daemon.log" 2>&1) &
daemon_pid=$!
for _ in $(seq 200); do
    [ -S "$up/silica-cron.db.sock" ] && (cd "$up" && "$cli" status >/dev/null 2>&1) && break
    kill -0 "$daemon_pid" 2>/dev/null || die "silica-crond exited: $(cat "$work/daemon.log")"
    sleep 0.05
done
(cd "$up" && "$cli" status >/dev/null) || die "silica-crond does not answer: $(cat "$work/daemon.log")"
out="$(cd "$up" && "$cli" migrate status)" || die "migrate status (daemon up) failed: $out"
echo "migrate status, daemon up:       $out"

# Each upgrade must really run the three revisions from empty.
(cd "$up" && "$cli" migrate downgrade base >/dev/null 2>&1) || die "migrate downgrade base (daemon up) failed"
n="$(cd "$up" && "$cli" migrate upgrade 2>&1 | grep -c 'Running upgrade')" || true
[ "$n" = 3 ] || die "daemon-up upgrade ran $n revisions, expected 3"
n="$(cd "$o_up" && "$cli" migrate upgrade 2>&1 | grep -c 'Running upgrade')" || true
[ "$n" = 3 ] || die "one-shot upgrade ran $n revisions, expected 3"
echo "migrate upgrade from empty runs 3 revisions, daemon up and down"
(cd "$o_up" && "$cli" migrate status >/dev/null) || die "one-shot upgrade did not reach head"

db_a="sqlite:///$down/silica-cron.db"
step "whole-process: status and migrate status ($runs runs each, interleaved)"
python3 bench/timeit.py --runs "$runs" --record "$results" - <<EOF
[
 {"label": "/bin/true", "cmd": ["/bin/true"]},
 {"label": "alembic current", "cmd": ["$alembic", "-c", "$ini", "current"], "env": {"DATABASE_URL": "$db_a"}},
 {"label": "migrate status, daemon down", "cmd": ["$cli", "migrate", "status"], "cwd": "$down"},
 {"label": "migrate status, daemon up", "cmd": ["$cli", "migrate", "status"], "cwd": "$up"},
 {"label": "status, daemon up", "cmd": ["$cli", "status"], "cwd": "$up"}
]
EOF

step "whole-process: upgrade empty -> head ($runs runs each, interleaved; resets untimed)"
python3 bench/timeit.py --runs "$runs" --record "$results" - <<EOF
[
 {"label": "/bin/true", "cmd": ["/bin/true"]},
 {"label": "alembic upgrade head", "cmd": ["$alembic", "-c", "$ini", "upgrade", "head"],
  "env": {"DATABASE_URL": "sqlite:///$a_up/a.db"}, "cwd": "$a_up", "setup": "rm -f a.db"},
 {"label": "migrate upgrade, daemon down", "cmd": ["$cli", "migrate", "upgrade"], "cwd": "$o_up",
  "setup": "rm -f silica-cron.db silica-cron.db-wal silica-cron.db-shm"},
 {"label": "migrate upgrade, daemon up", "cmd": ["$cli", "migrate", "upgrade"], "cwd": "$up",
  "setup": "'$cli' migrate downgrade base"}
]
EOF

step "request latency (daemon as shipped: built-in revisions; $iters round trips per client)"
# The daemon above reads the original chain from a directory (to match alembic's work), which
# it re-reads on every status; the latency figure is for the daemon as installed.
kill -TERM "$daemon_pid" 2>/dev/null || true
wait "$daemon_pid" 2>/dev/null || true
shipped="$work/shipped"
mkdir -p "$shipped"
(cd "$shipped" && exec env -u SILICA_CRON_MIGRATIONS "$crond" >"$work/daemon-shipped.log" 2>&1) &
daemon_pid=$!
for _ in $(seq 200); do
    [ -S "$shipped/silica-cron.db.sock" ] && (cd "$shipped" && "$cli" status >/dev/null 2>&1) && break
    kill -0 "$daemon_pid" 2>/dev/null || die "silica-crond exited: $(cat "$work/daemon-shipped.log")"
    sleep 0.05
done
SILICA_CRON_BENCH_SOCKET="$shipped/silica-cron.db.sock" SILICA_CRON_BENCH_ITERS="$iters" \
    SILICA_CRON_BENCH_JSON="$work/latency.json" \
    cargo bench -p silica-cron-tests --bench latency

step "summary"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- proto daemon ctl migrations 2>/dev/null || commit+=" + uncommitted product changes"
python3 bench/report.py --cmdline "$cmdline" --commit "$commit" --load "$load_before" \
    "$results" "$work/latency.json" | tee "$work/summary.md"
if [ -n "${BENCH_OUT:-}" ]; then
    cp "$work/summary.md" "$BENCH_OUT"
    echo "bench: summary written to $BENCH_OUT" >&2
fi

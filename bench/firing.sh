#!/usr/bin/env bash
# The firing benchmarks of issue #4 (DESIGN §9), each figure beside an anchor measured in the
# same run:
#
#   1. firing lag (scheduled instant -> first instruction of the run's main()) with 1, 1,000 and
#      10,000 active jobs, one minute each, about N/60 of them due that minute, and with 10,000
#      active jobs of which exactly one is due (DESIGN §9's figure); the anchor is a
#      bare CLOCK_REALTIME timerfd wake-up followed by posix_spawn of the same runner;
#   2. start rate with 10,000 jobs due at once, against posix_spawn + waitpid of /bin/true, and
#      the time until all 10,000 are recorded as completed;
#   3. idle wake-ups (context switches of every daemon thread) and resident memory of a daemon
#      with 10,000 jobs of which none is due for weeks;
#   4. `cron next` evaluations/s (`cargo bench -p silica-cron-schedule --bench next`);
#   5. a Markdown summary with the command line and the commit.
#
# The runner of every job is bench/stamp.c: it prints CLOCK_REALTIME (ns) as its first act, and
# the daemon stores that in job_executions.output; it also appends it to the configuration's
# starts.log, so starts are counted even when the daemon does not record them. Each daemon runs on its own database in a temp
# directory; its log and its runs' work directories are kept outside the database's directory,
# so that the daemon's inotify watch sees only database writes.
#
#   BENCH_IDLE_SECS         minimum idle window (default 60; the window runs alongside 1-2)
#   BENCH_SETTLE_SECS       wait after the idle daemon answers before counting (default 12: tokio's
#                           blocking threads exit 10 s after their last task, once, after start)
#   BENCH_ANCHOR_SAMPLES    timerfd + spawn samples of the lag anchor (default 50)
#   BENCH_BURST_JOBS        jobs due at once in 2 (default 10000)
#   BENCH_BURST_CONCURRENCY max_concurrent_runs for 2 (default the number of jobs)
#   BENCH_BURST_WAIT        seconds after the instant to wait for all of 2 to complete (default 90)
#   BENCH_STOP_SECS         seconds a daemon gets to exit after SIGTERM before SIGKILL (default 20)
#   BENCH_ONE_MINUTES       minutes of the "10,000 jobs, 1 due" configuration, one lag sample each
#                           (default 5)
#   BENCH_OUT               also write the Markdown summary to this file
#   BENCH_KEEP              keep the temp directory (databases, daemon logs, raw results)
#
# Needs cargo, cc, sqlite3 and python3. Takes 9-11 minutes: each configuration waits for a
# minute boundary, and the shorter work (anchors, `cargo bench`) runs while it waits.
set -euo pipefail
bench_name=bench
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

idle_secs="${BENCH_IDLE_SECS:-60}"
settle="${BENCH_SETTLE_SECS:-12}"
stop_secs="${BENCH_STOP_SECS:-20}"
burst_wait="${BENCH_BURST_WAIT:-90}"
anchor_samples="${BENCH_ANCHOR_SAMPLES:-50}"
one_minutes="${BENCH_ONE_MINUTES:-5}"
burst_jobs="${BENCH_BURST_JOBS:-10000}"
burst_conc="${BENCH_BURST_CONCURRENCY:-$burst_jobs}"
cmdline="$(command_line "bench/firing.sh${*:+ $*}" BENCH_IDLE_SECS BENCH_SETTLE_SECS \
    BENCH_ANCHOR_SAMPLES BENCH_BURST_JOBS BENCH_BURST_CONCURRENCY BENCH_BURST_WAIT \
    BENCH_STOP_SECS BENCH_ONE_MINUTES)"
positive BENCH_IDLE_SECS "$idle_secs"
positive BENCH_SETTLE_SECS "$settle"
positive BENCH_ANCHOR_SAMPLES "$anchor_samples"
positive BENCH_BURST_JOBS "$burst_jobs"
positive BENCH_BURST_CONCURRENCY "$burst_conc"
positive BENCH_BURST_WAIT "$burst_wait"
positive BENCH_STOP_SECS "$stop_secs"
positive BENCH_ONE_MINUTES "$one_minutes"
need_tools cc sqlite3 python3 cargo

machine="$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"

build_release
cargo bench -p silica-cron-schedule --bench next --no-run
# The commit the binaries were built from (taken now: others may commit while this runs).
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- proto daemon ctl runner schedule migrations 2>/dev/null || commit+=" + uncommitted product changes"

make_work scfire
# Every process this script starts in the background, by pid; stopped on exit.
pids=()
forget() {
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    remove_work
}
trap cleanup EXIT

results="$work/results.jsonl"
: >"$results"

step "runner and anchors (cc)"
stamp="$work/stamp"
if cc -O2 -static -o "$stamp" bench/stamp.c 2>/dev/null; then
    echo "stamp: statically linked (no dynamic loader before main)"
else
    cc -O2 -o "$stamp" bench/stamp.c
    echo "stamp: dynamically linked (no static libc here): the loader's work counts as lag"
fi
anchor="$work/firing_anchor"
cc -O2 -o "$anchor" bench/firing_anchor.c
"$stamp" >/dev/null

now_ns() { date +%s%N; }
sleep_until_ns() {
    local d=$(($1 - $(now_ns)))
    if ((d > 0)); then sleep "$(printf '%d.%09d' $((d / 1000000000)) $((d % 1000000000)))"; fi
}
# The next minute boundary (epoch seconds) at least 6 s away.
next_boundary() {
    local n t
    n="$(now_ns)"
    t=$(((n / 1000000000 / 60 + 1) * 60))
    if ((t * 1000000000 - n < 6000000000)); then t=$((t + 60)); fi
    echo "$t"
}
utc() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S'; }

# prepare NAME JOBS EXPRESSION-SQL MAX-CONCURRENT: a database at head with JOBS active jobs of
# one prompt; EXPRESSION-SQL computes each job's cron expression from i = 0..JOBS-1.
prepare() {
    local name="$1" jobs="$2" expr="$3" conc="$4" d="$work/$1"
    mkdir -p "$d/db" "$d/tmp"
    cat >"$d/db/config.toml" <<EOF
database = "silica-cron.db"
runner = ["$stamp", "$d/starts.log"]
max_concurrent_runs = $conc
EOF
    "$cli" --config "$d/db/config.toml" migrate upgrade >"$d/migrate.log" 2>&1 ||
        die "migrate upgrade for $name failed: $(cat "$d/migrate.log")"
    sqlite3 -bail "$d/db/silica-cron.db" <<EOF
BEGIN;
INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('bench', 'stamp', 'none', 'none');
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < $jobs)
INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active, timezone)
SELECT printf('job-%05d', i), (SELECT id FROM prompts WHERE name = 'bench'), $expr, 1, 'UTC' FROM c;
COMMIT;
EOF
    local n
    n="$(sqlite3 "$d/db/silica-cron.db" 'SELECT count(*) FROM scheduled_jobs WHERE is_active')"
    [ "$n" = "$jobs" ] || die "$name: $n active jobs, expected $jobs"
    echo "$name: $jobs jobs, e.g. '$(sqlite3 "$d/db/silica-cron.db" 'SELECT cron_expression FROM scheduled_jobs ORDER BY id DESC LIMIT 1')', max_concurrent_runs = $conc"
}

declare -A daemon_pid
start_daemon() {
    local name="$1" d="$work/$1" pid
    (cd "$d/db" && exec env TMPDIR="$d/tmp" "$crond" --config "$d/db/config.toml" >"$d/daemon.log" 2>&1) &
    pid=$!
    pids+=("$pid")
    daemon_pid[$name]=$pid
    for _ in $(seq 400); do
        "$cli" --config "$d/db/config.toml" status >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || die "silica-crond ($name) exited: $(cat "$d/daemon.log")"
        sleep 0.05
    done
    die "silica-crond ($name) does not answer: $(tail -n 20 "$d/daemon.log")"
}
# SIGTERM; SIGKILL (same pid) if it has not exited after BENCH_STOP_SECS, so that a daemon slow
# to stop cannot stretch the run. Says so when that happens.
stop_daemon() {
    local pid="${daemon_pid[$1]}" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < stop_secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "  $1: silica-crond (pid $pid) still running ${stop_secs} s after SIGTERM; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

# The short measurements run while a daemon waits for its minute, when at least their length
# (plus a margin) is left before the boundary, so nothing they do lands on a firing instant.
done_rate="" done_lag="" done_next=""
fill_until() {
    local t_ns=$(($1 * 1000000000)) left
    left() { echo $(((t_ns - $(now_ns)) / 1000000000)); }
    if [ -z "$done_rate" ] && (($(left) > 8)); then
        echo "  anchor: posix_spawn + waitpid of /bin/true for 2 s"
        "$anchor" rate 2 >"$work/anchor-rate.txt"
        python3 bench/firing_stats.py anchor-rate "$work/anchor-rate.txt" >>"$results"
        done_rate=1
    fi
    if [ -z "$done_lag" ] && (($(left) > anchor_samples / 8 + 6)); then
        echo "  anchor: $anchor_samples timerfd wake-ups + posix_spawn of the stamp"
        "$anchor" lag "$anchor_samples" "$stamp" >"$work/anchor-lag.txt"
        python3 bench/firing_stats.py anchor-lag "$work/anchor-lag.txt" >>"$results"
        done_lag=1
    fi
    if [ -z "$done_next" ] && (($(left) > 30)); then
        echo "  cargo bench -p silica-cron-schedule --bench next"
        cargo bench -q -p silica-cron-schedule --bench next 2>&1 | tee "$work/next.txt" | sed 's/^/    /'
        python3 bench/firing_stats.py next "$work/next.txt" >>"$results"
        done_next=1
    fi
}

# measure NAME LABEL JOBS TIMEOUT-SECS SPREAD(1: jobs i%60, 0: all due): starts NAME's daemon,
# waits for the next minute boundary, then until every run of that minute is recorded (or the
# timeout after the boundary), stops the daemon and records the lags of that minute.
measure() {
    local name="$1" label="$2" jobs="$3" timeout="$4" spread="$5" d="$work/$1" t m expect at q until
    t="$(next_boundary)"
    m=$(((t / 60) % 60))
    if [ "$spread" = 1 ]; then
        expect=$((jobs / 60 + (m < jobs % 60 ? 1 : 0)))
    else
        # All due at t and not again for an hour, so a slow minute is not followed by another.
        sqlite3 "$d/db/silica-cron.db" "UPDATE scheduled_jobs SET cron_expression = '$m * * * *'"
        expect="$jobs"
    fi
    start_daemon "$name"
    at="$(utc "$t")"
    (($(now_ns) < (t - 2) * 1000000000)) || die "$label: the daemon took until 2 s before its minute to answer"
    echo "$label: daemon up (pid ${daemon_pid[$name]}); $expect runs due at $at UTC"
    fill_until "$t"
    sleep_until_ns $(((t + 2) * 1000000000))
    while :; do
        q="$(sqlite3 -readonly "$d/db/silica-cron.db" \
            "SELECT count(*) || ' ' || coalesce(sum(status IN ('pending', 'running')), 0) FROM job_executions WHERE scheduled_for = '$at'" 2>/dev/null)" ||
            q="0 0"
        set -- $q
        if [ "$1" -ge "$expect" ] && [ "$2" = 0 ]; then break; fi
        if (($(now_ns) > (t + timeout) * 1000000000)); then
            echo "  timed out: $1 rows, $2 still pending or running at +$timeout s"
            break
        fi
        sleep 0.25
    done
    until="$(now_ns)"
    stop_daemon "$name"
    python3 bench/firing_stats.py fire --label "$label" --db "$d/db/silica-cron.db" \
        --instant "$t" --expect "$expect" --jobs "$jobs" --until "$until" --starts "$d/starts.log" >>"$results"
}

# measure_one NAME LABEL JOBS MINUTES: like measure, for a database where only job 0 is due each
# minute; the daemon stays up for MINUTES boundaries, one lag sample each.
measure_one() {
    local name="$1" label="$2" jobs="$3" minutes="$4" d="$work/$1" t at n until instants=()
    start_daemon "$name"
    t="$(next_boundary)"
    echo "$label: daemon up (pid ${daemon_pid[$name]}); one run due at each of $minutes minutes from $(utc "$t") UTC"
    for ((k = 0; k < minutes; k++)); do
        at="$(utc "$t")"
        fill_until "$t"
        sleep_until_ns $(((t + 1) * 1000000000))
        while :; do
            n="$(sqlite3 -readonly "$d/db/silica-cron.db" \
                "SELECT count(*) FROM job_executions WHERE scheduled_for = '$at' AND status NOT IN ('pending', 'running')" 2>/dev/null)" || n=0
            [ "$n" -ge 1 ] && break
            if (($(now_ns) > (t + 30) * 1000000000)); then
                echo "  timed out: the run due at $at is not recorded at +30 s"
                break
            fi
            sleep 0.25
        done
        instants+=("$t")
        t=$((t + 60))
    done
    until="$(now_ns)"
    stop_daemon "$name"
    python3 bench/firing_stats.py fire --label "$label" --db "$d/db/silica-cron.db" \
        --instant "${instants[@]}" --expect "$minutes" --jobs "$jobs" --until "$until" --starts "$d/starts.log" >>"$results"
}

# Per-thread context switches: tid, name, voluntary, nonvoluntary.
switches() {
    local s
    for s in /proc/"$1"/task/*/status; do
        awk -F'\t' -v OFS='\t' '/^Name:/ {n = $2} /^Pid:/ {p = $2}
            /^voluntary_ctxt_switches:/ {v = $2} /^nonvoluntary_ctxt_switches:/ {nv = $2}
            END {if (p != "") print p, n, v, nv}' "$s" 2>/dev/null || true
    done
}

step "databases (migrate upgrade, then sqlite3 inserts; no daemon yet)"
# Weeks away: January 1st, at 10,000 different minutes of the day (7 days' worth collide).
prepare idle 10000 "(i % 60) || ' ' || ((i / 60) % 24) || ' 1 1 *'" 512
prepare n1 1 "'* * * * *'" 512
prepare n1000 1000 "(i % 60) || ' * * * *'" 512
prepare n10000 10000 "(i % 60) || ' * * * *'" 512
# One job every minute; the 9,999 others on January 1st (the idle daemon's expressions).
prepare one10000 10000 "CASE WHEN i = 0 THEN '* * * * *' ELSE (i % 60) || ' ' || ((i / 60) % 24) || ' 1 1 *' END" 512
prepare burst "$burst_jobs" "'* * * * *'" "$burst_conc" # made 'M * * * *' for its minute

step "idle daemon: 10,000 jobs, none due; counted from here until the firing runs are done"
start_daemon idle
sleep "$settle"
idle_pid="${daemon_pid[idle]}"
switches "$idle_pid" >"$work/idle-before.tsv"
idle_t0="$(now_ns)"
echo "idle: pid $idle_pid, $(wc -l <"$work/idle-before.tsv") threads, counting"

step "firing lag, one minute per configuration"
measure n1 "1 job" 1 30 0
measure n1000 "1,000 jobs" 1000 30 1
measure n10000 "10,000 jobs" 10000 30 1
measure_one one10000 "10,000 jobs, 1 due" 10000 "$one_minutes"

step "start rate: $burst_jobs jobs due at once (max_concurrent_runs = $burst_conc)"
measure burst "burst $burst_jobs" "$burst_jobs" "$burst_wait" 0
fill_until "$(($(date +%s) + 3600))" # whatever did not fit in the waits

step "idle daemon: wake-ups and memory"
sleep_until_ns $((idle_t0 + idle_secs * 1000000000))
switches "$idle_pid" >"$work/idle-after.tsv"
idle_t1="$(now_ns)"
cp "/proc/$idle_pid/status" "$work/idle-status.txt"
kill -0 "$idle_pid" 2>/dev/null || die "the idle daemon died: $(cat "$work/idle/daemon.log")"
stop_daemon idle
python3 bench/firing_stats.py idle --before "$work/idle-before.tsv" --after "$work/idle-after.tsv" \
    --secs "$(((idle_t1 - idle_t0) / 1000000))e-3" --status "$work/idle-status.txt" --jobs 10000 >>"$results"

step "daemon warnings"
grep -h -i -E 'warn|error' "$work"/*/daemon.log | sort | uniq -c | sort -rn | head -n 10 || echo "  none"

step "summary"
python3 bench/firing_stats.py report --cmdline "$cmdline" --commit "$commit" --load "$load_before" \
    --machine "$machine" "$results" | tee "$work/summary.md"
if [ -n "${BENCH_OUT:-}" ]; then
    cp "$work/summary.md" "$BENCH_OUT"
    echo "bench: summary written to $BENCH_OUT" >&2
fi

#!/usr/bin/env bash
# Issue #3's benchmark: a table-rebuild revision over a job_executions table of 1,000,000 rows,
# upgrade and downgrade, side by side with the same rebuild hand-written in the sqlite3 shell and
# with alembic's batch mode. Target: silica-cron within 1.1x of the hand-written SQL.
#
#   1. a migrations checkout in a temp dir (copy of migrations/), `silica-cron migrate upgrade`
#      (one-shot, no daemon), job_executions filled with BENCH_ROWS rows by a recursive CTE in one
#      transaction; the file is saved as pristine.db (at 34065a4cc718)
#   2. schema.sql: `status VARCHAR(50)` -> `status VARCHAR(100)`, `migrate create "widen status"`
#      writes the rebuild revision; a verified one-shot upgrade of a copy gives upgraded.db
#   3. whole-process times (bench/timeit.py, cases interleaved, the database restored untimed
#      before each run): silica-cron upgrade / downgrade -1, the same statements in the sqlite3
#      shell (as is, and with PRAGMA secure_delete = OFF: see bench/README.md), and
#      `alembic upgrade +1` / `downgrade -1` of a batch_alter_table revision written into a copy
#      of tests/alembic_env
#   4. a Markdown table with the command line and the commit
#
#   BENCH_RUNS   timed runs per case (default 5), after 1 warm-up round
#   BENCH_ROWS   rows in job_executions (default 1000000)
#   BENCH_OUT    also write the Markdown summary to this file
#   BENCH_KEEP   set to keep the temp directory (databases, revision files, results.jsonl)
#
# Needs cargo, sqlite3 and python3 (with venv, for alembic: scripts/setup-alembic.sh), and about
# 1.5 GB in /tmp. Takes a few minutes.
set -euo pipefail
bench_name=rebuild
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_RUNS="${BENCH_RUNS:-5}"
runs="$BENCH_RUNS"
rows="${BENCH_ROWS:-1000000}"
target="1.1"
cmdline="$(command_line "bench/rebuild.sh${*:+ $*}" BENCH_RUNS BENCH_ROWS)"
positive BENCH_RUNS "$runs"
positive BENCH_ROWS "$rows"
need_tools python3 sqlite3 cargo

build_release
alembic="$(scripts/setup-alembic.sh | tail -n1)"
sd="$(sqlite3 :memory: 'PRAGMA secure_delete')"
echo "sqlite3 shell $(sqlite3 --version | cut -d' ' -f1) (secure_delete $sd by default);" \
    "$("$alembic" --version 2>&1), Python sqlite3 $("$(dirname "$alembic")/python" -c 'import sqlite3; print(sqlite3.sqlite_version)');" \
    "silica-cron: bundled $(grep -A1 '^name = "libsqlite3-sys"' Cargo.lock | sed -n 's/^version = "\(.*\)"/libsqlite3-sys \1/p')"

make_work screbuild "$alembic"
trap remove_work EXIT

mig="$work/migrations"        # the migrations checkout (SILICA_CRON_MIGRATIONS)
aenv="$work/alembic_env"      # copy of tests/alembic_env plus the batch revision
prep="$work/prep"             # where pristine.db is made, and the checks run
pristine="$work/pristine.db"  # at 34065a4cc718, $rows job_executions rows
upgraded="$work/upgraded.db"  # pristine.db after silica-cron's upgrade (start of the downgrades)
results="$work/results.jsonl"
cp -r "$repo/migrations" "$mig"
cp -r "$repo/tests/alembic_env" "$aenv"
rm -rf "$aenv/__pycache__" "$aenv/versions/__pycache__"
mkdir -p "$prep" "$work/silica-up" "$work/silica-down" "$work/shell-up" "$work/shell-down" \
    "$work/shell-nosd-up" "$work/shell-nosd-down" "$work/alembic-up" "$work/alembic-down"
export SILICA_CRON_MIGRATIONS="$mig"

q() { sqlite3 -bail "$1" "$2"; }    # one query, the first result row
status_type() { q "$1" "SELECT type FROM pragma_table_info('job_executions') WHERE name = 'status'"; }
version() { q "$1" "SELECT group_concat(version_num) FROM cron_alembic_version"; }
count() { q "$1" "SELECT count(*) FROM job_executions"; }

# Copy a database file only when it is whole: nobody has it open and no WAL is left beside it.
save_db() {
    local from="$1" to="$2"
    sqlite3 -bail "$from" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    if command -v fuser >/dev/null 2>&1 && fuser "$from" >/dev/null 2>&1; then
        die "$from is still open: $(fuser "$from" 2>&1)"
    fi
    [ ! -s "$from-wal" ] || die "$from-wal is not empty after the checkpoint"
    cp "$from" "$to"
}

step "1. migrations checkout at head, $rows job_executions rows (untimed)"
# The benchmark is pinned to the original chain (5d8b746712b6 -> fc0bfa77ff5a -> 34065a4cc718),
# the one tests/alembic_env mirrors. Later revisions in migrations/ are left out of the copy;
# schema.sql then becomes the schema of the original chain's head, read back from the database.
pruned=""
for f in "$mig"/versions/*.sql; do
    case "$(basename "$f")" in
        *_5d8b746712b6_*|*_fc0bfa77ff5a_*|*_34065a4cc718_*) ;;
        *) pruned+=" $(basename "$f")"; rm "$f" ;;
    esac
done
(cd "$prep" && "$cli" migrate upgrade) || die "migrate upgrade from empty failed"
[ "$(version "$prep/silica-cron.db")" = 34065a4cc718 ] || die "the fresh database is not at 34065a4cc718"
if [ -n "$pruned" ]; then
    echo "left out of the copy (later than the original chain):$pruned"
    {
        echo "-- The declared schema at 34065a4cc718 (written by bench/rebuild.sh)."
        sqlite3 -bail "$prep/silica-cron.db" \
            "SELECT sql || ';' FROM sqlite_master WHERE sql IS NOT NULL
               AND tbl_name NOT IN ('cron_alembic_version', 'silica_cron_revision_ledger') ORDER BY rowid"
    } >"$mig/schema.sql"
fi
out="$(cd "$prep" && "$cli" migrate check 2>&1)" || die "schema.sql does not match the revisions: $out"
t0=$(date +%s%N)
sqlite3 -bail "$prep/silica-cron.db" <<EOF
BEGIN IMMEDIATE;
INSERT INTO prompts (id, name, description, prompt_text, model, persona) VALUES
 (1, 'daily-report', 'daily summary', 'Summarise yesterday''s activity.', 'haiku', 'analyst'),
 (2, 'cleanup', 'weekly cleanup', 'List stale branches.', 'sonnet', 'maintainer'),
 (3, 'health', 'hourly health', 'Check the service health endpoints.', 'haiku', 'sre');
INSERT INTO scheduled_jobs (id, name, prompt_id, cron_expression, is_active) VALUES
 (1, 'daily-report', 1, '0 6 * * *', 1), (2, 'cleanup', 2, '0 3 * * 0', 1),
 (3, 'health', 3, '0 * * * *', 1), (4, 'health-old', 3, '*/30 * * * *', 0);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $rows)
INSERT INTO job_executions
    (id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message)
SELECT i, 1 + i % 4,
       printf('%08x-%04x-4%03x-8%03x-%012x', i * 2654435761 % 4294967296, i % 65536, i % 4096,
              (i / 7) % 4096, i * 40503),
       datetime(1735689600 + i * 60, 'unixepoch'),
       datetime(1735689600 + i * 60 + 5 + i % 50, 'unixepoch'),
       CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'success' END,
       'run ' || i || ': ' || substr('ok; 3 items processed, 0 warnings, next run scheduled', 1, 20 + i % 35),
       CASE WHEN i % 20 = 0 THEN 'timeout after 30s' END
FROM n;
COMMIT;
EOF
save_db "$prep/silica-cron.db" "$pristine"
[ "$(count "$pristine")" = "$rows" ] || die "pristine.db does not hold $rows rows"
printf 'filled in %d ms; pristine.db: %s MB, journal_mode %s\n' "$(( ($(date +%s%N) - t0) / 1000000 ))" \
    "$(( $(stat -c %s "$pristine") / 1048576 ))" "$(q "$pristine" 'PRAGMA journal_mode')"

step "2. schema.sql: status VARCHAR(50) -> VARCHAR(100); migrate create"
sed -i 's/\bstatus VARCHAR(50)/status VARCHAR(100)/' "$mig/schema.sql"
[ "$(grep -c 'status VARCHAR(100)' "$mig/schema.sql")" = 1 ] || die "schema.sql edit failed"
out="$(cd "$prep" && "$cli" migrate create "widen status" 2>&1)" || die "migrate create failed: $out"
echo "$out"
[[ "$out" == *"Detected type change from VARCHAR(50) to VARCHAR(100) on 'job_executions.status'"* ]] \
    || die "migrate create did not detect the type change"
revfile="$(ls "$mig"/versions/*_widen_status.sql)"
rev="$(sed -n 's/^-- Revision ID: \([0-9a-f]*\)$/\1/p' "$revfile")"
[[ "$rev" =~ ^[0-9a-f]{12}$ ]] || die "no revision id in $revfile"
grep -q '^ALTER TABLE job_executions RENAME TO _silica_old_job_executions;$' "$revfile" \
    || die "$revfile is not a table rebuild"
echo "revision $rev: $(basename "$revfile")"

# (c) the same rebuild hand-written for the sqlite3 shell, with the version-table update.
cols="id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message"
hand() {    # $1 = new status width, $2 = from revision, $3 = to revision, $4 = extra pragma
    cat <<EOF
PRAGMA foreign_keys = OFF;${4:+
$4}
BEGIN IMMEDIATE;
DROP INDEX ix_job_executions_id;
DROP INDEX ix_job_executions_session_id;
PRAGMA legacy_alter_table = ON;
ALTER TABLE job_executions RENAME TO _silica_old_job_executions;
CREATE TABLE job_executions (
	id INTEGER NOT NULL, 
	scheduled_job_id INTEGER, 
	session_id VARCHAR(36), 
	started_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	completed_at DATETIME, 
	status VARCHAR($1), 
	output TEXT, 
	error_message TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(scheduled_job_id) REFERENCES scheduled_jobs (id)
);
INSERT INTO job_executions ($cols) SELECT $cols FROM _silica_old_job_executions;
DROP TABLE _silica_old_job_executions;
PRAGMA legacy_alter_table = OFF;
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);
UPDATE cron_alembic_version SET version_num = '$3' WHERE version_num = '$2';
COMMIT;
EOF
}
hand 100 34065a4cc718 "$rev" >"$work/shell-up/up.sql"
hand 50 "$rev" 34065a4cc718 >"$work/shell-down/down.sql"
# The same with the page zeroing of the Debian build off, as in silica-cron's bundled SQLite.
hand 100 34065a4cc718 "$rev" "PRAGMA secure_delete = OFF;" >"$work/shell-nosd-up/up.sql"
hand 50 "$rev" 34065a4cc718 "PRAGMA secure_delete = OFF;" >"$work/shell-nosd-down/down.sql"

# (d) alembic batch mode, in the copy of tests/alembic_env. Same revision id as ours, so that
# alembic can also downgrade the database silica-cron upgraded.
cat >"$aenv/versions/20261124_0000_${rev}_widen_status_batch.py" <<EOF
"""widen status (batch mode; written by bench/rebuild.sh)

Revision ID: $rev
Revises: 34065a4cc718
"""
from alembic import op
import sqlalchemy as sa

revision = '$rev'
down_revision = '34065a4cc718'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_executions') as b:
        b.alter_column('status', type_=sa.String(100), existing_type=sa.String(50))


def downgrade() -> None:
    with op.batch_alter_table('job_executions') as b:
        b.alter_column('status', type_=sa.String(50), existing_type=sa.String(100))
EOF
ini="$aenv/alembic.ini"

step "checks (untimed)"
# silica-cron's upgrade: all rows, integrity, the new type; its result starts the downgrades.
cp "$pristine" "$prep/silica-cron.db"
out="$(cd "$prep" && "$cli" migrate upgrade 2>&1)" || die "migrate upgrade failed: $out"
echo "$out"
[ "$(version "$prep/silica-cron.db")" = "$rev" ] || die "upgrade did not reach $rev"
n="$(count "$prep/silica-cron.db")"; [ "$n" = "$rows" ] || die "after the upgrade: $n rows, expected $rows"
ic="$(q "$prep/silica-cron.db" 'PRAGMA integrity_check')"; [ "$ic" = ok ] || die "integrity_check: $ic"
fk="$(q "$prep/silica-cron.db" 'PRAGMA foreign_key_check')"; [ -z "$fk" ] || die "foreign_key_check: $fk"
ty="$(status_type "$prep/silica-cron.db")"; [ "$ty" = "VARCHAR(100)" ] || die "status is $ty after the upgrade"
echo "silica-cron upgrade: $n rows, integrity_check $ic, status $ty, version $rev"
echo "  ledger: $(q "$prep/silica-cron.db" "SELECT 'duration_ms ' || duration_ms FROM silica_cron_revision_ledger WHERE revision = '$rev'") (statements + version row, before COMMIT)"
save_db "$prep/silica-cron.db" "$upgraded"
sqlite3 "$upgraded" .schema >"$work/schema.up"
sqlite3 "$pristine" .schema >"$work/schema.pristine"

# The hand-written SQL does exactly what the revision does: same .schema both ways.
cp "$pristine" "$prep/silica-cron.db"
(cd "$prep" && sqlite3 -bail silica-cron.db ".read $work/shell-up/up.sql") || die "hand-written upgrade failed"
sqlite3 "$prep/silica-cron.db" .schema | cmp -s - "$work/schema.up" \
    || die "hand-written upgrade gives another schema than migrate upgrade"
[ "$(version "$prep/silica-cron.db")" = "$rev" ] || die "hand-written upgrade: wrong version"
(cd "$prep" && sqlite3 -bail silica-cron.db ".read $work/shell-down/down.sql") || die "hand-written downgrade failed"
sqlite3 "$prep/silica-cron.db" .schema | cmp -s - "$work/schema.pristine" \
    || die "hand-written downgrade does not return to the pristine schema"
echo "hand-written up/down: same .schema as migrate upgrade / the pristine database"

cp "$upgraded" "$prep/silica-cron.db"
out="$(cd "$prep" && "$cli" migrate downgrade -1 2>&1)" || die "migrate downgrade -1 failed: $out"
sqlite3 "$prep/silica-cron.db" .schema | cmp -s - "$work/schema.pristine" \
    || die "migrate downgrade -1 does not return to the pristine schema"
[ "$(count "$prep/silica-cron.db")" = "$rows" ] || die "migrate downgrade -1 lost rows"
echo "silica-cron downgrade -1: back to the pristine schema, $rows rows"

cp "$pristine" "$work/alembic-up/silica-cron.db"
out="$(DATABASE_URL="sqlite:///$work/alembic-up/silica-cron.db" "$alembic" -c "$ini" current 2>/dev/null)"
[[ "$out" == 34065a4cc718* ]] || die "alembic current on pristine.db printed: $out"
out="$(DATABASE_URL="sqlite:///$work/alembic-up/silica-cron.db" "$alembic" -c "$ini" heads 2>/dev/null)"
[[ "$out" == "$rev (head)"* ]] || die "alembic heads printed: $out"
echo "alembic: pristine.db is at 34065a4cc718, the batch revision $rev is head"
rm -f "$prep/silica-cron.db" "$work/alembic-up/silica-cron.db"

step "3. whole-process times ($runs runs each after 1 warm-up round, interleaved; restores untimed)"
restore() { echo "rm -f silica-cron.db-wal silica-cron.db-shm && cp $1 silica-cron.db && sync"; }
python3 bench/timeit.py --runs "$runs" --warmup 1 --record "$results" - <<EOF
[
 {"label": "silica up", "cmd": ["$cli", "migrate", "upgrade"], "cwd": "$work/silica-up",
  "env": {"SILICA_CRON_MIGRATIONS": "$mig"}, "setup": "$(restore "$pristine")"},
 {"label": "shell up", "cmd": ["sqlite3", "-bail", "silica-cron.db", ".read up.sql"],
  "cwd": "$work/shell-up", "setup": "$(restore "$pristine")"},
 {"label": "shell nosd up", "cmd": ["sqlite3", "-bail", "silica-cron.db", ".read up.sql"],
  "cwd": "$work/shell-nosd-up", "setup": "$(restore "$pristine")"},
 {"label": "alembic up", "cmd": ["$alembic", "-c", "$ini", "upgrade", "+1"], "cwd": "$work/alembic-up",
  "env": {"DATABASE_URL": "sqlite:///$work/alembic-up/silica-cron.db"}, "setup": "$(restore "$pristine")"},
 {"label": "silica down", "cmd": ["$cli", "migrate", "downgrade", "-1"], "cwd": "$work/silica-down",
  "env": {"SILICA_CRON_MIGRATIONS": "$mig"}, "setup": "$(restore "$upgraded")"},
 {"label": "shell down", "cmd": ["sqlite3", "-bail", "silica-cron.db", ".read down.sql"],
  "cwd": "$work/shell-down", "setup": "$(restore "$upgraded")"},
 {"label": "shell nosd down", "cmd": ["sqlite3", "-bail", "silica-cron.db", ".read down.sql"],
  "cwd": "$work/shell-nosd-down", "setup": "$(restore "$upgraded")"},
 {"label": "alembic down", "cmd": ["$alembic", "-c", "$ini", "downgrade", "-1"], "cwd": "$work/alembic-down",
  "env": {"DATABASE_URL": "sqlite:///$work/alembic-down/silica-cron.db"}, "setup": "$(restore "$upgraded")"}
]
EOF

# Each case's last run must have done its job.
for c in silica-up:"$rev":"VARCHAR(100)" shell-up:"$rev":"VARCHAR(100)" shell-nosd-up:"$rev":"VARCHAR(100)" \
    alembic-up:"$rev":"VARCHAR(100)" silica-down:34065a4cc718:"VARCHAR(50)" shell-down:34065a4cc718:"VARCHAR(50)" \
    shell-nosd-down:34065a4cc718:"VARCHAR(50)" alembic-down:34065a4cc718:"VARCHAR(50)"; do
    IFS=: read -r dir want_v want_t <<<"$c"
    db="$work/$dir/silica-cron.db"
    [ "$(version "$db")" = "$want_v" ] && [ "$(status_type "$db")" = "$want_t" ] && [ "$(count "$db")" = "$rows" ] \
        || die "$dir: version $(version "$db"), status $(status_type "$db"), $(count "$db") rows after the last run"
done
echo "each case's last run left its database at the expected version, type and row count"

step "summary"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- proto daemon ctl migrations 2>/dev/null || commit+=" + uncommitted product changes"
python3 - "$results" "$cmdline" "$commit" "$load_before" "$rows" "$target" "$sd" <<'EOF' | tee "$work/summary.md"
import datetime, json, os, sys

path, cmdline, commit, load, rows, target, sd = sys.argv[1:]
target = float(target)
r = {}
with open(path) as f:
    for line in f:
        x = json.loads(line)
        r[x["label"]] = x

def ms(x):
    return f"{x['median_ms'] / 1000:.3f} s (p90 {x['p90_ms'] / 1000:.3f})"

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"`{cmdline}` at {commit}, {now}; {os.cpu_count()} CPUs, load average before {load}.")
print(f"Table rebuild of job_executions ({int(rows):,} rows), status VARCHAR(50) <-> VARCHAR(100). "
      f"Whole-process wall time, median (p90) of {r['silica up']['runs']} runs, cases interleaved.\n")
head = ("", "silica-cron", "sqlite3 shell, hand-written", "alembic batch",
        "silica / hand-written", "target", "")
print("| " + " | ".join(head) + " |")
print("|" + "|".join(" --- " for _ in head) + "|")
for what, cmd in (("up", "`migrate upgrade`"), ("down", "`migrate downgrade -1`")):
    s, h, a = r[f"silica {what}"], r[f"shell {what}"], r[f"alembic {what}"]
    ratio = s["median_ms"] / h["median_ms"]
    ok = ratio <= target
    print(f"| {what}grade ({cmd}) | {ms(s)} | {ms(h)} | {ms(a)} | {ratio:.2f}x | ≤ {target:.1f}x | "
          f"{'met' if ok else '**MISSED**'} |")
print(f"\nThe sqlite3 shell zeroes freed pages (secure_delete {sd} by default; silica-cron's bundled SQLite "
      "does not), so the same SQL with `PRAGMA secure_delete = OFF` is the like-for-like anchor:\n")
head = ("", "silica-cron", "sqlite3 shell, hand-written, secure_delete off", "silica / that", "target", "")
print("| " + " | ".join(head) + " |")
print("|" + "|".join(" --- " for _ in head) + "|")
for what in ("up", "down"):
    s, h = r[f"silica {what}"], r[f"shell nosd {what}"]
    ratio = s["median_ms"] / h["median_ms"]
    print(f"| {what}grade | {ms(s)} | {ms(h)} | {ratio:.2f}x | ≤ {target:.1f}x | "
          f"{'met' if ratio <= target else '**MISSED**'} |")
EOF
if [ -n "${BENCH_OUT:-}" ]; then
    cp "$work/summary.md" "$BENCH_OUT"
    echo "rebuild: summary written to $BENCH_OUT" >&2
fi

#!/usr/bin/env python3
"""Whole-process wall times, several commands interleaved, for bench/run.sh.

    timeit.py --runs N [--warmup K] [--record FILE] SPEC.json

SPEC.json is a list of cases:

    [{"label": "alembic current",           # required, unique
      "cmd": ["/abs/alembic", "-c", "..."], # required; argv, no shell (the shell would be timed too)
      "cwd": "/tmp/dir",                    # optional
      "env": {"DATABASE_URL": "..."},       # optional, added to a cleaned environment
      "setup": "rm -f silica-cron.db",      # optional shell command run in cwd before each run, untimed
      "expect": 0}]                         # optional exit code every run must have (default 0)

Each round runs every case once, in order, so a burst of load on the shared machine lands on all
of them alike rather than on whichever case happened to run then. A run is timed from just before
posix_spawn to the return of waitpid: process creation, exec, dynamic loading, the work and exit,
which is what a user waits for. stdin/stdout/stderr are /dev/null. Warm-up rounds (page cache,
first-run compilation of .pyc files and the like) are not recorded.

Prints one line per case (median, p90, min, max in ms) and appends one JSON object per case to
--record. (No memory figure: wait4's ru_maxrss of a spawned child starts from this Python
process's own RSS, so it says nothing about small programs.)
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

# Variables the binaries (and the alembic env) read: the developer's own must not leak in.
# (SILICA_CRON_MIGRATIONS is not among them: run.sh unsets the developer's and sets the
# original chain on purpose, so both tools do the same work.)
CLEARED = (
    "DATABASE_URL",
    "CRON_DATABASE_URL",
    "SILICA_CRON_SOCKET",
    "SILICA_CRON_CONFIG",
    "SILICA_ENVIRONMENT",
    "LOG_LEVEL",
    "JOURNAL_STREAM",
    "ALEMBIC_PRIORITY_SERVER_DEFAULT",
)


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


class Case:
    def __init__(self, spec, base_env):
        self.label = spec["label"]
        argv = list(spec["cmd"])
        exe = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
        if not exe or not os.access(exe, os.X_OK):
            sys.exit(f"timeit: {self.label}: cannot execute {argv[0]!r}")
        self.exe = exe
        self.argv = argv
        self.cwd = spec.get("cwd")
        self.setup = spec.get("setup")
        self.expect = spec.get("expect", 0)
        env = dict(base_env)
        env.update({k: str(v) for k, v in spec.get("env", {}).items()})
        self.env = env
        self.times_ms = []

    def run_once(self, record):
        if self.setup:
            r = subprocess.run(self.setup, shell=True, cwd=self.cwd, env=self.env, text=True,
                               stdin=subprocess.DEVNULL, capture_output=True)
            if r.returncode != 0:
                sys.exit(f"timeit: {self.label}: setup {self.setup!r} failed with exit {r.returncode}\n"
                         f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ]
        old = os.getcwd()
        if self.cwd:
            os.chdir(self.cwd)  # posix_spawn has no cwd parameter; the child inherits ours
        try:
            t0 = time.perf_counter_ns()
            pid = os.posix_spawn(self.exe, self.argv, self.env, file_actions=actions)
            _, status = os.waitpid(pid, 0)
            t1 = time.perf_counter_ns()
        finally:
            os.chdir(old)
        code = os.waitstatus_to_exitcode(status)
        if code != self.expect:
            # Run it again with its output visible, so the failure can be read.
            out = subprocess.run(self.argv, cwd=self.cwd, env=self.env, capture_output=True,
                                 text=True, stdin=subprocess.DEVNULL)
            sys.exit(f"timeit: {self.label}: exit {code}, expected {self.expect}\n"
                     f"  cmd: {' '.join(self.argv)}\n  cwd: {self.cwd}\n"
                     f"  (re-run: exit {out.returncode})\n--- stdout\n{out.stdout}--- stderr\n{out.stderr}")
        if record:
            self.times_ms.append((t1 - t0) / 1e6)

    def summary(self):
        t = sorted(self.times_ms)
        return {
            "label": self.label,
            "runs": len(t),
            "median_ms": statistics.median(t),
            "p90_ms": percentile(t, 90),
            "min_ms": t[0],
            "max_ms": t[-1],
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "30")))
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--record", help="append one JSON line per case to this file")
    ap.add_argument("spec", help="JSON file with the cases, or - for stdin")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("timeit: --runs must be at least 1")

    spec = json.load(sys.stdin if args.spec == "-" else open(args.spec))
    base_env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    cases = [Case(s, base_env) for s in spec]

    for _ in range(args.warmup):
        for c in cases:
            c.run_once(record=False)
    for _ in range(args.runs):
        for c in cases:
            c.run_once(record=True)

    width = max(len(c.label) for c in cases)
    for c in cases:
        s = c.summary()
        print(f"  {s['label']:<{width}}  median {s['median_ms']:8.2f} ms  p90 {s['p90_ms']:8.2f} ms"
              f"  min {s['min_ms']:8.2f}  max {s['max_ms']:8.2f}"
              f"  (n={s['runs']})")
        if args.record:
            with open(args.record, "a") as f:
                f.write(json.dumps(s) + "\n")


if __name__ == "__main__":
    main()

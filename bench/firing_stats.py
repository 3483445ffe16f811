#!/usr/bin/env python3
"""Figures of bench/firing.sh (issue #4), read from the databases and files the run left.

    firing_stats.py fire  --label L --db DB --instant EPOCH --expect N --jobs N --until NS [--starts FILE] >> results.jsonl
    firing_stats.py anchor-lag FILE                                              >> results.jsonl
    firing_stats.py anchor-rate FILE                                             >> results.jsonl
    firing_stats.py idle --before F --after F --secs S --status F --jobs N       >> results.jsonl
    firing_stats.py next FILE                                                    >> results.jsonl
    firing_stats.py report --cmdline C --commit C --load L results.jsonl

`fire` reads the executions of one scheduled instant. The runner is bench/stamp.c, so `output`
holds the instant (ns, CLOCK_REALTIME) at which the run's main() began, and
lag = output - scheduled_for. Two parts of it are printed too, from `started_at` (ms, written by
the daemon just before it spawns): scheduled -> started_at (the daemon's wake-up, its database
work) and started_at -> stamp (spawn, exec, the stamp's start). Only runs that began and were
recorded as completed before --until (when the daemon was sent SIGTERM) count, so a daemon that
is stopped mid-burst is measured as it ran, not as it shut down: the lag and the start rate take
the runs that began before it, "completed" the ends recorded before it.

--starts is the file every stamp also appended its instant to: the start rate and the first and
last start come from it (every start before --until, recorded by the daemon or not).

Percentiles are nearest rank, as in bench/timeit.py.
"""

import argparse
import json
import math
import re
import sqlite3
import sys
from datetime import datetime, timezone


def percentile(sorted_values, p):
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def dist(values):
    """p50 / p99 / max / min in the values' unit, or None for no values."""
    if not values:
        return None
    v = sorted(values)
    return {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": v[-1], "min": v[0]}


def sql_ns(text):
    """'YYYY-MM-DD HH:MM:SS[.fff]' UTC -> ns since the epoch."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    d = datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


def fire(a):
    # Several instants (one run due at each, to sample the lag of a lone run) or one.
    instants = sorted(a.instant)
    instant_ns = instants[0] * 1_000_000_000
    ats = [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") for t in instants]
    con = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    marks = ",".join("?" * len(ats))
    rows = con.execute(
        "SELECT status, output, started_at, completed_at, scheduled_for FROM job_executions"
        f" WHERE scheduled_for IN ({marks})",
        ats,
    ).fetchall()
    others = con.execute(
        f"SELECT count(*) FROM job_executions WHERE scheduled_for NOT IN ({marks}) AND scheduled_for < ?",
        ats + [ats[0]],
    ).fetchone()[0]
    statuses = {}
    lags, daemon_part, spawn_part, stamps, completed = [], [], [], [], []

    def count(k):
        statuses[k] = statuses.get(k, 0) + 1

    for status, output, started, done, scheduled in rows:
        instant_ns = sql_ns(scheduled)
        if status != "completed":
            count(status)
            continue
        try:
            stamp = int((output or "").strip())
        except ValueError:
            count("completed, no stamp in output")
            continue
        if stamp >= a.until:
            count("started after SIGTERM")
            continue
        # A start before SIGTERM counts for the lag and the rate even when its end was recorded
        # later; "completed" (and all_completed_s) only counts ends recorded before SIGTERM.
        stamps.append(stamp)
        lags.append((stamp - instant_ns) / 1e6)
        if started:
            s = sql_ns(started)
            daemon_part.append((s - instant_ns) / 1e6)
            spawn_part.append((stamp - s) / 1e6)
        if done and sql_ns(done) < a.until:
            count("completed")
            completed.append(sql_ns(done))
        else:
            count("started before SIGTERM, recorded after")
    instant_ns = instants[0] * 1_000_000_000
    rec = {
        "kind": "fire",
        "instants": len(instants),
        "label": a.label,
        "jobs": a.jobs,
        "expected": a.expect,
        "rows": len(rows),
        "earlier_rows": others,
        "statuses": statuses,
        "until_s": (a.until - instant_ns) / 1e9,
        "completed": statuses.get("completed", 0),
        "lag_ms": dist(lags),
        "to_started_at_ms": dist(daemon_part),
        "started_at_to_stamp_ms": dist(spawn_part),
    }
    file_starts = []
    if a.starts:
        try:
            file_starts = [int(x) for x in open(a.starts).read().split()]
        except FileNotFoundError:
            pass
        file_starts = [x for x in file_starts if instant_ns - 60_000_000_000 < x < a.until]
        rec["starts_in_file"] = len(file_starts)
        rec["start_lag_ms"] = dist([(x - instant_ns) / 1e6 for x in file_starts])
        stamps = file_starts
    if len(stamps) >= 2:
        first, last = min(stamps), max(stamps)
        rec["first_start_ms"] = (first - instant_ns) / 1e6
        rec["last_start_ms"] = (last - instant_ns) / 1e6
        rec["starts_per_s"] = (len(stamps) - 1) / ((last - first) / 1e9) if last > first else None
        rec["starts_per_s_over_n"] = len(stamps) / ((last - first) / 1e9) if last > first else None
    if completed:
        rec["all_completed_s"] = (max(completed) - instant_ns) / 1e9
    print(json.dumps(rec))
    l = rec["lag_ms"]
    print(f"  {a.label}: {len(rows)} rows (expected {a.expect}), {statuses}", file=sys.stderr)
    if l:
        print(f"    lag ms: p50 {l['p50']:.3f}  p99 {l['p99']:.3f}  max {l['max']:.3f}  min {l['min']:.3f}  (n={l['n']})",
              file=sys.stderr)
        for key, name in (("to_started_at_ms", "scheduled -> started_at"), ("started_at_to_stamp_ms", "started_at -> stamp")):
            d = rec[key]
            if d:
                print(f"    {name:<24} ms: p50 {d['p50']:.3f}  p99 {d['p99']:.3f}  max {d['max']:.3f}", file=sys.stderr)
    if "starts_in_file" in rec:
        print(f"    starts.log: {rec['starts_in_file']} starts before SIGTERM", file=sys.stderr)
    if "starts_per_s" in rec:
        print(f"    first start +{rec['first_start_ms']:.1f} ms, last start +{rec['last_start_ms']:.1f} ms,"
              f" {rec['starts_per_s_over_n'] or 0:.0f} starts/s"
              + (f"; last end recorded before SIGTERM at +{rec['all_completed_s']:.2f} s" if "all_completed_s" in rec else ""),
              file=sys.stderr)


def anchor_lag(a):
    lags = [int(x) / 1e6 for x in open(a.file).read().split()]
    rec = {"kind": "anchor_lag", "lag_ms": dist(lags)}
    print(json.dumps(rec))
    d = rec["lag_ms"]
    print(f"  timerfd + posix_spawn(stamp): p50 {d['p50']:.3f}  p99 {d['p99']:.3f}  max {d['max']:.3f} ms (n={d['n']})",
          file=sys.stderr)


def anchor_rate(a):
    n, secs = open(a.file).read().split()
    rec = {"kind": "anchor_rate", "spawns": int(n), "secs": float(secs), "per_s": int(n) / float(secs)}
    print(json.dumps(rec))
    print(f"  posix_spawn(/bin/true) + waitpid: {rec['per_s']:.0f} /s ({n} in {float(secs):.2f} s)", file=sys.stderr)


def read_tasks(path):
    """tid -> (comm, voluntary, nonvoluntary) from the snapshot firing.sh wrote."""
    tasks = {}
    for line in open(path):
        tid, comm, vol, nonvol = line.split("\t")
        tasks[tid] = (comm, int(vol), int(nonvol))
    return tasks


def idle(a):
    before, after = read_tasks(a.before), read_tasks(a.after)
    per_thread, wakeups = [], 0
    for tid in sorted(set(before) | set(after), key=int):
        b = before.get(tid, ("", 0, 0))
        f = after.get(tid)
        if f is None:
            # It exited during the window: at least the wake-up that ended it.
            per_thread.append((tid, b[0], "exited"))
            wakeups += 1
            continue
        d = (f[1] - b[1]) + (f[2] - b[2])
        wakeups += d
        if d or tid not in before:
            per_thread.append((tid, f[0], d if tid in before else f"new, {d}"))
    status = dict(l.split(":", 1) for l in open(a.status) if ":" in l)
    kb = lambda k: int(status[k].split()[0]) if k in status else None
    rec = {
        "kind": "idle",
        "jobs": a.jobs,
        "secs": a.secs,
        "wakeups": wakeups,
        "per_hour": wakeups * 3600 / a.secs,
        "threads_before": len(before),
        "threads_after": len(after),
        "busy_threads": per_thread,
        "rss_mb": kb("VmRSS") / 1024,
        "hwm_mb": kb("VmHWM") / 1024,
    }
    print(json.dumps(rec))
    print(f"  {wakeups} context switches in {a.secs:.1f} s ({rec['per_hour']:.0f}/h), threads {len(before)} -> {len(after)};"
          f" VmRSS {rec['rss_mb']:.1f} MB, VmHWM {rec['hwm_mb']:.1f} MB", file=sys.stderr)
    for t in per_thread:
        print(f"    tid {t[0]} ({t[1]}): {t[2]}", file=sys.stderr)


def next_bench(a):
    cases = []
    for line in open(a.file):
        m = re.match(r"(.{34}) (.{22}) (\S+)\s+(\d+) evaluations/s", line)
        if m:
            cases.append({"label": m.group(1).strip(), "expr": m.group(2).strip(), "zone": m.group(3),
                          "per_s": int(m.group(4))})
    if not cases:
        sys.exit("firing_stats: no evaluations/s lines in the cargo bench output")
    print(json.dumps({"kind": "next", "cases": cases}))


def report(a):
    recs = [json.loads(l) for l in open(a.results) if l.strip()]
    fires = {r["label"]: r for r in recs if r["kind"] == "fire"}
    one = lambda k: next((r for r in recs if r["kind"] == k), None)
    alag, arate, idl, nxt = one("anchor_lag"), one("anchor_rate"), one("idle"), one("next")

    def trio(d):
        return "n/a" if not d else f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f} ms"

    anchor = f"timerfd + `posix_spawn` of the stamp: {trio(alag['lag_ms'])}" if alag else ""
    out = [f"`{a.cmdline}` at {a.commit}; {a.machine}; load average before: {a.load}", ""]
    out += ["| figure | silica-cron | anchor, same run | target (DESIGN §9) | |",
            "| --- | --- | --- | --- | --- |"]
    for label, r in fires.items():
        if r["label"].startswith("burst"):
            continue
        due = r["expected"]
        minutes = r.get("instants", 1)
        fired = r["lag_ms"]["n"] if r["lag_ms"] else 0
        note = "" if fired == due else f" ({fired} of {due} completed)"
        tgt, met = "", ""
        when = f"{due:,} due that minute" if minutes == 1 else f"1 due per minute, {minutes} minutes"
        if r["jobs"] >= 10000 and due == minutes:
            # DESIGN §9: "p99 under 5 ms with 10,000 active jobs", read as one run due at an
            # instant; with many due at once, the later ones wait for the earlier ones' spawns.
            tgt = "p99 < 5 ms"
            met = "met" if r["lag_ms"] and fired == due and r["lag_ms"]["p99"] < 5 else "**missed**"
        out.append(f"| firing lag p50 / p99 / max, {r['jobs']:,} active job{'s' if r['jobs'] != 1 else ''},"
                   f" {when} | {trio(r['lag_ms'])}{note} | {anchor} | {tgt} | {met} |")
    b = next((r for r in fires.values() if r["label"].startswith("burst")), None)
    if b:
        fired = b["completed"]
        started = b["lag_ms"]["n"] if b["lag_ms"] else 0
        rate = b.get("starts_per_s_over_n")
        ar = f"`posix_spawn` + `waitpid` of `/bin/true`, one at a time: {arate['per_s']:,.0f} /s" if arate else ""
        ratio = f" ({rate / arate['per_s']:.2f}x the anchor)" if rate and arate else ""
        others = ", ".join(f"{v:,} {k}" for k, v in b["statuses"].items() if k != "completed")
        out.append(f"| start rate, {b['expected']:,} jobs due at once | "
                   f"{(f'{rate:,.0f} runs/s' if rate else 'n/a')}{ratio}; {b.get('starts_in_file', started):,} started in"
                   f" {(b.get('last_start_ms', 0) - b.get('first_start_ms', 0)) / 1000:.1f} s | {ar} | | |")
        if fired == b["expected"]:
            done = f"+{b['all_completed_s']:.2f} s"
        else:
            done = (f"not within {b['until_s']:.0f} s: {fired:,} of {b['expected']:,} completed"
                    f"{f'; the rest: {others}' if others else ''}")
        out.append(f"| {b['expected']:,} due at once: all recorded completed | {done} | | | |")
        out.append(f"| firing lag p50 / p99 / max, {b['expected']:,} due at once (runs started, from `starts.log`)"
                   f" | {trio(b.get('start_lag_ms') or b['lag_ms'])} | {anchor} | | |")
    if idl:
        met = "met" if idl["wakeups"] == 0 else "**missed**"
        out.append(f"| idle wake-ups, {idl['jobs']:,} jobs, none due | {idl['wakeups']} in {idl['secs']:.0f} s"
                   f" = {idl['per_hour']:,.0f} /h | | 0 /h | {met} |")
        met = "met" if idl["rss_mb"] < 20 else "**missed**"
        out.append(f"| resident memory (VmRSS), {idl['jobs']:,} jobs | {idl['rss_mb']:.1f} MB (peak {idl['hwm_mb']:.1f} MB) | | < 20 MB | {met} |")
    if nxt:
        c = nxt["cases"]
        lo, hi = min(c, key=lambda x: x["per_s"]), max(c, key=lambda x: x["per_s"])
        out.append(f"| `cron next` evaluations/s, {len(c)} cases | {lo['per_s'] / 1e6:.1f}M ({lo['label']})"
                   f" to {hi['per_s'] / 1e6:.1f}M ({hi['label']}) | | | |")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fire")
    p.add_argument("--label", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--instant", type=int, nargs="+", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--until", type=int, default=2**62, help="ns since the epoch: SIGTERM sent")
    p.add_argument("--starts", help="file the stamps appended their instants to")
    p.set_defaults(f=fire)
    p = sub.add_parser("anchor-lag")
    p.add_argument("file")
    p.set_defaults(f=anchor_lag)
    p = sub.add_parser("anchor-rate")
    p.add_argument("file")
    p.set_defaults(f=anchor_rate)
    p = sub.add_parser("idle")
    p.add_argument("--before", required=True)
    p.add_argument("--after", required=True)
    p.add_argument("--secs", type=float, required=True)
    p.add_argument("--status", required=True)
    p.add_argument("--jobs", type=int, required=True)
    p.set_defaults(f=idle)
    p = sub.add_parser("next")
    p.add_argument("file")
    p.set_defaults(f=next_bench)
    p = sub.add_parser("report")
    p.add_argument("--cmdline", required=True)
    p.add_argument("--commit", required=True)
    p.add_argument("--load", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("results")
    p.set_defaults(f=report)
    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The Markdown summary of bench/run.sh, from timeit.py's records and the latency bench's JSON.

    report.py --cmdline CMD [--commit C] [--load L] RESULTS.jsonl LATENCY.json
"""

import argparse
import datetime
import json
import os
import platform
import sys

STATUS_MS = 3.0  # `silica-cron status` whole process, median (DESIGN §9)
RATIO = 50.0  # alembic / silica-cron, medians (DESIGN §9)


def load_results(path):
    """Records by label; /bin/true appears once per timeit group, in order."""
    by_label, anchors = {}, []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["label"] == "/bin/true":
                anchors.append(r)
            else:
                by_label[r["label"]] = r
    return by_label, anchors


def ms(r):
    return f"{r['median_ms']:.1f} ms (p90 {r['p90_ms']:.1f})" if r["median_ms"] >= 10 \
        else f"{r['median_ms']:.2f} ms (p90 {r['p90_ms']:.2f})"


def verdict(ok):
    return "met" if ok else "**MISSED**"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cmdline", required=True)
    ap.add_argument("--commit", default="?")
    ap.add_argument("--load", default="?")
    ap.add_argument("results")
    ap.add_argument("latency")
    a = ap.parse_args()

    r, anchors = load_results(a.results)
    with open(a.latency) as f:
        lat = json.load(f)
    n = lat["clients"]
    runs = r["alembic current"]["runs"]

    rows = []
    for ours, theirs, what in [
        ("migrate status, daemon down", "alembic current", "`silica-cron migrate status`, daemon down (one-shot)"),
        ("migrate status, daemon up", "alembic current", "`silica-cron migrate status`, daemon up"),
        ("migrate upgrade, daemon down", "alembic upgrade head", "`silica-cron migrate upgrade` empty → head, daemon down"),
        ("migrate upgrade, daemon up", "alembic upgrade head", "`silica-cron migrate upgrade` empty → head, daemon up"),
    ]:
        ratio = r[theirs]["median_ms"] / r[ours]["median_ms"]
        rows.append((what, ms(r[ours]), f"`{theirs}`: {ms(r[theirs])}", f"{ratio:.0f}x",
                     f"≥ {RATIO:.0f}x", verdict(ratio >= RATIO)))
    st = r["status, daemon up"]
    rows.append(("`silica-cron status`, whole process, daemon up", ms(st), f"`/bin/true`: {ms(anchors[0])}",
                 f"{st['median_ms'] / anchors[0]['median_ms']:.1f}x /bin/true",
                 f"median < {STATUS_MS:.0f} ms", verdict(st["median_ms"] < STATUS_MS)))

    d1, a1, dn, an = lat["daemon_1"], lat["anchor_1"], lat["daemon_n"], lat["anchor_n"]
    # The same raw server in a process of its own (absent from older JSON).
    p1, pn = lat.get("anchor_process_1"), lat.get("anchor_process_n")

    def own(p, fmt):
        return f"; own process: {fmt(p)}" if p else ""

    target = lat["target_p99_us"]
    rows.append((f"request latency, {n} clients, p99", f"{dn['p99_us']:.0f} µs",
                 f"raw socket: {an['p99_us']:.0f} µs" + own(pn, lambda p: f"{p['p99_us']:.0f} µs"),
                 f"{dn['p99_us'] / an['p99_us']:.1f}x raw",
                 f"< {target:.0f} µs", verdict(dn["p99_us"] < target)))
    rows.append((f"request latency, {n} clients, p50 / max", f"{dn['p50_us']:.0f} / {dn['max_us']:.0f} µs",
                 f"raw socket: {an['p50_us']:.0f} / {an['max_us']:.0f} µs"
                 + own(pn, lambda p: f"{p['p50_us']:.0f} / {p['max_us']:.0f} µs"), "", "", ""))
    rows.append(("request latency, 1 client, p50 / p99", f"{d1['p50_us']:.0f} / {d1['p99_us']:.0f} µs",
                 f"raw socket: {a1['p50_us']:.0f} / {a1['p99_us']:.0f} µs"
                 + own(p1, lambda p: f"{p['p50_us']:.0f} / {p['p99_us']:.0f} µs"),
                 f"{d1['p50_us'] / a1['p50_us']:.1f}x raw (p50)", "", ""))
    rows.append((f"round trips/s, {n} clients", f"{dn['round_trips_per_s']:,.0f}",
                 f"raw socket: {an['round_trips_per_s']:,.0f}"
                 + own(pn, lambda p: f"{p['round_trips_per_s']:,.0f}"),
                 f"{an['round_trips_per_s'] / dn['round_trips_per_s']:.1f}x fewer", "", ""))
    c1, cn = lat.get("daemon_cpu_us_per_request_1"), lat.get("daemon_cpu_us_per_request_n")
    e1, en = lat.get("anchor_process_cpu_us_per_request_1"), lat.get("anchor_process_cpu_us_per_request_n")
    if c1 is not None and cn is not None:
        rows.append(("daemon CPU per status request (user+sys)", f"{c1:.0f} µs (1 client), {cn:.0f} µs ({n})",
                     f"raw socket, own process: {e1:.0f} µs (1 client), {en:.0f} µs ({n})"
                     if e1 is not None and en is not None else "", "", "", ""))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = sys.stdout
    out.write(f"`{a.cmdline}` at {a.commit}, {now}; {os.cpu_count()} CPUs ({cpu_model()}), "
              f"load average before {a.load}.\n")
    out.write(f"Whole-process times: median (p90) of {runs} runs, cases interleaved; "
              f"latency: {lat['iters_per_client']} round trips per client, "
              f"frames of {lat['request_bytes']} B / {lat['reply_bytes']} B.\n\n")
    header = ("figure", "silica-cron", "anchor, same run", "ratio", "target (DESIGN §9)", "")
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "|".join(" --- " for _ in header) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(row) + " |\n")
    if len(anchors) > 1:
        out.write(f"\n`/bin/true` in the upgrade group: {ms(anchors[1])}.\n")


if __name__ == "__main__":
    main()

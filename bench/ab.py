#!/usr/bin/env python3
"""bench/ab.sh's report: medians per figure of the old and the new build."""
import glob
import json
import os
import statistics
import sys

LATENCIES = ("put_lat", "get_lat", "fetch_add_lat")


def figures(path):
    """(name, value, higher_is_better) for every figure in one tool's JSON."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return []
    part = os.path.basename(path).split(".")[2]
    out = []
    for r in d.get("results", []):
        s = r["size"]
        if "test" in r:  # weft_rma_perf
            t = r["test"]
            if t in LATENCIES:
                out.append((f"{part} {t} {s}", r["lat_us"], False))
            elif t == "atomic_add":
                out.append((f"{part} {t} {s}", r["mops"], True))
            else:
                out.append((f"{part} {t} {s}", r["mbps"], True))
        else:  # weft_perf
            if "latency_us" in r:
                out.append((f"{part} lat {s}", r["latency_us"]["median"], False))
            if "bandwidth_MBps" in r:
                out.append((f"{part} bw {s}", r["bandwidth_MBps"], True))
    return out


def main():
    raw, limit, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    vals = {"old": {}, "new": {}}
    order = []
    for side in ("old", "new"):
        for p in sorted(glob.glob(os.path.join(raw, f"{side}.*.json"))):
            for name, v, hib in figures(p):
                vals[side].setdefault(name, []).append(v)
                if (name, hib) not in order:
                    order.append((name, hib))
    rows, worse = [], []
    print(f"{'figure':<28} {'old':>10} {'new':>10} {'ratio':>7}   medians; ratio > 1: new is faster")
    print("-" * 60)
    for name, hib in order:
        o, n = vals["old"].get(name), vals["new"].get(name)
        if not o or not n:
            print(f"{name:<28} {'-':>10} {'-':>10} {'-':>7}   missing on one side")
            continue
        mo, mn = statistics.median(o), statistics.median(n)
        ratio = (mn / mo if hib else mo / mn) if mo and mn else float("nan")
        note = ""
        if ratio < 1 - limit / 100:
            note = f"   worse by {100 * (1 - ratio):.1f}%"
            worse.append(name)
        print(f"{name:<28} {mo:>10.4g} {mn:>10.4g} {ratio:>6.3f}x{note}")
        rows.append({"figure": name, "old": mo, "new": mn, "ratio": ratio, "higher_is_better": hib,
                     "old_runs": o, "new_runs": n})
    tail = (": " + ", ".join(worse)) if worse else ""
    print(f"\n{len(rows)} figures; {len(worse)} worse by more than {limit:g}%{tail}")
    if out:
        with open(out, "w") as f:
            json.dump({"limit_pct": limit, "figures": rows}, f, indent=1)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Parse the raw outputs of bench/shm.sh or bench/tcp.sh and compare weft with its peers.

Usage: bench/compare.py RUN_DIR [--stat best|median] [--no-plot]

RUN_DIR is what shm.sh or tcp.sh wrote: RUN_DIR/raw/status.tsv lists every run
(peer, test, size, repeat, exit code, output files), RUN_DIR/raw/meta.tsv
holds key/value facts about the run (tools, versions, settings; the key
"benchmark" says tcp for tcp.sh, shm when absent) and RUN_DIR/raw/problems.txt
what went wrong, one line each.
Writes RUN_DIR/results.json, RUN_DIR/table.txt and, when matplotlib can be
imported, RUN_DIR/shm.png (or tcp.png); prints the table on stdout.

Units: latency is one-way (round trip / 2) in microseconds; bandwidth is in
MB/s with MB = 10^6 bytes for every tool (ucx_perftest prints MiB/s, which is
converted here).

The parsers and helpers shared by both comparisons live in benchlib.py; the
tcp comparison in compare_tcp.py; the shm comparison here.
Python 3 standard library only; matplotlib is optional.
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
from benchlib import (agg, fmt, fnum, fratio, human, load_meta, load_runs,  # noqa: F401
                      parse_fi_pingpong, parse_ucx, parse_weft, ratio, read_text, tail,
                      write_outputs)

# The targets of the shm comparison (from the issue).
LAT_SIZE = 64
BW_SIZE = 1048576
UCX_LAT_FACTOR = 1.2


def build(run_dir, stat):
    raw_dir = os.path.join(run_dir, "raw")
    meta = load_meta(raw_dir)
    sizes = [int(s) for s in meta.get("sizes", "").split(",") if s]
    problems = [l.strip() for l in read_text(os.path.join(raw_dir, "problems.txt")).splitlines()
                if l.strip()]
    samples = {}  # (peer, metric, size) -> [values]
    raw = []

    def add(peer, metric, size, value):
        if value is not None:
            samples.setdefault((peer, metric, size), []).append(value)

    for rec in load_runs(raw_dir):
        peer, test, rep, rc = rec["peer"], rec["test"], int(rec["rep"]), int(rec["rc"])
        text = read_text(os.path.join(raw_dir, rec["client"]))
        entry = {"peer": peer, "test": test, "size": rec["size"], "rep": rep,
                 "rc": rc, "file": rec["client"]}
        parsed = None
        if peer == "weft":
            parsed = parse_weft(text)
            if parsed:
                for size, r in parsed.items():
                    add("weft", "lat", size, r["lat_us"])
                    add("weft", "bw", size, r["bw_MBps"])
                    if r["lat_us"]:
                        add("weft", "pp_bw", size, size / r["lat_us"])
                entry["results"] = {str(k): v for k, v in parsed.items()}
        elif peer == "libfabric":
            parsed = parse_fi_pingpong(text)
            if parsed:
                size = int(rec["size"])
                add("libfabric", "lat", size, parsed["lat_us"])
                add("libfabric", "pp_bw", size, parsed["pp_bw_MBps"])
                entry.update(parsed)
        elif peer == "ucx":
            parsed = parse_ucx(text)
            if parsed:
                size = int(rec["size"])
                if test == "tag_lat":
                    add("ucx", "lat", size, parsed["p50_us"])
                    add("ucx", "pp_bw", size, size / parsed["p50_us"] if parsed["p50_us"] else None)
                else:
                    add("ucx", "bw", size, parsed["bw_MBps"])
                entry.update(parsed)
        if parsed is None:
            why = f"exit code {rc}" + (" (timed out)" if rc == 124 else "")
            msg = f"{peer} {test} size {rec['size']} rep {rep}: no result, {why}"
            detail = tail(text) or tail(read_text(os.path.join(raw_dir, rec.get("server", ""))))
            if detail:
                msg += f": {detail}"
            problems.append(msg)
            entry["error"] = msg
        raw.append(entry)

    def best(peer, metric, size):
        hib = metric != "lat"
        return agg(samples.get((peer, metric, size), []), stat, hib)

    summary = []
    for size in sizes:
        w = {m: best("weft", m, size) for m in ("lat", "bw", "pp_bw")}
        fi = {m: best("libfabric", m, size) for m in ("lat", "pp_bw")}
        ux = {m: best("ucx", m, size) for m in ("lat", "bw", "pp_bw")}
        summary.append({
            "size": size,
            "weft": {"lat_us": w["lat"], "bw_MBps": w["bw"], "pingpong_bw_MBps": w["pp_bw"]},
            "libfabric": {"lat_us": fi["lat"], "pingpong_bw_MBps": fi["pp_bw"],
                          "lat_ratio": ratio(fi["lat"], w["lat"]),
                          "pingpong_bw_ratio": ratio(w["pp_bw"], fi["pp_bw"]),
                          "stream_vs_pingpong_bw_ratio": ratio(w["bw"], fi["pp_bw"])},
            "ucx": {"lat_us": ux["lat"], "bw_MBps": ux["bw"], "pingpong_bw_MBps": ux["pp_bw"],
                    "lat_ratio": ratio(ux["lat"], w["lat"]),
                    "bw_ratio": ratio(w["bw"], ux["bw"])},
        })

    targets = make_targets(summary)
    return {
        "benchmark": "shm",
        "units": {"latency": "us, one-way (round trip / 2)",
                  "bandwidth": "MB/s, MB = 1e6 bytes",
                  "lat_ratio": "peer / weft: > 1 means weft is faster",
                  "bw_ratio": "weft / peer: > 1 means weft is faster"},
        "method": {
            "stat": stat,
            "weft": "weft_perf --spawn: latency = median of per-iteration RTT/2; "
                    "bandwidth = streaming, window of 64 messages; "
                    "pingpong_bw = size / latency",
            "libfabric": "fi_pingpong -p shm -e rdm: latency = usec/xfer, a MEAN one-way time "
                         "(weft and UCX give medians; on a loaded machine the mean "
                         "suffers most from preemption); "
                         "bandwidth = its MB/sec, a ping-pong (one message in flight) "
                         "= size / usec/xfer; libfabric-bin has no streaming test",
            "ucx": "ucx_perftest UCX_TLS=sm,self: latency = tag_lat 50th percentile "
                   "(one-way); bandwidth = tag_bw overall (MiB/s converted to MB/s); "
                   "pingpong_bw = size / that latency",
        },
        "meta": meta,
        "summary": summary,
        "targets": targets,
        "problems": problems,
        "raw": raw,
    }


def make_targets(summary):
    by = {r["size"]: r for r in summary}
    out = []

    def verdict(name, ok, detail):
        out.append({"target": name, "met": ok, "detail": detail})

    r = by.get(LAT_SIZE)
    w = r["weft"]["lat_us"] if r else None
    fi = r["libfabric"]["lat_us"] if r else None
    ux = r["ucx"]["lat_us"] if r else None
    name = f"{LAT_SIZE} B one-way latency below libfabric shm's"
    if w is None or fi is None:
        verdict(name, None, "not measured" + ("" if r else f" ({LAT_SIZE} B not in sizes)"))
    else:
        verdict(name, w < fi, f"weft {w:.3f} us vs libfabric {fi:.3f} us (x{fi / w:.2f})")
    name = f"{LAT_SIZE} B one-way latency within {UCX_LAT_FACTOR}x of UCX's"
    if w is None or ux is None:
        verdict(name, None, "not measured" + ("" if r else f" ({LAT_SIZE} B not in sizes)"))
    else:
        verdict(name, w <= UCX_LAT_FACTOR * ux,
                f"weft {w:.3f} us vs UCX {ux:.3f} us: weft/UCX = {w / ux:.2f} (limit {UCX_LAT_FACTOR})")

    r = by.get(BW_SIZE)
    name = "1 MiB bandwidth at least libfabric shm's"
    wpp = r["weft"]["pingpong_bw_MBps"] if r else None
    wbw = r["weft"]["bw_MBps"] if r else None
    fpp = r["libfabric"]["pingpong_bw_MBps"] if r else None
    if wpp is None or fpp is None:
        verdict(name, None, "not measured" + ("" if r else " (1048576 B not in sizes)"))
    else:
        d = (f"like for like (ping-pong, fi_pingpong has no streaming test): "
             f"weft {wpp:.0f} vs libfabric {fpp:.0f} MB/s (x{wpp / fpp:.2f})")
        if wbw is not None:
            d += f"; weft streaming {wbw:.0f} MB/s is x{wbw / fpp:.2f} of libfabric ping-pong"
        verdict(name, wpp >= fpp, d)
    return out


# ---- output

def table(doc):
    s = doc["summary"]
    m = doc["meta"]
    have = {p: m.get(f"tool.{p}.available", "yes") == "yes" for p in ("weft", "libfabric", "ucx")}
    lines = []
    lines.append(f"weft shm comparison  ({m.get('date', '')}, {m.get('host', '')}, "
                 f"{m.get('nproc', '?')} CPUs, load {m.get('loadavg', '?')} before, "
                 f"{m.get('loadavg_end', '?')} after; {doc['method']['stat']} of "
                 f"{m.get('repeats', '?')} runs)")
    lines.append("peers: libfabric = fi_pingpong -p shm -e rdm (libfabric "
                 f"{m.get('tool.libfabric.version') or '-'}); ucx = ucx_perftest UCX_TLS=sm,self "
                 f"(UCX {m.get('tool.ucx.version') or '-'})")
    load = fnum(m.get("loadavg", "").split(" ")[0]) if m.get("loadavg") else None
    ncpu = fnum(m.get("nproc")) or 1
    sliced = sorted({f"{p} {human(r['size'])}" for r in s for p in ("weft", "libfabric", "ucx")
                     if r["size"] <= 65536 and (r[p].get("lat_us") or 0) >= 1000})
    if (load is not None and load >= ncpu / 2) or sliced:
        why = []
        if load is not None and load >= ncpu / 2:
            why.append(f"1-minute load {load:.2f} on {ncpu:.0f} CPUs before the run")
        if sliced:
            why.append("latency >= 1 ms at small sizes: " + ", ".join(sliced))
        lines.append("WARNING: CPU contention (" + "; ".join(why) + "). Every tool here "
                     "busy-polls with two processes; sharing CPUs, a round trip can take a "
                     "scheduler time slice (~4 ms). Rerun on an idle machine before trusting "
                     "the ratios.")
    for p in ("libfabric", "ucx"):
        if not have[p]:
            lines.append(f"NOTE: {p} not measured: {m.get(f'tool.{p}.note', 'tool missing')}")
    lines.append("")
    lines.append("One-way latency, us (ratio = peer / weft; > 1 means weft is faster)")
    lines.append("  weft, ucx: median; libfabric: mean (fi_pingpong prints no median)")
    hdr = f"{'size':>6} {'weft':>9} {'libfabric':>10} {'ratio':>7} {'ucx':>9} {'ratio':>7}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in s:
        lines.append(f"{human(r['size']):>6} {fmt(r['weft']['lat_us']):>9} "
                     f"{fmt(r['libfabric']['lat_us']):>10} {fratio(r['libfabric']['lat_ratio']):>7} "
                     f"{fmt(r['ucx']['lat_us']):>9} {fratio(r['ucx']['lat_ratio']):>7}")
    lines.append("")
    lines.append("Bandwidth, MB/s = 1e6 B/s (ratio = weft / peer; > 1 means weft is faster)")
    lines.append("  stream: weft_perf window 64 vs ucx tag_bw;  ping-pong: one message in flight,")
    lines.append("  size / one-way latency, weft vs fi_pingpong (its only mode)")
    hdr = (f"{'size':>6} {'weft':>9} {'ucx':>9} {'ratio':>7}   "
           f"{'weft pp':>9} {'libfab pp':>10} {'ratio':>7}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in s:
        lines.append(f"{human(r['size']):>6} {fmt(r['weft']['bw_MBps'], 0):>9} "
                     f"{fmt(r['ucx']['bw_MBps'], 0):>9} {fratio(r['ucx']['bw_ratio']):>7}   "
                     f"{fmt(r['weft']['pingpong_bw_MBps'], 0):>9} "
                     f"{fmt(r['libfabric']['pingpong_bw_MBps'], 0):>10} "
                     f"{fratio(r['libfabric']['pingpong_bw_ratio']):>7}")
    lines.append("")
    lines.append("Targets")
    for t in doc["targets"]:
        mark = {True: "MET    ", False: "NOT MET", None: "UNKNOWN"}[t["met"]]
        lines.append(f"  [{mark}] {t['target']}: {t['detail']}")
    if doc["problems"]:
        lines.append("")
        lines.append("Problems")
        for p in doc["problems"]:
            lines.append(f"  - {p}")
    return "\n".join(lines) + "\n"


def plot(doc, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not available (Debian: python3-matplotlib): no plot"
    s = doc["summary"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"weft": ("C0", "o"), "libfabric": ("C1", "s"), "ucx": ("C2", "^")}

    def series(ax, peer, key, label, dashed=False):
        pts = [(r["size"], r[peer][key]) for r in s if r[peer].get(key)]
        if pts:
            c, mk = styles[peer]
            ax.plot(*zip(*pts), color=c, marker=mk, linestyle="--" if dashed else "-", label=label)

    series(a1, "weft", "lat_us", "weft shm")
    series(a1, "libfabric", "lat_us", "libfabric shm (fi_pingpong)")
    series(a1, "ucx", "lat_us", "UCX sm (tag_lat)")
    a1.set_title("One-way latency (lower is better)")
    a1.set_ylabel("us")
    series(a2, "weft", "bw_MBps", "weft shm, stream (window 64)")
    series(a2, "ucx", "bw_MBps", "UCX sm, stream (tag_bw)")
    series(a2, "weft", "pingpong_bw_MBps", "weft shm, ping-pong", dashed=True)
    series(a2, "libfabric", "pingpong_bw_MBps", "libfabric shm, ping-pong (fi_pingpong)", dashed=True)
    series(a2, "ucx", "pingpong_bw_MBps", "UCX sm, ping-pong (tag_lat)", dashed=True)
    a2.set_title("Bandwidth (higher is better)")
    a2.set_ylabel("MB/s (1e6 B/s)")
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = doc["meta"]
    fig.suptitle(f"weft shm vs peers - {m.get('date', '')} {m.get('host', '')}, "
                 f"{doc['method']['stat']} of {m.get('repeats', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--stat", choices=("best", "median"), default="best",
                    help="how repeats are combined (best: min latency / max bandwidth)")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args()
    bench = load_meta(os.path.join(a.run_dir, "raw")).get("benchmark", "shm")
    if bench == "tcp":
        import compare_tcp
        doc = compare_tcp.build(a.run_dir, a.stat)
        return write_outputs(doc, a.run_dir, "tcp.png", compare_tcp.table, compare_tcp.plot, a.no_plot)
    if bench != "shm":
        print(f"compare.py: unknown benchmark '{bench}' in {a.run_dir}/raw/meta.tsv", file=sys.stderr)
        return 2
    doc = build(a.run_dir, a.stat)
    return write_outputs(doc, a.run_dir, "shm.png", table, plot, a.no_plot)


if __name__ == "__main__":
    sys.exit(main())

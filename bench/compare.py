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

The parsers and helpers shared by the comparisons (these two and
compare_rma.py's) live in benchlib.py; the tcp comparison in compare_tcp.py;
the shm comparison here.
Python 3 standard library only; matplotlib is optional.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
from benchlib import (NO_MATPLOTLIB, collect, comparison, contention, fmt, fratio, human,  # noqa: E402
                      judge, load_meta, load_run, log_axes, parse_args, picker, pyplot, ratio,
                      save_plot, series, targets_and_problems, title, write_outputs)

# The targets of the shm comparison (from the issue).
LAT_SIZE = 64
BW_SIZE = 1048576
UCX_LAT_FACTOR = 1.2


def build(run_dir, stat):
    raw_dir, meta, sizes, _, problems = load_run(run_dir)
    samples, raw = collect(raw_dir, problems)
    best = picker(samples, stat)

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

    method = {
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
    }
    return comparison("shm", method, meta, summary, judge(summary, check_targets), problems, raw)


def check_targets(by, verdict):
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


# ---- output

def table(doc):
    s = doc["summary"]
    m = doc["meta"]
    have = {p: m.get(f"tool.{p}.available", "yes") == "yes" for p in ("weft", "libfabric", "ucx")}
    lines = []
    lines.append(title(doc, "weft shm comparison"))
    lines.append("peers: libfabric = fi_pingpong -p shm -e rdm (libfabric "
                 f"{m.get('tool.libfabric.version') or '-'}); ucx = ucx_perftest UCX_TLS=sm,self "
                 f"(UCX {m.get('tool.ucx.version') or '-'})")
    warning = contention(doc, ("weft", "libfabric", "ucx"), str, "Every tool here busy-polls")
    if warning:
        lines.append(warning)
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
    lines.extend(targets_and_problems(doc))
    return "\n".join(lines) + "\n"


def plot(doc, path):
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    s = doc["summary"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"weft": ("C0", "o"), "libfabric": ("C1", "s"), "ucx": ("C2", "^")}
    for p, label in (("weft", "weft shm"), ("libfabric", "libfabric shm (fi_pingpong)"),
                     ("ucx", "UCX sm (tag_lat)")):
        series(a1, s, styles, p, "lat_us", label)
    a1.set_title("One-way latency (lower is better)")
    a1.set_ylabel("us")
    for p, key, label in (("weft", "bw_MBps", "weft shm, stream (window 64)"),
                          ("ucx", "bw_MBps", "UCX sm, stream (tag_bw)"),
                          ("weft", "pingpong_bw_MBps", "weft shm, ping-pong"),
                          ("libfabric", "pingpong_bw_MBps", "libfabric shm, ping-pong (fi_pingpong)"),
                          ("ucx", "pingpong_bw_MBps", "UCX sm, ping-pong (tag_lat)")):
        series(a2, s, styles, p, key, label, dashed=key == "pingpong_bw_MBps")
    a2.set_title("Bandwidth (higher is better)")
    a2.set_ylabel("MB/s (1e6 B/s)")
    log_axes((a1, a2), "message size (bytes)", 8)
    save_plot(plt, fig, doc, "weft shm vs peers", path, 110)
    return None


def main():
    a = parse_args(__doc__, "min latency / max bandwidth")
    bench = load_meta(os.path.join(a.run_dir, "raw")).get("benchmark", "shm")
    if bench == "tcp":
        import compare_tcp
        return write_outputs(a, compare_tcp.build, compare_tcp.table, compare_tcp.plot, "tcp.png")
    if bench != "shm":
        print(f"compare.py: unknown benchmark '{bench}' in {a.run_dir}/raw/meta.tsv", file=sys.stderr)
        return 2
    return write_outputs(a, build, table, plot, "shm.png")


if __name__ == "__main__":
    sys.exit(main())

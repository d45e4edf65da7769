"""The tcp comparison of bench/compare.py: weft's tcp provider against
libfabric tcp (fi_pingpong, msg and rdm endpoints), UCX over TCP
(ucx_perftest), kernel TCP ping-pong (sockperf, blocking and busy-polling)
and kernel TCP streaming (iperf3). Run through compare.py, which picks this
module when RUN_DIR/raw/meta.tsv says "benchmark tcp" (bench/tcp.sh).

Units: latency is one-way (round trip / 2) in microseconds; bandwidth is in
MB/s with MB = 10^6 bytes.
"""
from benchlib import (NO_MATPLOTLIB, SOCK_PEERS, collect, comparison, contention, fmt, fratio,
                      human, judge, load_run, log_axes, picker, pyplot, ratio, save_plot, series,
                      targets_and_problems, title)

# The targets of the tcp comparison (from the issue): "latency within 1.1x of
# sockperf's busy-polling figure and below libfabric tcp's; bandwidth at least
# libfabric tcp's".
LAT_SIZE = 64
BW_SIZES = (65536, 1048576)
SOCKPERF_LAT_FACTOR = 1.1

# peer key in status.tsv -> (label in tables, label in the plot)
PEERS = {
    "weft": ("weft", "weft tcp"),
    "libfabric-msg": ("fi-msg", "libfabric tcp, msg ep (fi_pingpong)"),
    "libfabric-rdm": ("fi-rdm", "libfabric tcp;ofi_rxm, rdm ep (fi_pingpong)"),
    "ucx": ("ucx", "UCX tcp"),
    "sockperf": ("sock-blk", "kernel TCP, blocking (sockperf)"),
    "sockperf-busy": ("sock-busy", "kernel TCP, busy-polling (sockperf --nonblocked)"),
    "iperf3": ("iperf3", "kernel TCP stream (iperf3 -N)"),
}
FI_PEERS = ("libfabric-msg", "libfabric-rdm")
PP_PEERS = FI_PEERS + ("ucx",) + SOCK_PEERS  # the ping-pong peers


def build(run_dir, stat):
    raw_dir, meta, sizes, _, problems = load_run(run_dir)
    samples, raw = collect(raw_dir, problems)
    best = picker(samples, stat)

    summary = []
    for size in sizes:
        w = {m: best("weft", m, size) for m in ("lat", "lat_p99", "bw", "pp_bw")}
        row = {"size": size,
               "weft": {"lat_us": w["lat"], "lat_p99_us": w["lat_p99"], "bw_MBps": w["bw"],
                        "pingpong_bw_MBps": w["pp_bw"]}}
        for p in FI_PEERS:
            lat, pp = best(p, "lat", size), best(p, "pp_bw", size)
            row[p] = {"lat_us": lat, "pingpong_bw_MBps": pp,
                      "lat_ratio": ratio(lat, w["lat"]),
                      "pingpong_bw_ratio": ratio(w["pp_bw"], pp),
                      "stream_vs_pingpong_bw_ratio": ratio(w["bw"], pp)}
        lat, bw, pp = best("ucx", "lat", size), best("ucx", "bw", size), best("ucx", "pp_bw", size)
        row["ucx"] = {"lat_us": lat, "bw_MBps": bw, "pingpong_bw_MBps": pp,
                      "lat_ratio": ratio(lat, w["lat"]), "bw_ratio": ratio(w["bw"], bw),
                      "pingpong_bw_ratio": ratio(w["pp_bw"], pp)}
        for p in SOCK_PEERS:
            lat, pp = best(p, "lat", size), best(p, "pp_bw", size)
            row[p] = {"lat_us": lat, "lat_avg_us": best(p, "lat_avg", size),
                      "lat_p99_us": best(p, "lat_p99", size), "pingpong_bw_MBps": pp,
                      "lat_ratio": ratio(lat, w["lat"]),
                      "pingpong_bw_ratio": ratio(w["pp_bw"], pp)}
        bw = best("iperf3", "bw", size)
        row["iperf3"] = {"bw_MBps": bw, "bw_ratio": ratio(w["bw"], bw)}
        summary.append(row)

    ucx_dev = meta.get("ucx_net_devices") or "all"
    method = {
        "stat": stat,
        "weft": "weft_perf --spawn -p tcp (loopback): latency = median of per-iteration "
                "RTT/2; bandwidth = streaming, window of 64 messages; "
                "pingpong_bw = size / latency",
        "libfabric-msg": "fi_pingpong -p tcp -e msg: latency = usec/xfer, a MEAN one-way time "
                         "(the others give medians; on a loaded machine the mean suffers "
                         "most from preemption); bandwidth = its MB/sec, a ping-pong "
                         "(one message in flight) = size / usec/xfer; libfabric-bin has no "
                         "streaming test",
        "libfabric-rdm": "fi_pingpong -p tcp -e rdm (provider tcp;ofi_rxm): as libfabric-msg",
        "ucx": f"ucx_perftest UCX_TLS=tcp UCX_NET_DEVICES={ucx_dev}: latency = tag_lat 50th "
               "percentile (one-way); bandwidth = tag_bw overall (MiB/s converted to MB/s); "
               "pingpong_bw = size / that latency",
        "sockperf": "sockperf ping-pong --tcp 127.0.0.1, blocking sockets (server: epoll): "
                    "latency = 50th percentile of its one-way latency (sockperf reports "
                    "RTT/2 unless --full-rtt); lat_avg_us = its avg-latency; "
                    "pingpong_bw = size / latency",
        "sockperf-busy": "as sockperf, with --nonblocked on the client and "
                         "--nonblocked --timeout 0 on the server: both sides busy-poll "
                         "non-blocking sockets, the floor of kernel TCP ping-pong here",
        "iperf3": "iperf3 -c 127.0.0.1 -N -l SIZE -J: receiver-side throughput of a kernel "
                  "TCP byte stream written SIZE bytes per write(), TCP_NODELAY; no message "
                  "framing, completions or receive matching: a ceiling, not a peer",
    }
    return comparison("tcp", method, meta, summary, judge(summary, check_targets), problems, raw)


def check_targets(by, verdict):
    r = by.get(LAT_SIZE)
    missing = "" if r else f" ({LAT_SIZE} B not in sizes)"
    w = r["weft"]["lat_us"] if r else None

    sb = r["sockperf-busy"]["lat_us"] if r else None
    name = f"{LAT_SIZE} B one-way latency within {SOCKPERF_LAT_FACTOR}x of sockperf's busy-polling figure"
    if w is None or sb is None:
        verdict(name, None, "not measured" + missing)
    else:
        d = (f"weft {w:.3f} us vs sockperf --nonblocked {sb:.3f} us (medians): "
             f"weft/sockperf = {w / sb:.2f} (limit {SOCKPERF_LAT_FACTOR})")
        blk = r["sockperf"]["lat_us"]
        if blk is not None:
            d += f"; sockperf blocking {blk:.3f} us"
        verdict(name, w <= SOCKPERF_LAT_FACTOR * sb, d)

    name = f"{LAT_SIZE} B one-way latency below libfabric tcp's"
    fis = {p: r[p]["lat_us"] for p in FI_PEERS if r and r[p]["lat_us"] is not None}
    if w is None or not fis:
        verdict(name, None, "not measured" + missing)
    else:
        parts = [f"{PEERS[p][0]} {v:.3f} us (x{v / w:.2f})" for p, v in fis.items()]
        verdict(name, all(w < v for v in fis.values()),
                f"weft {w:.3f} us (median) vs " + ", ".join(parts) + " (fi_pingpong: means)")

    for size in BW_SIZES:
        r = by.get(size)
        name = f"{human(size)} bandwidth at least libfabric tcp's"
        wpp = r["weft"]["pingpong_bw_MBps"] if r else None
        wbw = r["weft"]["bw_MBps"] if r else None
        fis = {p: r[p]["pingpong_bw_MBps"] for p in FI_PEERS
               if r and r[p]["pingpong_bw_MBps"] is not None}
        if wpp is None or not fis:
            verdict(name, None, "not measured" + ("" if r else f" ({size} B not in sizes)"))
            continue
        parts = [f"{PEERS[p][0]} {v:.0f} MB/s (x{wpp / v:.2f})" for p, v in fis.items()]
        d = ("like for like (ping-pong; fi_pingpong has no streaming test): "
             f"weft {wpp:.0f} vs " + ", ".join(parts))
        if wbw is not None:
            top = max(fis.values())
            d += f"; weft streaming {wbw:.0f} MB/s is x{wbw / top:.2f} of the best libfabric ping-pong"
        verdict(name, all(wpp >= v for v in fis.values()), d)


# ---- output

def table(doc):
    s = doc["summary"]
    m = doc["meta"]
    have = {p: m.get(f"tool.{p}.available", "yes") == "yes" for p in PEERS}
    lines = []
    lines.append(title(doc, "weft tcp comparison (loopback)"))
    lines.append(f"peers: fi-msg / fi-rdm = fi_pingpong -p tcp -e msg / -e rdm (tcp;ofi_rxm) "
                 f"(libfabric {m.get('tool.libfabric-msg.version') or m.get('tool.libfabric-rdm.version') or '-'});")
    lines.append(f"  ucx = ucx_perftest UCX_TLS=tcp UCX_NET_DEVICES={m.get('ucx_net_devices') or 'all'} "
                 f"(UCX {m.get('tool.ucx.version') or '-'});")
    lines.append(f"  sock-blk / sock-busy = sockperf {m.get('tool.sockperf.version') or '-'} ping-pong --tcp, "
                 "blocking / --nonblocked busy-polling (kernel TCP);")
    lines.append(f"  iperf3 = iperf3 {m.get('tool.iperf3.version') or '-'} -N -l SIZE "
                 "(kernel TCP byte stream, receiver side)")
    warning = contention(doc, ("weft",) + PP_PEERS, lambda p: PEERS[p][0], "Most tools here busy-poll")
    if warning:
        lines.append(warning)
    for p in PEERS:
        if p != "weft" and not have[p]:
            lines.append(f"NOTE: {p} not measured: {m.get(f'tool.{p}.note', 'tool missing')}")
        elif p != "weft" and m.get(f"tool.{p}.note"):
            lines.append(f"NOTE: {p}: {m.get(f'tool.{p}.note')}")

    def section(heading, note, peers, first, key, rkey, nd):
        """a table of weft's r["weft"][key] and each peer's with its ratio rkey"""
        lines.extend(["", heading, note])
        hdr = f"{'size':>6} {first:>9} " + " ".join(f"{PEERS[p][0]:>9} {'ratio':>6}" for p in peers)
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for r in s:
            lines.append(f"{human(r['size']):>6} {fmt(r['weft'][key], nd):>9} "
                         + " ".join(f"{fmt(r[p].get(key), nd):>9} {fratio(r[p].get(rkey)):>6}"
                                    for p in peers))

    section("One-way latency, us (ratio = peer / weft; > 1 means weft is faster)",
            "  weft, ucx, sockperf: median; fi-msg, fi-rdm: mean (fi_pingpong prints no median)",
            PP_PEERS, "weft", "lat_us", "lat_ratio", 3)
    section("Streaming bandwidth, MB/s = 1e6 B/s (ratio = weft / peer; > 1 means weft is faster)",
            "  weft_perf window 64 vs ucx tag_bw and iperf3 (a byte stream: no messages, a ceiling)",
            ("ucx", "iperf3"), "weft", "bw_MBps", "bw_ratio", 0)
    section("Ping-pong bandwidth, MB/s: one message in flight, size / one-way latency",
            "  (ratio = weft / peer; fi_pingpong's only mode, so the like-for-like libfabric figure)",
            PP_PEERS, "weft pp", "pingpong_bw_MBps", "pingpong_bw_ratio", 0)
    lines.extend(targets_and_problems(doc))
    return "\n".join(lines) + "\n"


def plot(doc, path):
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    s = doc["summary"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {"weft": ("C0", "o"), "libfabric-msg": ("C1", "s"), "libfabric-rdm": ("C5", "D"),
              "ucx": ("C2", "^"), "sockperf": ("C7", "v"), "sockperf-busy": ("C3", "x"),
              "iperf3": ("C4", "P")}
    for p in ("weft",) + PP_PEERS:
        series(a1, s, styles, p, "lat_us", PEERS[p][1])
    a1.set_title("One-way latency (lower is better)")
    a1.set_ylabel("us")
    series(a2, s, styles, "weft", "bw_MBps", "weft tcp, stream (window 64)")
    series(a2, s, styles, "ucx", "bw_MBps", "UCX tcp, stream (tag_bw)")
    series(a2, s, styles, "iperf3", "bw_MBps", "kernel TCP byte stream (iperf3 -N)")
    series(a2, s, styles, "weft", "pingpong_bw_MBps", "weft tcp, ping-pong", dashed=True)
    for p in FI_PEERS:
        series(a2, s, styles, p, "pingpong_bw_MBps", PEERS[p][1].replace(" (fi_pingpong)", ", ping-pong"),
               dashed=True)
    series(a2, s, styles, "sockperf-busy", "pingpong_bw_MBps",
           "kernel TCP busy-polling, ping-pong (sockperf)", dashed=True)
    a2.set_title("Bandwidth (higher is better)")
    a2.set_ylabel("MB/s (1e6 B/s)")
    log_axes((a1, a2), "message size (bytes)", 7)
    save_plot(plt, fig, doc, "weft tcp vs peers (loopback)", path, 110)
    return None

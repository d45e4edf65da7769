"""Shared pieces of bench/compare.py (shm), bench/compare_tcp.py (tcp) and
bench/compare_rma.py (RMA and atomics).

The raw outputs of the benchmark scripts (bench/shm.sh, bench/tcp.sh,
bench/rma.sh) are parsed here: one parser per tool, each returning a dict of
numbers or None when nothing parsed. Also: loading RUN_DIR/raw/{meta,status}.tsv
and collecting the runs of shm.sh and tcp.sh, combining repeats, the common
parts of the tables and plots, number formatting, the command line and
writing the results.

Python 3 standard library only; matplotlib is optional.
"""
import argparse
import csv
import json
import os
import re
import statistics
import sys

MIB = 1024 * 1024 / 1e6  # ucx_perftest "MB/s" is MiB/s


def fnum(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def tail(text, n=3):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:])


# ---- parsers: each returns a dict of numbers, or None when nothing parsed

def load_json(text):
    """the JSON document that starts at the first '{' of text, or None"""
    start = text.find("{")
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except ValueError:
        return None


def parse_weft(text):
    """weft_perf --json: {"provider":..,"results":[{size,latency_us{median,p99},bandwidth_MBps,msg_rate}]}"""
    doc = load_json(text)
    if doc is None:
        return None
    out = {}
    for r in doc.get("results", []):
        lat = r.get("latency_us") or {}
        out[int(r["size"])] = {
            "lat_us": lat.get("median"),
            "lat_p99_us": lat.get("p99"),
            "bw_MBps": r.get("bandwidth_MBps"),
            "msg_rate": r.get("msg_rate"),
        }
    return out


def parse_fi_pingpong(text):
    """fi_pingpong: 'bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec' then one row.

    MB/sec is 10^6 bytes/s counted over both directions of the ping-pong, i.e.
    size / (usec/xfer): one message in flight, not a streaming bandwidth.
    usec/xfer is the mean one-way time (total time / (2 * iterations)).
    """
    row = None
    for line in text.splitlines():
        f = line.split()
        if len(f) == 8 and all(fnum(x) is not None for x in f[5:8]):
            row = f
    if row is None:
        return None
    return {"lat_us": float(row[6]), "pp_bw_MBps": float(row[5]),
            "msg_rate": float(row[7]) * 1e6}


def parse_ucx(text, overall_lat=False):
    """ucx_perftest -f -v: its final CSV row 'iterations,50.0_percentile_lat,avg_lat,
    overall_lat,avg_bw,overall_bw,avg_mr,overall_mr'. 'avg' is over the last
    report interval, 'overall' over the whole run. Latency in us: in tag_lat
    and the RMA ping-pong (ucp_put_lat) one-way (round trip / 2), in tag_bw the
    per-message send overhead, in the other RMA tests the time per operation;
    bandwidth in MiB/s, converted to MB/s (bw_MBps, from overall_bw); rate in
    msg/s (msg_rate, from overall_mr). With overall_lat, also overall_us."""
    row = None
    for line in text.splitlines():
        f = line.strip().split(",")
        if len(f) == 8 and all(fnum(x) is not None for x in f):
            row = [float(x) for x in f]
    if row is None:
        return None
    out = {"iters": int(row[0]), "p50_us": row[1], "avg_us": row[2],
           "bw_MBps": row[5] * MIB, "msg_rate": row[7]}
    if overall_lat:
        out["overall_us"] = row[3]
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_sockperf(text):
    """sockperf ping-pong: 'avg-latency=X (std-dev=Y)', 'percentile 50.000 = X', ...

    Without --full-rtt sockperf reports latency as round trip / 2 (its man page:
    "the average latency for a given one-way path ... is the average RTT
    divided by two"; --full-rtt "show results in round-trip-time instead of
    latency"), in usec. Should a run have used --full-rtt ("Round trip is"),
    the figures are halved here so that they stay one-way."""
    text = _ANSI.sub("", text)
    if "Summary:" not in text:
        return None

    def grab(pattern):
        m = re.findall(pattern, text)
        return float(m[-1]) if m else None

    avg = grab(r"avg-lat(?:ency)?=\s*([0-9.]+)")
    p50 = grab(r"percentile 50\.000 =\s*([0-9.]+)")
    p99 = grab(r"percentile 99\.000 =\s*([0-9.]+)")
    summ = grab(r"Summary: (?:Latency|Round trip) is\s*([0-9.]+)")
    obs = grab(r"Total ([0-9]+) observations")
    if p50 is None and summ is None:
        return None
    half = 0.5 if "Summary: Round trip is" in text else 1.0
    sc = lambda v: None if v is None else v * half  # noqa: E731
    return {"lat_us": sc(p50 if p50 is not None else summ), "avg_us": sc(avg if avg is not None else summ),
            "p99_us": sc(p99), "observations": int(obs) if obs is not None else None}


def parse_iperf3(text):
    """iperf3 -J: end.sum_received.bits_per_second (receiver side, 10^6 bit = 1 Mbit)
    converted to MB/s (10^6 bytes/s); end.sum_sent for the sender's view."""
    doc = load_json(text)
    if doc is None:
        return None
    end = doc.get("end") or {}
    rcv = (end.get("sum_received") or {}).get("bits_per_second")
    snd = (end.get("sum_sent") or {}).get("bits_per_second")
    if not rcv:
        return None
    cpu = end.get("cpu_utilization_percent") or {}
    return {"bw_MBps": rcv / 8e6, "sent_MBps": snd / 8e6 if snd else None,
            "seconds": (end.get("sum_received") or {}).get("seconds"),
            "retransmits": (end.get("sum_sent") or {}).get("retransmits"),
            "cpu_sender_pct": cpu.get("host_total"), "cpu_receiver_pct": cpu.get("remote_total")}


# ---- loading

def load_meta(raw):
    meta = {}
    path = os.path.join(raw, "meta.tsv")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("\t")
                if k:
                    meta[k] = v
    return meta


def load_runs(raw):
    runs = []
    path = os.path.join(raw, "status.tsv")
    if not os.path.exists(path):
        return runs
    with open(path, encoding="utf-8") as f:
        for rec in csv.DictReader(f, delimiter="\t"):
            runs.append(rec)
    return runs


def load_run(run_dir):
    """RUN_DIR/raw: (raw_dir, meta, sizes, problems.txt as text, its lines)"""
    raw_dir = os.path.join(run_dir, "raw")
    meta = load_meta(raw_dir)
    sizes = [int(s) for s in meta.get("sizes", "").split(",") if s]
    problems_txt = read_text(os.path.join(raw_dir, "problems.txt"))
    problems = [l.strip() for l in problems_txt.splitlines() if l.strip()]
    return raw_dir, meta, sizes, problems_txt, problems


def no_result(raw_dir, rec, text, what, timed_out=(124,)):
    """the message for a run (a status.tsv record) that gave no result: WHAT,
    size, repeat, exit code and the last lines of its output"""
    rc = int(rec["rc"])
    why = f"exit code {rc}" + (" (timed out)" if rc in timed_out else "")
    msg = f"{what} size {rec['size']} rep {int(rec['rep'])}: no result, {why}"
    detail = tail(text) or tail(read_text(os.path.join(raw_dir, rec.get("server", ""))))
    if detail:
        msg += f": {detail}"
    return msg


def pp_bw(size, lat_us):
    """ping-pong bandwidth, MB/s: size / one-way latency"""
    return size / lat_us if lat_us else None


# the samples of one parsed run of each peer tool: [(metric, value)]
def fi_samples(p, test, size):
    return [("lat", p["lat_us"]), ("pp_bw", p["pp_bw_MBps"])]


def ucx_samples(p, test, size):
    if test == "tag_lat":
        return [("lat", p["p50_us"]), ("pp_bw", pp_bw(size, p["p50_us"]))]
    return [("bw", p["bw_MBps"])]


def sockperf_samples(p, test, size):
    return [("lat", p["lat_us"]), ("lat_avg", p["avg_us"]), ("lat_p99", p["p99_us"]),
            ("pp_bw", pp_bw(size, p["lat_us"]))]


SOCK_PEERS = ("sockperf", "sockperf-busy")
# peer in status.tsv (shm.sh: libfabric; tcp.sh: one per fi_pingpong endpoint
# type and sockperf mode) -> (parser, samples)
PEER_PARSERS = {
    "libfabric": (parse_fi_pingpong, fi_samples),
    "libfabric-msg": (parse_fi_pingpong, fi_samples),
    "libfabric-rdm": (parse_fi_pingpong, fi_samples),
    "ucx": (parse_ucx, ucx_samples),
    "sockperf": (parse_sockperf, sockperf_samples),
    "sockperf-busy": (parse_sockperf, sockperf_samples),
    "iperf3": (parse_iperf3, lambda p, test, size: [("bw", p["bw_MBps"])]),
}


def collect(raw_dir, problems):
    """the runs of shm.sh or tcp.sh: (samples {(peer, metric, size): [values]},
    the raw entries); a run that gave no result adds a line to problems"""
    samples = {}
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
                    add("weft", "lat_p99", size, r["lat_p99_us"])
                    add("weft", "bw", size, r["bw_MBps"])
                    add("weft", "pp_bw", size, pp_bw(size, r["lat_us"]))
                entry["results"] = {str(k): v for k, v in parsed.items()}
        elif peer in PEER_PARSERS:
            parse, metrics = PEER_PARSERS[peer]
            parsed = parse(text)
            if parsed:
                size = int(rec["size"])
                for metric, value in metrics(parsed, test, size):
                    add(peer, metric, size, value)
                entry.update(parsed)
        if parsed is None:
            msg = no_result(raw_dir, rec, text, f"{peer} {test}")
            problems.append(msg)
            entry["error"] = msg
        raw.append(entry)
    return samples, raw


def picker(samples, stat):
    """best(peer, metric, size): the repeats of collect()'s samples combined
    by stat; lower is better for the latencies (metrics lat*)"""
    def best(peer, metric, size):
        return agg(samples.get((peer, metric, size), []), stat, not metric.startswith("lat"))
    return best


def judge(summary, checks):
    """the targets: checks(by, verdict), by: size -> summary row, calls
    verdict(name, met (True, False or None: not measured), detail) for each"""
    by = {r["size"]: r for r in summary}
    out = []

    def verdict(name, ok, detail):
        out.append({"target": name, "met": ok, "detail": detail})

    checks(by, verdict)
    return out


def comparison(benchmark, method, meta, summary, targets, problems, raw):
    """the results of the shm or tcp comparison (results.json)"""
    return {
        "benchmark": benchmark,
        "units": {"latency": "us, one-way (round trip / 2)",
                  "bandwidth": "MB/s, MB = 1e6 bytes",
                  "lat_ratio": "peer / weft: > 1 means weft is faster",
                  "bw_ratio": "weft / peer: > 1 means weft is faster"},
        "method": method,
        "meta": meta,
        "summary": summary,
        "targets": targets,
        "problems": problems,
        "raw": raw,
    }


def agg(values, stat, higher_is_better):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if stat == "median":
        return statistics.median(vals)
    return max(vals) if higher_is_better else min(vals)


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


# ---- output

def fmt(v, nd=3):
    if v is None:
        return "-"
    if nd == 0 or abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.{nd}f}"


def fratio(v):
    return "-" if v is None else f"{v:.2f}x"


def human(size):
    for unit, n in (("M", 1 << 20), ("K", 1 << 10)):
        if size >= n and size % n == 0:
            return f"{size // n}{unit}"
    return str(size)


def title(doc, what, extra=""):
    """the first line of a table: WHAT (date, host, CPUs, load, how repeats were combined EXTRA)"""
    m = doc["meta"]
    return (f"{what}  ({m.get('date', '')}, {m.get('host', '')}, "
            f"{m.get('nproc', '?')} CPUs, load {m.get('loadavg', '?')} before, "
            f"{m.get('loadavg_end', '?')} after; {doc['method']['stat']} of "
            f"{m.get('repeats', '?')} runs{extra})")


def load_of(meta):
    """(the 1-minute load before the run or None, the number of CPUs)"""
    load = fnum(meta.get("loadavg", "").split(" ")[0]) if meta.get("loadavg") else None
    return load, fnum(meta.get("nproc")) or 1


def contention(doc, peers, label, who):
    """the WARNING line of the shm and tcp tables (None when the machine looked
    idle): a load of half the CPUs before the run, or latencies of 1 ms at
    sizes up to 64K (PEERS, named by label(peer)); WHO: which tools busy-poll
    ("Every tool here busy-polls")"""
    load, ncpu = load_of(doc["meta"])
    sliced = sorted({f"{label(p)} {human(r['size'])}" for r in doc["summary"] for p in peers
                     if r["size"] <= 65536 and (r[p].get("lat_us") or 0) >= 1000})
    if not ((load is not None and load >= ncpu / 2) or sliced):
        return None
    why = []
    if load is not None and load >= ncpu / 2:
        why.append(f"1-minute load {load:.2f} on {ncpu:.0f} CPUs before the run")
    if sliced:
        why.append("latency >= 1 ms at small sizes: " + ", ".join(sliced))
    return ("WARNING: CPU contention (" + "; ".join(why) + f"). {who} "
            "with two processes; sharing CPUs, a round trip can take a "
            "scheduler time slice (~4 ms). Rerun on an idle machine before trusting "
            "the ratios.")


def targets_and_problems(doc):
    """the last lines of the shm and tcp tables: the targets, then the problems"""
    lines = ["", "Targets"]
    for t in doc["targets"]:
        mark = {True: "MET    ", False: "NOT MET", None: "UNKNOWN"}[t["met"]]
        lines.append(f"  [{mark}] {t['target']}: {t['detail']}")
    return lines + problem_lines(doc, "Problems")


def problem_lines(doc, heading):
    if not doc["problems"]:
        return []
    return ["", heading] + [f"  - {p}" for p in doc["problems"]]


# ---- plots (matplotlib)

NO_MATPLOTLIB = "matplotlib not available (Debian: python3-matplotlib): no plot"


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None without matplotlib"""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def series(ax, summary, styles, peer, key, label, dashed=False):
    """one peer's line: summary rows' r[peer][key] against their size"""
    pts = [(r["size"], r[peer][key]) for r in summary if r[peer].get(key)]
    if pts:
        c, mk = styles[peer]
        ax.plot(*zip(*pts), color=c, marker=mk, linestyle="--" if dashed else "-", label=label)


def log_axes(axes, xlabel, legend_size):
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=legend_size)


def save_plot(plt, fig, doc, what, path, dpi):
    """titles the figure WHAT - date host, stat of repeats, and writes it to path"""
    m = doc["meta"]
    fig.suptitle(f"{what} - {m.get('date', '')} {m.get('host', '')}, "
                 f"{doc['method']['stat']} of {m.get('repeats', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# ---- the command line and the results

def parse_args(doc, stat_help):
    """RUN_DIR [--stat best|median] [--no-plot]; doc: the script's docstring"""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--stat", choices=("best", "median"), default="best",
                    help=f"how repeats are combined (best: {stat_help})")
    ap.add_argument("--no-plot", action="store_true")
    return ap.parse_args()


def write_outputs(args, build, table_fn, plot_fn, png_name):
    """Builds the comparison of args.run_dir (build(run_dir, stat) -> doc),
    plots it (unless args.no_plot), writes RUN_DIR/{results.json,table.txt,PNG_NAME},
    prints the table on stdout."""
    run_dir, no_plot = args.run_dir, args.no_plot
    doc = build(run_dir, args.stat)
    png = os.path.join(run_dir, png_name)
    note = None
    if not no_plot:
        note = plot_fn(doc, png)
        if note:
            doc["problems"].append(note)
            print(f"{os.path.basename(sys.argv[0])}: {note}", file=sys.stderr)
    doc["files"] = {"json": os.path.join(run_dir, "results.json"),
                    "table": os.path.join(run_dir, "table.txt"),
                    "png": png if not no_plot and note is None else None}
    text = table_fn(doc)
    with open(doc["files"]["table"], "w", encoding="utf-8") as f:
        f.write(text)
    with open(doc["files"]["json"], "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    sys.stdout.write(text)
    return 0

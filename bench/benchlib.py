"""Shared pieces of bench/compare.py (shm) and bench/compare_tcp.py (tcp).

The raw outputs of the benchmark scripts (bench/shm.sh, bench/tcp.sh) are
parsed here: one parser per tool, each returning a dict of numbers or None
when nothing parsed. Also: loading RUN_DIR/raw/{meta,status}.tsv, combining
repeats, number formatting and writing the results.

Python 3 standard library only.
"""
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

def parse_weft(text):
    """weft_perf --json: {"provider":..,"results":[{size,latency_us{median,p99},bandwidth_MBps,msg_rate}]}"""
    start = text.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(text[start:])
    except ValueError:
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


def parse_ucx(text):
    """ucx_perftest -f -v: CSV 'iterations,50.0_percentile_lat,avg_lat,overall_lat,
    avg_bw,overall_bw,avg_mr,overall_mr'. In tag_lat the latencies are one-way
    (round trip / 2); in tag_bw they are the per-message send overhead."""
    row = None
    for line in text.splitlines():
        f = line.strip().split(",")
        if len(f) == 8 and all(fnum(x) is not None for x in f):
            row = [float(x) for x in f]
    if row is None:
        return None
    return {"iters": int(row[0]), "p50_us": row[1], "avg_us": row[2],
            "bw_MBps": row[5] * MIB, "msg_rate": row[7]}


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
    start = text.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(text[start:])
    except ValueError:
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


def write_outputs(doc, run_dir, png_name, table_fn, plot_fn, no_plot):
    """Plots (unless no_plot), writes RUN_DIR/{results.json,table.txt,PNG_NAME},
    prints the table on stdout."""
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

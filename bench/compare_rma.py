#!/usr/bin/env python3
"""Parse the raw outputs of bench/rma.sh and compare weft's RMA and atomics with UCX's.

Usage: bench/compare_rma.py RUN_DIR [--stat best|median] [--no-plot]

RUN_DIR is what rma.sh wrote: RUN_DIR/raw/status.tsv lists every run (peer
= weft-TRANSPORT or ucx-TRANSPORT, test, size, repeat, exit code, output
files), RUN_DIR/raw/meta.tsv key/value facts about the run and
RUN_DIR/raw/problems.txt what went wrong, one line each.
Writes RUN_DIR/results.json, RUN_DIR/table.txt and, when matplotlib can be
imported, RUN_DIR/rma.png; prints the tables on stdout.

The tests (weft_rma_perf = ucx_perftest):
  put_lat        one-way latency of a put ping-pong   = ucp_put_lat (overall = mean)
  put_bw         put bandwidth, window W              = ucp_put_bw -O W
  get_lat        time to complete one get             = ucp_get -O 1 (latency column)
  get_bw         get bandwidth, window W              = ucp_get -O W (bandwidth column)
  atomic_add     non-fetching 64-bit add rate, Mops   = ucp_add -O W (message rate)
  fetch_add_lat  time to complete one fetch-and-add   = ucp_fadd -O 1 (latency column)

Units: latency in microseconds, bandwidth in MB/s with MB = 10^6 bytes
(ucx_perftest prints MiB/s, 2^20 bytes, converted here), rate in Mops
(10^6 operations/s). Ratios: latency ucx/weft, bandwidth and rate weft/ucx;
> 1 means weft is faster.
Python 3 standard library only; matplotlib is optional.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
from benchlib import (NO_MATPLOTLIB, agg, fmt, fnum, fratio, human, load_json, load_of,  # noqa: E402
                      load_run, load_runs, log_axes, no_result, parse_args, parse_ucx,
                      problem_lines, pyplot, ratio, read_text, save_plot, title, write_outputs)

# test -> (kind, label, unit, ucx_perftest command)
TESTS = {
    "put_lat": ("lat", "put latency (one-way)", "us", "ucp_put_lat"),
    "put_bw": ("bw", "put bandwidth", "MB/s", "ucp_put_bw -O W"),
    "get_lat": ("lat", "get latency (completion)", "us", "ucp_get -O 1"),
    "get_bw": ("bw", "get bandwidth", "MB/s", "ucp_get -O W"),
    "atomic_add": ("rate", "atomic add rate (u64)", "Mops", "ucp_add -O W"),
    "fetch_add_lat": ("lat", "fetch-add latency (u64)", "us", "ucp_fadd -O 1"),
}
SIZED = ("put_lat", "put_bw", "get_lat", "get_bw")
ATOMIC = ("atomic_add", "fetch_add_lat")
ATOMIC_SIZE = 8
TRANSPORTS = ("shm", "tcp")


def parse_weft_rma(text):
    """weft_rma_perf --json: {"provider", "window", "results": [{test, size, lat_us, mbps, mops}]}
    -> {(test, size): {"lat_us", "mbps", "mops"}}"""
    doc = load_json(text)
    if doc is None:
        return None
    out = {}
    for r in doc.get("results", []):
        try:
            out[(r["test"], int(r["size"]))] = {"lat_us": fnum(r.get("lat_us")),
                                                "mbps": fnum(r.get("mbps")),
                                                "mops": fnum(r.get("mops"))}
        except (KeyError, TypeError, ValueError):
            continue
    return out or None


def value_of(kind, weft=None, ucx=None):
    """the figure compared for a test kind, from a weft row or a parse_ucx(overall_lat=True)
    dict: its 'overall' columns (means over the whole run)"""
    if weft is not None:
        return {"lat": weft["lat_us"], "bw": weft["mbps"], "rate": weft["mops"]}[kind]
    if kind == "lat":
        return ucx["overall_us"] or None
    if kind == "bw":
        return ucx["bw_MBps"]
    return ucx["msg_rate"] / 1e6 if ucx["msg_rate"] else None


def build(run_dir, stat):
    raw_dir, meta, sizes, problems_txt, problems = load_run(run_dir)
    transports = [t for t in meta.get("transports", "shm,tcp").split(",") if t]
    samples = {}  # (peer, transport, test, size) -> [values]
    extra = {}    # (transport, test, size) -> ucx p50 samples etc.
    raw = []

    def add(key, value):
        if value is not None:
            samples.setdefault(key, []).append(value)

    for rec in load_runs(raw_dir):
        peer_tr, test, rep, rc = rec["peer"], rec["test"], int(rec["rep"]), int(rec["rc"])
        peer, _, tr = peer_tr.partition("-")
        text = read_text(os.path.join(raw_dir, rec["client"]))
        entry = {"peer": peer, "transport": tr, "test": test, "size": rec["size"], "rep": rep,
                 "rc": rc, "file": rec["client"]}
        parsed = None
        if peer == "weft":
            parsed = parse_weft_rma(text) if rc == 0 else None
            if parsed:
                for (t, size), r in parsed.items():
                    if t in TESTS:
                        add(("weft", tr, t, size), value_of(TESTS[t][0], weft=r))
                entry["results"] = [{"test": t, "size": s, **r} for (t, s), r in parsed.items()]
        elif peer == "ucx" and test in TESTS:
            parsed = parse_ucx(text, overall_lat=True)
            if parsed:
                size = int(rec["size"])
                add(("ucx", tr, test, size), value_of(TESTS[test][0], ucx=parsed))
                if TESTS[test][0] == "lat":
                    extra.setdefault((tr, test, size), []).append(parsed["p50_us"])
                entry.update(parsed)
        if parsed is None:
            msg = no_result(raw_dir, rec, text, f"{peer} {tr} {test}", timed_out=(124, 137))
            entry["error"] = msg
            # rma.sh has already said so in problems.txt (naming the file)
            if rec["client"] not in problems_txt and rec.get("server", "") not in problems_txt:
                problems.append(msg)
        raw.append(entry)

    def best(peer, tr, test, size):
        return agg(samples.get((peer, tr, test, size), []), stat, TESTS[test][0] != "lat")

    summary = {}
    for tr in transports:
        rows = []
        for test in SIZED + ATOMIC:
            kind, label, unit, ucmd = TESTS[test]
            for size in (sizes if test in SIZED else [ATOMIC_SIZE]):
                w, u = best("weft", tr, test, size), best("ucx", tr, test, size)
                r = ratio(u, w) if kind == "lat" else ratio(w, u)
                row = {"test": test, "size": size, "kind": kind, "unit": unit,
                       "weft": w, "ucx": u, "ratio": r, "ucx_test": ucmd,
                       "weft_samples": samples.get(("weft", tr, test, size), []),
                       "ucx_samples": samples.get(("ucx", tr, test, size), [])}
                if kind == "lat":
                    row["ucx_p50_us"] = agg(extra.get((tr, test, size), []), stat, False)
                rows.append(row)
        summary[tr] = rows

    window = meta.get("window", "64")
    return {
        "benchmark": "rma",
        "units": {"latency": "us", "bandwidth": "MB/s, MB = 1e6 bytes", "rate": "Mops = 1e6 ops/s",
                  "ratio": "latency: ucx / weft; bandwidth and rate: weft / ucx; > 1 means weft is faster"},
        "method": {
            "stat": stat,
            "window": window,
            "weft": f"weft_rma_perf -p TRANSPORT -w {window} (forks its target): put_lat = mean of a put "
                    "ping-pong (each side polls its memory for the last byte), round trip / 2; "
                    "get_lat, fetch_add_lat = mean time to complete one operation at a time; "
                    f"put_bw, get_bw, atomic_add = {window} operations in flight",
            "ucx": f"ucx_perftest server + client, UCX_TLS={meta.get('ucx_shm_tls', 'sm')} (shm) or "
                   f"UCX_TLS=tcp UCX_NET_DEVICES={meta.get('ucx_net_devices', 'lo')} (tcp), host memory: "
                   "figures are the 'overall' columns of its final row (means over the whole run); "
                   "ucp_put_lat latency is round trip / 2; ucp_get and ucp_fadd with -O 1 (one "
                   "operation at a time) give the latency, ucp_put_bw, ucp_get and ucp_add with "
                   f"-O {window} the bandwidth and rate; MiB/s converted to MB/s (x 1.048576)",
            "iterations": "both tools: latency min(iters, max(50, 2^27/size)), fetch-add iters; "
                          "bandwidth and rate clamp(2^30/max(size, 64), 2000, 200000) operations",
        },
        "meta": meta,
        "summary": summary,
        "problems": problems,
        "raw": raw,
    }


# ---- output

UNSTEADY = 2.0   # repeats whose best and worst differ by more than this are flagged
STALL_US = 500.0  # a UCX latency this high at <= 64 KiB is a stall, not a transfer


def spread(vals):
    vals = [v for v in vals if v]
    return max(vals) / min(vals) if len(vals) > 1 else None


def fval(v, kind):
    if v is None:
        return "n/a"
    if kind == "lat":
        return fmt(v, 3)
    if kind == "rate":
        return fmt(v, 2)
    return fmt(v, 2 if v < 100 else 0)


def table(doc):
    m = doc["meta"]
    lines = []
    lines.append(title(doc, "weft RMA and atomics vs UCX", f"; window {doc['method']['window']}"))
    lines.append(f"weft_rma_perf {m.get('weft_git', '')} vs ucx_perftest (UCX {m.get('tool.ucx.version') or '-'})")
    load, ncpu = load_of(m)
    if load is not None and load >= ncpu / 2:
        lines.append(f"WARNING: CPU contention (1-minute load {load:.2f} on {ncpu:.0f} CPUs before the "
                     "run). Both tools busy-poll with two processes; sharing CPUs, a round trip can "
                     "take a scheduler time slice. Rerun on an idle machine before trusting the ratios.")
    if m.get("tool.ucx.available", "yes") != "yes":
        lines.append(f"NOTE: UCX not measured: {m.get('tool.ucx.note', 'ucx_perftest missing')}")
    desc = {"shm": f"weft shm vs UCX UCX_TLS={m.get('ucx_shm_tls', 'sm')}",
            "tcp": f"weft tcp vs UCX UCX_TLS=tcp UCX_NET_DEVICES={m.get('ucx_net_devices', 'lo')} (loopback)"}
    for tr, rows in doc["summary"].items():
        lines.append("")
        lines.append(f"{tr}: {desc.get(tr, tr)}")
        lines.append("  ratio: latency ucx/weft, bandwidth and rate weft/ucx; > 1 means weft is faster")
        hdr = f"  {'test':<14} {'size':>6} {'weft':>10} {'ucx':>10} {'ratio':>8}  {'unit':<5} ucx test"
        lines.append(hdr)
        lines.append("  " + "-" * (len(hdr) - 2))
        notes = []
        for r in rows:
            rt = "n/a" if r["ratio"] is None else fratio(r["ratio"])
            flag = ""
            for who in ("weft", "ucx"):
                sp = spread(r[f"{who}_samples"])
                if sp is not None and sp > UNSTEADY:
                    flag += f"  [{who} repeats differ {sp:.1f}x]"
            lines.append(f"  {r['test']:<14} {human(r['size']):>6} {fval(r['weft'], r['kind']):>10} "
                         f"{fval(r['ucx'], r['kind']):>10} {rt:>8}  {r['unit']:<5} {r['ucx_test']}{flag}")
            if (r["kind"] == "lat" and r["ucx"] is not None and r["size"] <= 65536
                    and r["ucx"] >= STALL_US):
                notes.append(f"{r['test']} {human(r['size'])}")
        if notes:
            notes = [f"  NOTE: ucx latency >= {STALL_US:.0f} us at <= 64K ({', '.join(notes)}) is a stall, "
                     "not a transfer time. On tcp, UCX's transport has no get or atomics and UCP "
                     "emulates them with active messages; with one ucp_get in flight each one waited "
                     "~1 ms on this machine, with the window a few us (get_bw). Such ratios say more "
                     "about UCX than about weft."]
        lines.extend(notes)
    lines.append("")
    lines.append("Units: latency us (put_lat one-way = round trip / 2; get_lat and fetch_add_lat: one "
                 "operation at a time, mean time to completion); bandwidth MB/s = 1e6 B/s "
                 "(ucx_perftest's MiB/s x 1.048576); rate Mops. UCX: 'overall' columns (means).")
    lines.extend(problem_lines(doc, "Problems (n/a above; details in raw/problems.txt and raw/)"))
    return "\n".join(lines) + "\n"


def plot(doc, path):
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    trs = list(doc["summary"].keys())
    if not trs:
        return "nothing to plot"
    fig, axes = plt.subplots(len(trs), 3, figsize=(16, 4.8 * len(trs)), squeeze=False)
    colors = {"put": "C0", "get": "C1"}
    for i, tr in enumerate(trs):
        rows = doc["summary"][tr]
        by = {(r["test"], r["size"]): r for r in rows}
        a_lat, a_bw, a_rat = axes[i]
        for test, ax in (("put_lat", a_lat), ("get_lat", a_lat), ("put_bw", a_bw), ("get_bw", a_bw)):
            c = colors[test[:3]]
            for who, ls, mk in (("weft", "-", "o"), ("ucx", "--", "^")):
                pts = [(r["size"], r[who]) for r in rows if r["test"] == test and r[who]]
                if pts:
                    ax.plot(*zip(*pts), color=c, linestyle=ls, marker=mk, label=f"{who} {test}")
        fa = by.get(("fetch_add_lat", ATOMIC_SIZE))
        if fa:
            for who, mk in (("weft", "s"), ("ucx", "D")):
                if fa[who]:
                    a_lat.plot([ATOMIC_SIZE], [fa[who]], color="C3", marker=mk, linestyle="none",
                               label=f"{who} fetch_add_lat")
        a_lat.set_title(f"{tr}: latency (lower is better)")
        a_lat.set_ylabel("us")
        a_bw.set_title(f"{tr}: bandwidth, window {doc['method']['window']} (higher is better)")
        a_bw.set_ylabel("MB/s (1e6 B/s)")
        log_axes((a_lat, a_bw), "size (bytes)", 7)
        labels, vals, cols = [], [], []
        for r in rows:
            labels.append(f"{r['test']} {human(r['size'])}")
            vals.append(r["ratio"] if r["ratio"] else 0)
            cols.append("C2" if (r["ratio"] or 0) >= 1 else "C3")
        ypos = range(len(labels))
        a_rat.barh(list(ypos), [v if v > 0 else float("nan") for v in vals], color=cols)
        a_rat.set_yticks(list(ypos))
        a_rat.set_yticklabels(labels, fontsize=7)
        a_rat.invert_yaxis()
        a_rat.axvline(1.0, color="k", linewidth=0.8)
        a_rat.set_xscale("log")
        a_rat.set_title(f"{tr}: weft vs UCX (> 1: weft faster; n/a: no bar)")
        a_rat.grid(True, axis="x", which="both", alpha=0.3)
        for y, r in zip(ypos, rows):
            if r["ratio"]:
                a_rat.text(r["ratio"], y, f" {r['ratio']:.2f}x", va="center", fontsize=7)
            else:
                a_rat.text(1.0, y, " n/a", va="center", fontsize=7)
        if r := by.get(("atomic_add", ATOMIC_SIZE)):
            a_rat.text(0.99, 0.02, f"atomic add: weft {fval(r['weft'], 'rate')} vs ucx "
                       f"{fval(r['ucx'], 'rate')} Mops", transform=a_rat.transAxes, ha="right",
                       fontsize=7)
    save_plot(plt, fig, doc, "weft RMA/atomics vs UCX", path, 100)
    return None


def main():
    a = parse_args(__doc__, "min latency / max bandwidth and rate")
    if not os.path.isdir(os.path.join(a.run_dir, "raw")):
        print(f"compare_rma.py: {a.run_dir}/raw not found", file=sys.stderr)
        return 2
    return write_outputs(a, build, table, plot, "rma.png")


if __name__ == "__main__":
    sys.exit(main())

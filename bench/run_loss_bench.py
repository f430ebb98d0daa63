#!/usr/bin/env python3
r"""Capture-loss benchmark: what c2scribe recovers from a lossy capture, next to tshark.

    python bench/run_loss_bench.py                                   # large + small, 200 MB, 0.1 % drops
    python bench/run_loss_bench.py --size 1G --repeat 3 --json loss.json --check-targets
    python bench/run_loss_bench.py --profiles small --size 50M --details 10 --no-throughput

For each profile it generates (or reuses, from --cache-dir) two captures with
bench/gen_captures.py: the clean one (the same file bench/run_bench.py caches) and the lossy
variant, the same traffic with exactly --drop-data of the data-carrying packets left out
(`gen_captures.py --drop-data P --drop-seed N`; the manifest lists every dropped packet and
the transactions it touches).  Then:

1. Recovery, on the lossy capture.  tshark
   (`-o tcp.check_checksum:FALSE -o tcp.reassemble_out_of_order:TRUE -Y "http.request ||
   http.response"`) gives the reference requests (method, URI) and responses (status) per
   connection; c2scribe `transcript --format jsonl --engine E` gives its transactions, a
   request when http.request.method is not null and a response when
   http.response.status_code is not null.  "Recovered" = tshark's requests (responses) that
   c2scribe also reports on the same connection (direction-free 4-tuple), matched as
   multisets of (method, URI) (of status codes).  The generator's manifest gives the truth as
   well, so each row also says how many of the transactions really in the capture it found.
   Gap-flagged counts c2scribe transactions with a flag that names a gap (request_gap,
   response_gap, request_lost_in_gap, response_lost_in_gap).  Mispaired counts c2scribe
   transactions whose response is not their request's (see mispaired()): the recovery ratios
   match requests and responses separately and cannot see a response paired with the wrong
   request.
2. Throughput, on the clean capture: c2scribe `transcript --format jsonl --engine E FILE >
   /dev/null` pinned to one core (--cpu), the runner on the other cores, warm page cache, best
   of --repeat (bench/run_bench.py's measure()): wall MB/s and MB per CPU-second.

Targets (the issue): native recovers >= 99.5 % of tshark's requests on each profile, and its
throughput on the clean captures is at least the nids engine's.  --check-targets exits 1 when
native recovers less than 99.5 % of tshark's requests on any profile (the throughput verdict is
printed; add --check-throughput to make it count too).  --details N prints, for up to N
connections where tshark has a request that native does not, what was dropped there and what
native reported: the starting point for finding out why.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen_captures  # noqa: E402
import run_bench  # noqa: E402

TARGET_RECOVERY = 0.995
GAP_FLAGS = ("request_gap", "response_gap", "request_lost_in_gap", "response_lost_in_gap")
AGG = "\x1f"         # tshark's aggregator between several values of a field in one frame


# --------------------------------------------------------------------------- captures

def capture_paths(cache_dir, profile, size, seed, drop, drop_seed):
    clean = os.path.join(cache_dir, f"{profile}-{size}-seed{seed}.pcap")      # = run_bench.py's name
    lossy = os.path.join(cache_dir, f"{profile}-{size}-seed{seed}-drop{drop:g}-ds{drop_seed}.pcap")
    return clean, lossy


def _cached(path, want_args):
    mpath = gen_captures.manifest_path(path)
    if not (os.path.exists(path) and os.path.exists(mpath)):
        return None
    with open(mpath) as f:
        man = json.load(f)
    if man.get("generator_version") != gen_captures.GENERATOR_VERSION or os.path.getsize(path) != man.get("bytes"):
        return None
    if any(man.get("arguments", {}).get(k) != v for k, v in want_args.items()):
        return None
    return man


def ensure_capture(path, profile, size, seed, regenerate, **kw):
    """The capture's full manifest (read back from disk), generating the capture when needed."""
    want = dict(profile=profile, size=size, seed=seed, **{k: v for k, v in kw.items() if k != "manifest_full"})
    man = None if regenerate else _cached(path, want)
    if man is not None and (not kw.get("manifest_full") or "transaction_list" in man):
        print(f"using cached {path}")
        return man
    print(f"generating {path} ...", flush=True)
    gen_captures.generate(profile, size, path, seed=seed, quiet=False, **kw)
    with open(gen_captures.manifest_path(path)) as f:
        return json.load(f)


# --------------------------------------------------------------------------- what each tool finds

def key4(ip1, port1, ip2, port2):
    """A direction-free 4-tuple: the two (address, port) endpoints, sorted."""
    return tuple(sorted(((ip1, int(port1)), (ip2, int(port2)))))


class Found:
    """Per connection: Counter of (method, uri) requests and Counter of response statuses."""

    def __init__(self):
        self.req = collections.defaultdict(collections.Counter)
        self.resp = collections.defaultdict(collections.Counter)

    def n_req(self):
        return sum(sum(c.values()) for c in self.req.values())

    def n_resp(self):
        return sum(sum(c.values()) for c in self.resp.values())


def recovered(ref: dict, got: dict) -> int:
    """How many of ref's items got also has on the same connection (multiset intersection)."""
    n = 0
    for k, c in ref.items():
        g = got.get(k)
        if g:
            n += sum((c & g).values())
    return n


def mispaired(manifest, txs) -> tuple:
    """(mispaired, paired right) c2scribe transactions that have both a request and a response.

    Each such transaction is matched to the capture's true transaction by its request: the
    j-th (method, URI) c2scribe reports on a connection is the j-th true one with that
    (method, URI).  It is mispaired when its status is not that transaction's, when that
    transaction's status line was among the dropped bytes (so the response c2scribe shows is
    another's), or when no true request matches.
    """
    by_conn = collections.defaultdict(lambda: collections.defaultdict(collections.deque))
    for tx in manifest["transaction_list"]:
        k = key4(tx["client"][0], tx["client"][1], tx["server"][0], tx["server"][1])
        by_conn[k][(tx["method"], tx["uri"])].append(tx)
    bad = good = 0
    for k, lst in txs.items():
        pool = by_conn.get(k, {})
        for t in sorted(lst, key=lambda t: t["index"] or 0):
            if t["method"] is None or t["status"] is None:
                continue
            q = pool.get((t["method"], t["uri"]))
            if not q:
                bad += 1
                continue
            tx = q.popleft()
            lost = any(d["message"] == "response" and d["offset"] == 0 for d in tx.get("dropped", ()))
            if lost or t["status"] != tx["status"]:
                bad += 1
            else:
                good += 1
    return bad, good


def truth_of(manifest) -> Found:
    t = Found()
    for tx in manifest["transaction_list"]:
        k = key4(tx["client"][0], tx["client"][1], tx["server"][0], tx["server"][1])
        t.req[k][(tx["method"], tx["uri"])] += 1
        t.resp[k][tx["status"]] += 1
    return t


def tshark_found(path, timeout) -> tuple:
    """(Found, seconds) of tshark's HTTP requests and responses on the capture."""
    cmd = ["tshark", "-n", "-r", path, "-o", "tcp.check_checksum:FALSE",
           "-o", "tcp.reassemble_out_of_order:TRUE", "-Y", "http.request || http.response",
           "-T", "fields", "-E", "separator=/t", "-E", f"aggregator={AGG}",
           "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport",
           "-e", "http.request.method", "-e", "http.request.uri", "-e", "http.response.code"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"tshark failed: {p.stderr.decode(errors='replace')[-2000:]}")
    f = Found()
    for line in p.stdout.decode("utf-8", "surrogateescape").splitlines():
        col = line.split("\t")
        if len(col) < 7 or not col[1] or not col[3]:
            continue
        # With tunnels there may be several IP layers: the innermost (last) one carries the TCP.
        k = key4(col[0].split(AGG)[-1], col[1].split(AGG)[-1], col[2].split(AGG)[-1], col[3].split(AGG)[-1])
        methods = col[4].split(AGG) if col[4] else []
        uris = col[5].split(AGG) if col[5] else []
        for i, m in enumerate(methods):
            f.req[k][(m, uris[i] if i < len(uris) else None)] += 1
        for c in (col[6].split(AGG) if col[6] else []):
            f.resp[k][int(c)] += 1
    return f, time.perf_counter() - t0


def c2scribe_found(base, engine, path, timeout) -> tuple:
    """(Found, per-connection list of transactions, flag counts, seconds) from c2scribe's jsonl."""
    cmd = base + ["transcript", "--format", "jsonl", "-q", "--engine", engine, path]
    t0 = time.perf_counter()
    f = Found()
    txs = collections.defaultdict(list)
    flags = collections.Counter()
    counts = collections.Counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO)
        for line in p.stdout:
            d = json.loads(line)
            ds = d.get("event.dataset")
            counts[ds] += 1
            if ds != "c2scribe.http":
                continue
            k = key4(d["source.ip"], d["source.port"], d["destination.ip"], d["destination.port"])
            m, u, s = d.get("http.request.method"), d.get("url.original"), d.get("http.response.status_code")
            fl = d.get("c2scribe.http.flags") or []
            if m is not None:
                f.req[k][(m, u)] += 1
            if s is not None:
                f.resp[k][s] += 1
            gap = [x for x in fl if x in GAP_FLAGS]
            for x in gap:
                flags[x] += 1
            if gap:
                flags["any"] += 1
            txs[k].append({"index": d.get("c2scribe.http.index"), "method": m, "uri": u, "status": s,
                           "state": d.get("c2scribe.http.state"), "flags": fl,
                           "req_missing": d.get("c2scribe.http.request.missing_bytes"),
                           "resp_missing": d.get("c2scribe.http.response.missing_bytes")})
        rc = p.wait(timeout=timeout)
        if rc != 0:
            err.seek(0)
            raise SystemExit(f"c2scribe --engine {engine} exited {rc}: "
                             f"{err.read().decode(errors='replace')[-2000:]}")
    return f, txs, flags, counts, time.perf_counter() - t0


# --------------------------------------------------------------------------- one profile

def recovery(args, profile, base):
    clean, lossy = capture_paths(args.cache_dir, profile, args.size, args.seed, args.drop_data, args.drop_seed)
    man = ensure_capture(lossy, profile, args.size, args.seed, args.regenerate, manifest_full=True,
                         drop_data=args.drop_data, drop_seed=args.drop_seed)
    truth = truth_of(man)
    drops = man["drops"]
    print(f"[{profile}] lossy capture: {man['bytes'] / 1e6:.1f} MB, {man['packets']} packets, "
          f"{drops['dropped_packets']} of {man['data_packets']} data packets dropped "
          f"({100 * drops['dropped_packets'] / man['data_packets']:.3f} %), {man['connections']} connections, "
          f"{man['transactions']} transactions, {drops['transactions_touched']} touched by a drop", flush=True)
    print(f"[{profile}] tshark ...", end="", flush=True)
    ts, secs = tshark_found(lossy, args.timeout)
    print(f" {secs:.1f}s: {ts.n_req()} requests, {ts.n_resp()} responses", flush=True)
    rows = [{"tool": "truth (manifest)", "requests": truth.n_req(), "responses": truth.n_resp()},
            {"tool": "tshark", "requests": ts.n_req(), "responses": ts.n_resp(), "seconds": secs,
             "true_requests": recovered(truth.req, ts.req), "true_responses": recovered(truth.resp, ts.resp)}]
    per_engine = {}
    for engine in args.engines:
        print(f"[{profile}] c2scribe --engine {engine} ...", end="", flush=True)
        f, txs, flags, counts, secs = c2scribe_found(base, engine, lossy, args.timeout)
        print(f" {secs:.1f}s: {f.n_req()} requests, {f.n_resp()} responses", flush=True)
        per_engine[engine] = (f, txs)
        rows.append({
            "tool": f"c2scribe {engine}", "engine": engine, "seconds": secs,
            "http_records": counts.get("c2scribe.http", 0), "requests": f.n_req(), "responses": f.n_resp(),
            "recovered_requests": recovered(ts.req, f.req), "recovered_responses": recovered(ts.resp, f.resp),
            "true_requests": recovered(truth.req, f.req), "true_responses": recovered(truth.resp, f.resp),
            "gap_flagged": flags.get("any", 0), "gap_flags": {k: flags.get(k, 0) for k in GAP_FLAGS},
            "mispaired": mispaired(man, txs)[0],
            "warnings": counts.get("c2scribe.warning", 0),
        })
    for r in rows:
        if "recovered_requests" in r:
            r["requests_ratio"] = r["recovered_requests"] / ts.n_req() if ts.n_req() else None
            r["responses_ratio"] = r["recovered_responses"] / ts.n_resp() if ts.n_resp() else None
    result = {"profile": profile, "capture": lossy, "bytes": man["bytes"], "packets": man["packets"],
              "data_packets": man["data_packets"], "connections": man["connections"],
              "transactions": man["transactions"], "drops": drops, "rows": rows}
    if args.details and "native" in per_engine:
        result["details"] = details(man, ts, per_engine["native"], args.details)
    return result


def details(man, ts: Found, native, limit: int):
    """Connections where tshark has a request that native does not: the drops there, native's output."""
    f, txs = native
    drops_by_conn = collections.defaultdict(list)
    for d in man["dropped_list"]:
        drops_by_conn[key4(d["client"][0], d["client"][1], d["server"][0], d["server"][1])].append(d)
    out = []
    for k, c in ts.req.items():
        missing = c - f.req.get(k, collections.Counter())
        if not missing:
            continue
        out.append({"connection": k, "missing": sorted(missing.elements(), key=str),
                    "drops": drops_by_conn.get(k, []), "native": txs.get(k, [])})
    out.sort(key=lambda e: str(e["connection"]))
    return {"connections": len(out), "requests": sum(len(e["missing"]) for e in out), "first": out[:limit],
            "without_drop": sum(1 for e in out if not e["drops"])}


# --------------------------------------------------------------------------- throughput

def throughput(args, profile, base):
    clean, _ = capture_paths(args.cache_dir, profile, args.size, args.seed, args.drop_data, args.drop_seed)
    man = ensure_capture(clean, profile, args.size, args.seed, args.regenerate)
    size = os.path.getsize(clean)
    run_bench.warm_cache(clean)
    # The engines take turns (native, nids, native, ...) so a change in the other load on the
    # machine hits both alike; the best run of each counts.
    argvs = {e: base + ["transcript", "--format", "jsonl", "--engine", e, clean] for e in args.engines}
    runs = {e: [] for e in args.engines}
    loads = {e: [] for e in args.engines}
    print(f"[{profile}] throughput, clean {size / 1e6:.1f} MB, one core:", end="", flush=True)
    for _ in range(max(1, args.repeat)):
        for engine in args.engines:
            if runs[engine] and runs[engine][-1]["exit"] != 0:
                continue
            loads[engine].append(os.getloadavg()[0])
            res = run_bench.measure(argvs[engine], args.cpu, args.timeout, cwd=REPO)
            runs[engine].append(res)
            print(f" {engine} {res['wall_s']:.2f}s", end="", flush=True)
    print(flush=True)
    rows = []
    for engine in args.engines:
        best = min(runs[engine], key=lambda r: (r["exit"] != 0, r["wall_s"]))
        cpu_s = best["user_s"] + best["sys_s"]
        ok = [r for r in runs[engine] if r["exit"] == 0] or runs[engine]
        med_wall = statistics.median(size / 1e6 / r["wall_s"] for r in ok)
        med_cpu = statistics.median(size / 1e6 / max(1e-9, r["user_s"] + r["sys_s"]) for r in ok)
        rows.append({"engine": engine, "command": " ".join(shlex.quote(a) for a in argvs[engine]),
                     "median_mb_per_s": med_wall, "median_mb_per_cpu_s": med_cpu,
                     "wall_s": best["wall_s"], "mb_per_s": size / 1e6 / best["wall_s"],
                     "mb_per_cpu_s": size / 1e6 / cpu_s if cpu_s else None,
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[engine]), "exit": best["exit"],
                     "load_before": max(loads[engine]), "runs": runs[engine]})
    return {"profile": profile, "capture": clean, "bytes": size, "transactions": man["transactions"],
            "rows": rows}


# --------------------------------------------------------------------------- report

def pct(x):
    return "-" if x is None else f"{100 * x:.2f} %"


def print_recovery(res):
    d = res["drops"]
    print(f"\n== {res['profile']}: {res['bytes'] / 1e6:.1f} MB lossy capture, {res['packets']} packets; "
          f"{d['dropped_packets']} of {res['data_packets']} data packets dropped "
          f"({d['client_to_server']} client->server, {d['server_to_client']} server->client); "
          f"{res['transactions']} transactions, {d['transactions_touched']} touched "
          f"({d['requests_touched']} requests, {d['responses_touched']} responses; "
          f"{d['request_lines_lost']} request lines and {d['status_lines_lost']} status lines dropped)")
    head = (f"{'':<18}{'requests':>10}{'recovered':>11}{'of tshark':>11}{'responses':>11}{'recovered':>11}"
            f"{'of tshark':>11}{'gap-flagged':>13}{'true req':>10}{'true resp':>11}{'mispaired':>11}")
    print(head)
    print("-" * len(head))
    for r in res["rows"]:
        print(f"{r['tool']:<18}{r['requests']:>10}{r.get('recovered_requests', '-'):>11}"
              f"{pct(r.get('requests_ratio')):>11}{r['responses']:>11}{r.get('recovered_responses', '-'):>11}"
              f"{pct(r.get('responses_ratio')):>11}{r.get('gap_flagged', '-'):>13}"
              f"{r.get('true_requests', '-'):>10}{r.get('true_responses', '-'):>11}{r.get('mispaired', '-'):>11}")
    for r in res["rows"]:
        if r.get("gap_flags"):
            g = r["gap_flags"]
            print(f"  {r['tool']} gap flags: " + ", ".join(f"{k} {v}" for k, v in g.items())
                  + f"  (dropped: {d['request_lines_lost']} request lines, {d['status_lines_lost']} status lines)")


def print_details(res):
    det = res.get("details")
    if not det:
        return
    print(f"\n-- {res['profile']}: {det['connections']} connections where tshark has a request native lacks "
          f"({det['requests']} requests; {det['without_drop']} of those connections had no drop)")
    for e in det["first"]:
        (a, ap), (b, bp) = e["connection"]
        print(f"  connection {a}:{ap} <-> {b}:{bp}; missing {e['missing']}")
        for d in e["drops"]:
            t = "; ".join(f"tx {x['index']} {x['message']} {x['method']} {x['uri']} ({x['status']}) "
                          f"bytes {x['offset']}-{x['offset'] + x['len']} of {x['message_len']} "
                          f"(head {x['head_len']}, {x['part']})" for x in d["touches"])
            print(f"    dropped frame {d['frame']} ({d['direction']}, stream offset {d['offset']}, "
                  f"{d['len']} B): {t}")
        for t in e["native"]:
            print(f"    native #{t['index']}: {t['method']} {t['uri']} -> {t['status']} {t['state']} "
                  f"flags={t['flags']} missing={t['req_missing']}/{t['resp_missing']}")


def print_throughput(tp):
    print(f"\n== {tp['profile']}: throughput on the clean capture ({tp['bytes'] / 1e6:.1f} MB, "
          f"{tp['transactions']} transactions), one core")
    print(f"{'engine':<10}{'wall s':>9}{'MB/s':>9}{'MB/cpu-s':>10}{'median MB/s':>13}{'median MB/cpu-s':>17}"
          f"{'peak RSS MB':>13}{'max load':>10}{'exit':>6}")
    for r in tp["rows"]:
        cpu = f"{r['mb_per_cpu_s']:.1f}" if r["mb_per_cpu_s"] else "-"
        print(f"{r['engine']:<10}{r['wall_s']:>9.2f}{r['mb_per_s']:>9.1f}{cpu:>10}{r['median_mb_per_s']:>13.1f}"
              f"{r['median_mb_per_cpu_s']:>17.1f}{r['peak_rss_mb']:>13.1f}"
              f"{r['load_before']:>10.2f}{str(r['exit']):>6}")
    v = throughput_verdict(tp)
    if v:
        print(f"native >= nids (best run): wall {'yes' if v['wall'] else 'NO'} ({v['wall_ratio']:.2f}x), "
              f"per CPU-second {'yes' if v['cpu'] else 'NO'} ({v['cpu_ratio']:.2f}x); median per CPU-second "
              f"{'yes' if v['median_cpu'] else 'NO'} ({v['median_cpu_ratio']:.2f}x)")


def throughput_verdict(tp):
    by = {r["engine"]: r for r in tp["rows"]}
    if "native" not in by or "nids" not in by:
        return None
    n, s = by["native"], by["nids"]
    ok = n["exit"] == 0 and s["exit"] == 0
    return {"wall": ok and n["mb_per_s"] >= s["mb_per_s"], "wall_ratio": n["mb_per_s"] / s["mb_per_s"],
            "cpu": ok and (n["mb_per_cpu_s"] or 0) >= (s["mb_per_cpu_s"] or 0),
            "cpu_ratio": (n["mb_per_cpu_s"] or 0) / (s["mb_per_cpu_s"] or 1),
            "median_cpu": ok and n["median_mb_per_cpu_s"] >= s["median_mb_per_cpu_s"],
            "median_cpu_ratio": n["median_mb_per_cpu_s"] / s["median_mb_per_cpu_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--profiles", default="large,small")
    ap.add_argument("--size", type=gen_captures.parse_size, default=gen_captures.parse_size("200M"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--drop-data", type=float, default=0.001, help="fraction of data packets dropped")
    ap.add_argument("--drop-seed", type=int, default=1)
    ap.add_argument("--engines", default="native,nids")
    ap.add_argument("--cache-dir", default=os.path.join(HERE, ".cache"))
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--c2scribe-cmd", help="how to start c2scribe (default as in run_bench.py)")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per engine (best counts)")
    ap.add_argument("--cpu", type=int, default=0, help="core to pin the throughput runs to")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-recovery", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--details", type=int, default=0, metavar="N",
                    help="show N connections where tshark has a request native lacks")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--check-targets", action="store_true",
                    help="exit 1 when native recovers < 99.5 %% of tshark's requests on a profile")
    ap.add_argument("--check-throughput", action="store_true",
                    help="with --check-targets: also exit 1 when native's MB/s on a clean capture < nids'")
    args = ap.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    base = run_bench.c2scribe_base(args.c2scribe_cmd)
    if hasattr(os, "sched_setaffinity") and not args.no_throughput:
        others = set(os.sched_getaffinity(0)) - {args.cpu}
        if others:
            os.sched_setaffinity(0, others)

    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "size": args.size, "seed": args.seed,
            "drop_data": args.drop_data, "drop_seed": args.drop_seed,
            "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                               if ln.startswith("model name")), platform.processor()),
            "cores": os.cpu_count(), "load_average_start": os.getloadavg(),
            "versions": {"tshark": run_bench.tool_version(["tshark", "--version"]),
                         "c2scribe": run_bench.tool_version(base + ["--version"])}}
    print(f"{info['date']}; {info['cpu_model']}, {info['cores']} cores; load {info['load_average_start'][0]:.2f}; "
          f"{info['versions']['tshark']}; c2scribe {info['versions']['c2scribe']}")
    results, tputs = [], []
    for profile in profiles:
        if not args.no_recovery:
            results.append(recovery(args, profile, base))
        if not args.no_throughput:
            tputs.append(throughput(args, profile, base))
    info["load_average_end"] = os.getloadavg()

    for res in results:
        print_recovery(res)
    for res in results:
        print_details(res)
    for tp in tputs:
        print_throughput(tp)

    failed = []
    for res in results:
        nat = next((r for r in res["rows"] if r.get("engine") == "native"), None)
        if nat is None or nat["requests_ratio"] is None or nat["requests_ratio"] < TARGET_RECOVERY:
            failed.append(f"{res['profile']}: native recovers {pct(nat and nat['requests_ratio'])} "
                          f"of tshark's requests (< {100 * TARGET_RECOVERY:g} %)")
    if args.check_throughput:
        for tp in tputs:
            v = throughput_verdict(tp)
            if not v or not v["wall"]:
                failed.append(f"{tp['profile']}: native MB/s < nids MB/s on the clean capture")
    print(f"\nload average at the end: {info['load_average_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "recovery": results, "throughput": tputs,
                       "target_recovery": TARGET_RECOVERY}, f, indent=2, default=list)
            f.write("\n")
    if args.check_targets:
        if failed or (not results and not args.check_throughput):
            print("check-targets: MISSED: " + ("; ".join(failed) or "nothing was measured"))
            return 1
        print("check-targets: met")
    return 0


if __name__ == "__main__":
    sys.exit(main())

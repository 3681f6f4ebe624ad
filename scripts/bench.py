#!/usr/bin/env python3
"""Runs upcase's whole performance comparison and writes BENCHMARKS.md.

Started by scripts/bench.sh, which builds the binaries first. Every server runs on loopback, on
port 0, and is stopped (by PID) after its runs. Each scenario runs every server REPS times,
interleaved, and reports the median, so a noisy moment hurts every server alike.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPCASE = ROOT / "target/release/upcase"
PEERS = ROOT / "benches/peers/target/release"

SERVERS = {
    "upcase": [str(UPCASE), "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
    "naive": [str(PEERS / "naive"), "127.0.0.1:0"],
    "tokio": [str(PEERS / "tokio-lines"), "127.0.0.1:0", "127.0.0.1:0"],
}


class Server:
    """A server process on loopback; its `listening` lines give its addresses."""

    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen(
            SERVERS[name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.addrs = {}
        want = 1 if name == "naive" else 2
        deadline = time.time() + 20
        while len(self.addrs) < want:
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{name} exited early")
            _, kind, addr = line.split()
            self.addrs[kind] = addr

    def cpu_seconds(self):
        """User plus system CPU time the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench(addr, args):
    out = subprocess.run(
        [str(UPCASE), "bench", "--json", "--addr", addr] + args,
        capture_output=True, text=True, timeout=600,
    )
    result = json.loads(out.stdout)
    if result["mismatches"] or result["errors"]:
        print(f"  !! {addr} {args}: {result}", file=sys.stderr)
    return result


def scenario(title, servers, kind, args, metric, reps):
    """Runs `args` against each server `reps` times, interleaved; returns medians per server."""
    print(f"== {title}", file=sys.stderr)
    runs = {s: [] for s in servers}
    for rep in range(reps):
        for name in servers:
            srv = Server(name)
            try:
                cpu0 = srv.cpu_seconds()
                r = bench(srv.addrs[kind], args)
                r["cpu_us_per_req"] = (srv.cpu_seconds() - cpu0) * 1e6 / max(r["requests"], 1)
            finally:
                srv.stop()
            runs[name].append(r)
            print(f"  {name} #{rep + 1}: {metric} {r[metric]:.1f} mismatches {r['mismatches']}", file=sys.stderr)
    medians = {}
    for name, rs in runs.items():
        medians[name] = {
            metric: statistics.median(r[metric] for r in rs),
            "all": [round(r[metric], 1) for r in rs],
            "mismatches": sum(r["mismatches"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "lost": sum(r.get("lost", 0) for r in rs),
            "cpu": statistics.median(r["cpu_us_per_req"] for r in rs),
        }
        if rs[0].get("latency_us"):
            medians[name]["p50"] = statistics.median(r["latency_us"]["p50"] for r in rs)
            medians[name]["p99"] = statistics.median(r["latency_us"]["p99"] for r in rs)
    return medians


def storm(servers, conns, reps):
    """Opens `conns` connections at once against a fresh server; reports answers and peak RSS."""
    print(f"== {conns} connections storm", file=sys.stderr)
    out = {}
    for name in servers:
        rows = []
        for _ in range(reps):
            srv = Server(name)
            try:
                r = bench(srv.addrs["tcp"], ["--mode", "conns", "-c", str(conns), "--timeout", "30"])
                r["rss_kib"] = srv.peak_rss_kib()
            finally:
                srv.stop()
            print(f"  {name}: answered {r['answered']} rss {r['rss_kib']} KiB max connect {r['max_connect_ms']:.1f} ms", file=sys.stderr)
            rows.append(r)
        out[name] = {
            "answered": min(r["answered"] for r in rows),
            "slow_connects": max(r["slow_connects"] for r in rows),
            "max_connect_ms": statistics.median(r["max_connect_ms"] for r in rows),
            "rss_mib": statistics.median(r["rss_kib"] for r in rows) / 1024,
            "mismatches": sum(r["mismatches"] for r in rows),
        }
    return out


def criterion():
    print("== criterion", file=sys.stderr)
    subprocess.run(
        ["cargo", "bench", "--bench", "transform", "--bench", "framer", "--", "--noplot"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )
    results = {}
    base = ROOT / "target/criterion"
    for est in base.glob("**/new/estimates.json"):
        bench_json = est.parent / "benchmark.json"
        meta = json.loads(bench_json.read_text())
        median_ns = json.loads(est.read_text())["median"]["point_estimate"]
        results[(meta["group_id"], meta["function_id"], meta.get("value_str"))] = (median_ns, meta.get("throughput"))
    return results


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--skip-criterion", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    a = ap.parse_args()
    d = ["--duration", str(a.duration)]

    ping = scenario("pingpong: 32 connections, 64 B lines", ["upcase", "naive", "tokio"], "tcp",
                    ["--mode", "pingpong", "-c", "32", "--size", "64"] + d, "req_per_s", a.reps)
    strm = scenario("stream: 8 connections, 1 KiB lines, window 64", ["upcase", "naive", "tokio"], "tcp",
                    ["--mode", "stream", "-c", "8", "-w", "64", "--size", "1024"] + d, "mb_per_s", a.reps)
    strm_u = scenario("stream, Unicode: 8 connections, 1 KiB lines, window 64", ["upcase", "naive", "tokio"], "tcp",
                      ["--mode", "stream", "-c", "8", "-w", "64", "--size", "1024", "--unicode"] + d, "mb_per_s", a.reps)
    udp = scenario("udp: 8 sockets, 64 B datagrams", ["upcase", "tokio"], "udp",
                   ["--mode", "udp", "-c", "8", "--size", "64"] + d, "req_per_s", a.reps)
    conns = storm(["upcase", "naive", "tokio"], a.conns, 1)
    crit = {} if a.skip_criterion else criterion()

    def ratio(rows, metric, a_, b_):
        return rows[a_][metric] / rows[b_][metric] if rows[b_][metric] else float("inf")

    def mark(ok):
        return "met" if ok else "**missed**"

    lines = []
    w = lines.append
    w("# upcase benchmarks")
    w("")
    w(f"Machine: {machine()}. Load generator (`upcase bench`) and server share the machine, on")
    w("loopback. Every figure is the median of the runs listed, servers interleaved run by run;")
    w("every reply of every run was checked against `str::to_uppercase`.")
    w("")
    w("Reproduce: `scripts/bench.sh` (this file is its output). Servers: `upcase serve` with")
    w("its defaults; `naive` is a thread per connection with `BufReader::read_line` and")
    w("`to_uppercase`; `tokio` is tokio's multi-threaded runtime with `LinesCodec`")
    w("(`benches/peers/`).")
    w("")
    w("## TCP and UDP")
    w("")
    w("| scenario | upcase | naive | tokio | upcase / naive | upcase / tokio | target | |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    r1, r2 = ratio(ping, "req_per_s", "upcase", "naive"), ratio(ping, "req_per_s", "upcase", "tokio")
    w(f"| pingpong, 32 conns, 64 B: req/s | {ping['upcase']['req_per_s']:.0f} | {ping['naive']['req_per_s']:.0f} | "
      f"{ping['tokio']['req_per_s']:.0f} | {r1:.2f}× | {r2:.2f}× | ≥ 1.0× naive, ≥ 2× tokio | {mark(r1 >= 1.0 and r2 >= 2.0)} |")
    w(f"| pingpong latency p50 / p99, µs | {ping['upcase']['p50']:.0f} / {ping['upcase']['p99']:.0f} | "
      f"{ping['naive']['p50']:.0f} / {ping['naive']['p99']:.0f} | {ping['tokio']['p50']:.0f} / {ping['tokio']['p99']:.0f} | | | | |")
    r1, r2 = ratio(strm, "mb_per_s", "upcase", "naive"), ratio(strm, "mb_per_s", "upcase", "tokio")
    w(f"| stream, 8 conns, 1 KiB, window 64: MB/s | {strm['upcase']['mb_per_s']:.0f} | {strm['naive']['mb_per_s']:.0f} | "
      f"{strm['tokio']['mb_per_s']:.0f} | {r1:.2f}× | {r2:.2f}× | ≥ 1.4× naive, ≥ 2× tokio | {mark(r1 >= 1.4 and r2 >= 2.0)} |")
    r1, r2 = ratio(strm_u, "mb_per_s", "upcase", "naive"), ratio(strm_u, "mb_per_s", "upcase", "tokio")
    w(f"| stream, Unicode text: MB/s | {strm_u['upcase']['mb_per_s']:.0f} | {strm_u['naive']['mb_per_s']:.0f} | "
      f"{strm_u['tokio']['mb_per_s']:.0f} | {r1:.2f}× | {r2:.2f}× | (no target) | |")
    r2 = ratio(udp, "req_per_s", "upcase", "tokio")
    w(f"| udp, 8 sockets, 64 B: req/s | {udp['upcase']['req_per_s']:.0f} | | {udp['tokio']['req_per_s']:.0f} | | {r2:.2f}× | ≥ 1.0× tokio | {mark(r2 >= 1.0)} |")
    w(f"| udp losses (all runs) | {udp['upcase']['lost']} | | {udp['tokio']['lost']} | | | | |")
    w("")
    w("Server CPU time (user + system) per request, from `/proc/PID/stat` over each run, median;")
    w("lower is better, and unlike throughput it does not depend on how the scheduler shares the")
    w("two cores between the server and the load generator:")
    w("")
    w("| scenario | upcase µs/req | naive µs/req | tokio µs/req |")
    w("| --- | --- | --- | --- |")
    for title, rows in (("pingpong", ping), ("stream", strm), ("stream, Unicode", strm_u), ("udp", udp)):
        cells = " | ".join(f"{rows[n]['cpu']:.2f}" if n in rows else "" for n in ("upcase", "naive", "tokio"))
        w(f"| {title} | {cells} |")
    w("")
    w(f"Runs (req/s or MB/s): pingpong {json.dumps({k: v['all'] for k, v in ping.items()})}; "
      f"stream {json.dumps({k: v['all'] for k, v in strm.items()})}; "
      f"stream Unicode {json.dumps({k: v['all'] for k, v in strm_u.items()})}; "
      f"udp {json.dumps({k: v['all'] for k, v in udp.items()})}. Mismatches in all runs: "
      f"{sum(v['mismatches'] for rows in (ping, strm, strm_u, udp) for v in rows.values())}.")
    w("")
    w(f"## {a.conns} connections at once")
    w("")
    w("Opened as a storm from 16 threads with no pacing, held, then one line sent on each; peak RSS")
    w("is the server's `VmHWM`. Target for upcase (default settings): every one answered, no")
    w("connect waiting on a SYN retransmit (none over 1 s), peak RSS ≤ 128 MiB.")
    w("")
    w("| server | answered | connects over 1 s | slowest connect, ms | peak RSS, MiB | |")
    w("| --- | --- | --- | --- | --- | --- |")
    for name, r in conns.items():
        ok = r["answered"] == a.conns and r["slow_connects"] == 0 and r["rss_mib"] <= 128
        w(f"| {name} | {r['answered']} / {a.conns} | {r['slow_connects']} | {r['max_connect_ms']:.1f} | "
          f"{r['rss_mib']:.1f} | {mark(ok) if name == 'upcase' else ''} |")
    w("")
    if crit:
        w("## Criterion: the transform and the framer")
        w("")
        w("`cargo bench --bench transform --bench framer`; medians, in input bytes per second")
        w("(GB/s) for the transform and lines per second for the framer.")
        w("")
        w("| text | size | upcase GB/s | copy + make_ascii_uppercase GB/s | str::to_uppercase GB/s | upcase / copy | upcase / to_uppercase | target | |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for text in ["ascii", "latin", "greek", "cjk", "mixed"]:
            for size in ["64", "4096", "65536"]:
                g = f"transform/{text}"
                try:
                    up = crit[(g, "upcase", size)]
                    cp = crit[(g, "copy_make_ascii_uppercase", size)]
                    tu = crit[(g, "str_to_uppercase", size)]
                except KeyError:
                    continue
                nbytes = up[1]["Bytes"]
                gbps = lambda ns: nbytes / ns
                target, ok = "", None
                if text == "ascii":
                    target, ok = "≥ 0.8× copy", cp[0] / up[0] >= 0.8
                if text == "mixed":
                    target, ok = "≥ 2× to_uppercase", tu[0] / up[0] >= 2.0
                w(f"| {text} | {size} | {gbps(up[0]):.2f} | {gbps(cp[0]):.2f} | {gbps(tu[0]):.2f} | "
                  f"{cp[0] / up[0]:.2f}× | {tu[0] / up[0]:.2f}× | {target} | {'' if ok is None else mark(ok)} |")
        w("")
        w("| line length | lines/s (millions) |")
        w("| --- | --- |")
        for n in ["16", "64", "1024"]:
            if ("framer", "lines", n) in crit:
                ns, tp = crit[("framer", "lines", n)]
                w(f"| {n} B | {tp['Elements'] / ns * 1e3:.1f} |")
        w("")
    history = ROOT / "benches/history.md"
    if history.exists():
        lines.append(history.read_text().rstrip())
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

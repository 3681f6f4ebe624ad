#!/usr/bin/env python3
"""Runs upcase's performance comparison (issue 12's targets) and writes BENCHMARKS.md.

Started by scripts/bench.sh, which builds the binaries first. Every server runs on loopback, on
port 0, fresh for every run, and is stopped (by its PID) after it. Each scenario runs every
server REPS times, interleaved run by run, so a noisy moment hurts every server alike; tables
give the median and the spread (min-max). Every run passes --server-pid, so each run also gives
the server's CPU time per verified reply.

The reason for a missed target is kept in bench/reasons.md (one `## target-id` section each),
so it survives the next run of this script.
"""

import argparse
import json
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
PEERS_TARGET = Path(os.environ.get("PEERS_TARGET_DIR", TARGET))
UPCASE = TARGET / "release/upcase"
BENCH = TARGET / "release/upcase-bench"
PEERS = PEERS_TARGET / "release"

SERVERS = {
    "upcase": [str(UPCASE), "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--io", "epoll"],
    "upcase-uring": [str(UPCASE), "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--io", "uring"],
    "careful": [str(PEERS / "careful"), "127.0.0.1:0"],
    "naive": [str(PEERS / "naive"), "127.0.0.1:0"],
    "tokio": [str(PEERS / "tokio-lines"), "127.0.0.1:0", "127.0.0.1:0"],
    "monoio": [str(PEERS / "monoio-lines"), "127.0.0.1:0"],
}
# The `listening` lines each server prints: its TCP and (upcase, tokio) UDP addresses.
SOCKETS = {"upcase": 2, "upcase-uring": 2, "careful": 1, "naive": 1, "tokio": 2, "monoio": 1}
TCP_SERVERS = ["upcase", "upcase-uring", "careful", "naive", "tokio", "monoio"]
UDP_SERVERS = ["upcase", "upcase-uring", "tokio"]
# Issue 12's "best peer" for the pingpong target is among these; the io_uring peer came with
# issue 21, whose own targets compare upcase with it.
ISSUE12_PEERS = ["careful", "naive", "tokio"]
# Servers that need what a kernel may refuse (io_uring: missing, `kernel.io_uring_disabled`, or
# blocked by seccomp in a container): tried once first, and left out of the run, with the
# reason, if they cannot start.
OPTIONAL = ["monoio", "upcase-uring"]

DESCRIPTIONS = {
    "upcase": "`upcase serve --io epoll`: its defaults, epoll workers, one per core",
    "upcase-uring": "`upcase serve --io uring`: the same over the io_uring workers (issue 21)",
    "careful": "a thread per connection, 64 KiB `BufReader::read_until` (memchr), "
    "`str::to_uppercase` per valid UTF-8 run, 64 KiB `BufWriter` flushed only when the "
    "reader's buffer is empty (`bench/peers/src/bin/careful.rs`)",
    "naive": "a thread per connection, `BufReader::read_line`, `to_uppercase`, one `write_all` "
    "per reply (`bench/peers/src/bin/naive.rs`)",
    "tokio": "tokio's multi-threaded runtime, `LinesCodec`, a task per connection; one UDP task "
    "(`bench/peers/src/bin/tokio-lines.rs`)",
    "monoio": "monoio with its io_uring driver, a thread per core each with its own `SO_REUSEPORT` "
    "listener, a 64 KiB owned read buffer per connection, `memchr::memrchr` for line ends, "
    "`str::to_uppercase` per valid UTF-8 run, one `write_all` per read; TCP only "
    "(`bench/peers/src/bin/monoio-lines.rs`)",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Server:
    """A fresh server process on loopback; its `listening KIND ADDR` lines give its addresses."""

    def __init__(self, name):
        self.name = name
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(SERVERS[name], stdout=subprocess.PIPE, stderr=self.err, bufsize=0)
        self.addrs = {}
        buf = b""
        deadline = time.monotonic() + 20
        while len(self.addrs) < SOCKETS[name]:
            left = deadline - time.monotonic()
            ready = select.select([self.proc.stdout], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                tail = self.stderr_tail()  # before stop(), which closes the file
                self.stop()
                raise RuntimeError(f"{name} printed no `listening` lines within 20 s: {tail}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                try:  # its last words are in the file once it is gone
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                tail = self.stderr_tail()
                self.stop()
                raise RuntimeError(f"{name} exited before it was ready: {tail}")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                parts = line.decode().split()
                if len(parts) == 3 and parts[0] == "listening":
                    self.addrs[parts[1]] = parts[2]

    @property
    def pid(self):
        return self.proc.pid

    def peak_rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def stderr_tail(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-600:]

    def stop(self):
        """SIGTERM, then a kill if it is not gone within 15 s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self.err.close()
        return status


def run_bench(args, duration):
    """One run of upcase-bench with `args`; returns its JSON (with `exit`, and `error` when the run
    failed). A failed run is reported, not fatal: its row says why."""
    cmd = [str(BENCH), "--json"] + args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    except subprocess.TimeoutExpired:
        return {"exit": None, "error": f"upcase-bench did not finish within {duration + 120:.0f} s"}
    try:
        result = json.loads(out.stdout)
    except json.JSONDecodeError:
        result = {"error": out.stderr.strip() or f"no JSON (exit {out.returncode})"}
    result["exit"] = out.returncode
    if out.returncode != 0 and not result.get("error"):
        result["error"] = out.stderr.strip() or f"exit {out.returncode}"
    return result


class Scenario:
    """One load against several servers, `reps` runs each, interleaved."""

    def __init__(self, key, title, servers, kind, args, metric, unit):
        self.key, self.title, self.servers, self.kind = key, title, servers, kind
        self.args, self.metric, self.unit = args, metric, unit
        self.runs = {s: [] for s in servers}

    def command(self):
        return "upcase-bench " + " ".join(self.args) + f" --addr ADDR --server-pid PID"

    def run_once(self, name, duration):
        srv = Server(name)
        try:
            r = run_bench(self.args + ["--addr", srv.addrs[self.kind], "--server-pid", str(srv.pid)], duration)
        finally:
            srv.stop()
        self.runs[name].append(r)
        cpu = (r.get("server_cpu") or {}).get("us_per_reply")
        log(f"  {self.key} {name}: {self.metric} {r.get(self.metric, 0):.1f}, "
            f"cpu {cpu if cpu is None else round(cpu, 2)} µs/reply, wrong {r.get('mismatches')}, "
            f"lost {r.get('lost', '-')}" + (f", FAILED: {r['error']}" if r.get("error") else ""))

    def values(self, name, field):
        out = []
        for r in self.runs[name]:
            if r.get("error"):
                continue
            v = (r.get("server_cpu") or {}).get("us_per_reply") if field == "cpu" else r.get(field)
            if v is not None:
                out.append(v)
        return out

    def median(self, name, field):
        v = self.values(name, field)
        return statistics.median(v) if v else None

    def failures(self, name):
        return [r["error"] for r in self.runs[name] if r.get("error")]

    def total(self, name, field):
        return sum(r.get(field) or 0 for r in self.runs[name])

    def per_rep(self, name, field):
        """The value of each rep, None where the run failed: runs of one rep pair up across servers."""
        out = []
        for r in self.runs[name]:
            v = (r.get("server_cpu") or {}).get("us_per_reply") if field == "cpu" else r.get(field)
            out.append(None if r.get("error") else v)
        return out


def spread(values, digits):
    """`median (min–max)` of `values`."""
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def storm(conns, reps, name="upcase"):
    """Opens `conns` connections at once against a fresh upcase; answers and peak RSS (VmHWM)."""
    log(f"== storm: {conns} connections, {name}")
    rows = []
    for rep in range(reps):
        srv = Server(name)
        try:
            r = run_bench(["--mode", "conns", "-c", str(conns), "--timeout", "30",
                           "--addr", srv.addrs["tcp"], "--server-pid", str(srv.pid)], 60)
            r["rss_kib"] = srv.peak_rss_kib()
        finally:
            r["server_exit"] = srv.stop()
        log(f"  storm #{rep + 1}: opened {r.get('opened')} answered {r.get('answered')} "
            f"rss {r['rss_kib']} KiB" + (f", FAILED: {r['error']}" if r.get("error") else ""))
        rows.append(r)
    return rows


def criterion(quick):
    """Runs the core's criterion benches (feature `fast`, as upcase-std builds the core)."""
    log("== criterion")
    extra = ["--warm-up-time", "0.2", "--measurement-time", "0.5", "--sample-size", "10"] if quick else []
    out = subprocess.run(
        ["cargo", "bench", "-p", "upcase-core", "--features", "fast",
         "--bench", "transform", "--bench", "framer", "--", "--noplot"] + extra,
        cwd=ROOT, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cargo bench failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    results = {}
    for est in (TARGET / "criterion").glob("**/new/estimates.json"):
        meta = json.loads((est.parent / "benchmark.json").read_text())
        median_ns = json.loads(est.read_text())["median"]["point_estimate"]
        results[(meta["group_id"], meta["function_id"], meta.get("value_str"))] = (median_ns, meta.get("throughput"))
    return results


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"
    return (f"{os.cpu_count()} cores, {model}, Linux {platform.release()}; "
            f"{out(['rustc', '--version'])}; commit {out(['git', 'rev-parse', '--short', 'HEAD'])}"
            + (" (with uncommitted changes)" if out(["git", "status", "--porcelain", "--untracked-files=no"]) else ""))


def reasons():
    """bench/reasons.md: `## target-id` sections, each the measured reason a target is missed."""
    path = ROOT / "bench/reasons.md"
    found = {}
    if path.exists():
        for part in re.split(r"^## ", path.read_text(), flags=re.M)[1:]:
            key, _, body = part.partition("\n")
            found[key.strip()] = body.strip()
    return found


def ratio(a, b):
    return a / b if a is not None and b else None


def status(value, ok):
    return "not measured" if value is None else "met" if ok else "**missed**"


def rep_ratios(num, den):
    return [x / y for x, y in zip(num, den) if x is not None and y]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, help="seconds per run (5; 1 with --quick)")
    ap.add_argument("--reps", type=int, help="runs per server and scenario (3; 1 with --quick)")
    ap.add_argument("--conns", type=int, default=10000, help="connections of the storm (10000)")
    ap.add_argument("--skip-criterion", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 rep, 1 s, short criterion")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    a = ap.parse_args()
    a.reps = a.reps or (1 if a.quick else 3)
    a.duration = a.duration or (1.0 if a.quick else 5.0)
    d = ["--duration", str(a.duration)]
    uni = ["--unicode"]
    left_out = {}
    for name in OPTIONAL:
        try:
            Server(name).stop()
        except RuntimeError as e:
            left_out[name] = str(e).strip()
            log(f"== {name} left out: {left_out[name]}")
    tcp_servers = [n for n in TCP_SERVERS if n not in left_out]
    udp_servers = [n for n in UDP_SERVERS if n not in left_out]

    scenarios = [
        Scenario("stream", "stream: 8 connections, 1 KiB ASCII lines, window 64", tcp_servers, "tcp",
                 ["--mode", "stream", "-c", "8", "-w", "64", "--size", "1024"] + d, "mb_per_s", "MB/s"),
        Scenario("stream-unicode", "stream, Unicode: 8 connections, 1 KiB mixed-script lines, window 64",
                 tcp_servers, "tcp",
                 ["--mode", "stream", "-c", "8", "-w", "64", "--size", "1024"] + uni + d, "mb_per_s", "MB/s"),
        Scenario("pingpong", "pingpong: 32 connections, 64 B lines, one in flight each", tcp_servers, "tcp",
                 ["--mode", "pingpong", "-c", "32", "--size", "64"] + d, "req_per_s", "req/s"),
    ] + [
        Scenario(f"udp-{n}", f"udp: {n} sockets, 64 B Unicode datagrams, one in flight each", udp_servers, "udp",
                 ["--mode", "udp", "-c", str(n), "--size", "64"] + uni + d, "req_per_s", "req/s")
        for n in (8, 64, 128)
    ]
    for rep in range(a.reps):
        log(f"== rep {rep + 1} of {a.reps}")
        for sc in scenarios:
            for name in sc.servers:
                sc.run_once(name, a.duration)
    by = {sc.key: sc for sc in scenarios}
    storms = {name: storm(a.conns, a.reps, name)
              for name in ("upcase", "upcase-uring") if name not in left_out}
    storm_rows = storms["upcase"]
    crit = {} if a.skip_criterion else criterion(a.quick)
    why = reasons()

    # Issue 12's targets: (id, what, measured ratio, per-rep ratios, bound, "<=" or ">=", extra condition).
    targets = []

    def target(tid, what, value, reps_, bound, op, cond=True, note="", into=targets):
        ok = value is not None and cond and (value <= bound if op == "<=" else value >= bound)
        into.append((tid, what, value, reps_, bound, op, ok, note))

    s, su, pp, u64 = by["stream"], by["stream-unicode"], by["pingpong"], by["udp-64"]
    target("stream-cpu", "stream: upcase server CPU per line vs careful",
           ratio(s.median("upcase", "cpu"), s.median("careful", "cpu")),
           rep_ratios(s.per_rep("upcase", "cpu"), s.per_rep("careful", "cpu")), 0.8, "<=")
    target("stream-throughput", "stream: upcase MB/s vs careful",
           ratio(s.median("upcase", "mb_per_s"), s.median("careful", "mb_per_s")),
           rep_ratios(s.per_rep("upcase", "mb_per_s"), s.per_rep("careful", "mb_per_s")), 1.2, ">=")
    target("stream-unicode-cpu", "stream, Unicode: upcase server CPU per line vs tokio",
           ratio(su.median("upcase", "cpu"), su.median("tokio", "cpu")),
           rep_ratios(su.per_rep("upcase", "cpu"), su.per_rep("tokio", "cpu")), 0.5, "<=")
    peers = [n for n in ISSUE12_PEERS if pp.median(n, "cpu") is not None]
    best = min(peers, key=lambda n: pp.median(n, "cpu")) if peers else None
    best_reps = [min((v for v in vs if v is not None), default=None)
                 for vs in zip(*(pp.per_rep(n, "cpu") for n in peers))] if peers else []
    target("pingpong-cpu", f"pingpong: upcase server CPU per request vs the best peer ({best})",
           ratio(pp.median("upcase", "cpu"), pp.median(best, "cpu") if best else None),
           rep_ratios(pp.per_rep("upcase", "cpu"), best_reps), 1.1, "<=")
    lost, wrong = u64.total("upcase", "lost"), u64.total("upcase", "mismatches")
    target("udp-64-cpu", "udp, 64 sockets: upcase server CPU per datagram vs tokio, 0 lost, 0 wrong",
           ratio(u64.median("upcase", "cpu"), u64.median("tokio", "cpu")),
           rep_ratios(u64.per_rep("upcase", "cpu"), u64.per_rep("tokio", "cpu")), 0.55, "<=",
           cond=lost == 0 and wrong == 0 and not u64.failures("upcase"),
           note=f"lost {lost}, wrong {wrong} in all upcase runs")
    rss = [r["rss_kib"] / 1024 for r in storm_rows if r.get("rss_kib")]
    all_answered = all(r.get("answered") == a.conns and not r.get("error") for r in storm_rows)
    targets.append(("storm-rss", f"{a.conns} connections at once: upcase peak RSS (MiB), all answered",
                    max(rss) if rss else None, rss, 16, "<=",
                    bool(rss) and max(rss) <= 16 and all_answered,
                    "every connection answered" if all_answered else "**not every connection answered**"))
    # Issue 21's targets: the io_uring workers (upcase-uring) against the io_uring peer (monoio)
    # on TCP, and against tokio on UDP; the storm's RSS over io_uring.
    targets21 = []
    uring = "upcase-uring"
    for sc, bound, what in ((pp, 0.9, "pingpong 32 × 64 B: server CPU per request"),
                            (s, 1.0, "stream 8 × 1 KiB, window 64: server CPU per line")):
        target(f"uring-{sc.key}-cpu", f"{what}, upcase-uring vs monoio",
               ratio(sc.median(uring, "cpu"), sc.median("monoio", "cpu")),
               rep_ratios(sc.per_rep(uring, "cpu"), sc.per_rep("monoio", "cpu")), bound, "<=",
               into=targets21)
        target(f"epoll-{sc.key}-cpu", f"{what}, upcase (epoll) vs monoio (for comparison; no bound of its own)",
               ratio(sc.median("upcase", "cpu"), sc.median("monoio", "cpu")),
               rep_ratios(sc.per_rep("upcase", "cpu"), sc.per_rep("monoio", "cpu")), bound, "<=",
               into=targets21)
    lost_u, wrong_u = u64.total(uring, "lost"), u64.total(uring, "mismatches")
    target("uring-udp-64-cpu", "udp, 64 sockets × 64 B Unicode: upcase-uring server CPU per datagram vs tokio, 0 lost, 0 wrong",
           ratio(u64.median(uring, "cpu"), u64.median("tokio", "cpu")),
           rep_ratios(u64.per_rep(uring, "cpu"), u64.per_rep("tokio", "cpu")), 0.55, "<=",
           cond=lost_u == 0 and wrong_u == 0 and not u64.failures(uring),
           note=f"lost {lost_u}, wrong {wrong_u} in all upcase-uring runs", into=targets21)
    urss = [r["rss_kib"] / 1024 for r in storms.get(uring, []) if r.get("rss_kib")]
    u_answered = all(r.get("answered") == a.conns and not r.get("error") for r in storms.get(uring, []))
    targets21.append(("uring-storm-rss", f"{a.conns} connections at once: upcase-uring peak RSS (MiB), all answered",
                      max(urss) if urss else None, urss, 16, "<=",
                      bool(urss) and max(urss) <= 16 and u_answered,
                      "every connection answered" if u_answered else "**not every connection answered**"))
    for size in ("4096", "65536"):
        up = crit.get(("transform/ascii", "upcase", size))
        cp = crit.get(("transform/ascii", "copy_make_ascii_uppercase", size))
        target(f"transform-ascii-{size}",
               f"criterion: transform on ASCII, {int(size) // 1024} KiB, vs copy + make_ascii_uppercase (throughput)",
               cp[0] / up[0] if up and cp else None, [], 0.9, ">=",
               note="" if up and cp else "not run: --skip-criterion")

    lines = []
    w = lines.append
    w("# upcase benchmarks")
    w("")
    w("Written by `scripts/bench.sh` (this file is its output; do not edit by hand: reasons for")
    w("missed targets live in `bench/reasons.md`, the history in `bench/history.md`).")
    w("")
    w(f"Machine: {machine()}. The load generator (`upcase-bench`, [bench/README.md](bench/README.md))")
    w("and the server share the machine, on loopback. Every server is started fresh for every run;")
    w(f"servers are interleaved run by run, {a.reps} run(s) each of {a.duration:g} s; figures are the median")
    w("with the spread (min–max) in parentheses. Every reply of every run is checked against the")
    w("reference model (`upcase_model::upper`). Server CPU is the server's user + system time from")
    w("`/proc/PID/stat` over the measured window (`--server-pid`), per verified reply: unlike")
    w("throughput it hardly depends on how the scheduler shares the cores between the server and")
    w("the load generator, so the targets are stated in it. The kernel counts CPU time in clock")
    w(f"ticks ({1000 / os.sysconf('SC_CLK_TCK'):g} ms here), so short runs give coarse CPU figures.")
    w("")
    if a.quick:
        w("**This is a `--quick` smoke run** (one short run per server and scenario, short criterion")
        w("measurements): it shows that every scenario runs, not where the targets stand. Run")
        w("`scripts/bench.sh` for the figures.")
        w("")
    w("## Commands")
    w("")
    w("```sh")
    args = " ".join(sys.argv[1:])
    w(f"scripts/bench.sh {args}".rstrip())
    for sc in scenarios:
        w(sc.command())
    w(f"upcase-bench --mode conns -c {a.conns} --timeout 30 --addr ADDR --server-pid PID")
    if crit:
        w("cargo bench -p upcase-core --features fast --bench transform --bench framer")
    w("```")
    w("")
    w("Servers:")
    w("")
    for name, text in DESCRIPTIONS.items():
        w(f"- `{name}`: {text}." + (f" **Left out of this run**: {left_out[name]}" if name in left_out else ""))
    w("")
    for title, group in (("issue 12", targets), ("issue 21: io_uring", targets21)):
        w(f"## Targets ({title})")
        w("")
        w("| target | measured | per run | bound | |")
        w("| --- | --- | --- | --- | --- |")
        for tid, what, value, reps_, bound, op, ok, note in group:
            measured = "–" if value is None else f"{value:.2f}" + ("" if tid.endswith("storm-rss") else "×")
            per = ", ".join(f"{v:.2f}" for v in reps_)
            extra = f" ({note})" if note else ""
            verdict = "comparison" if tid.startswith("epoll-") else status(value, ok)
            bound_text = "" if tid.startswith("epoll-") else (
                f"{op.replace('<=', '≤').replace('>=', '≥')} {bound:g}{'' if tid.endswith('storm-rss') else '×'}")
            w(f"| {what}{extra} | {measured} | {per} | {bound_text} | {verdict} |")
        w("")

    for sc in scenarios:
        w(f"## {sc.title}")
        w("")
        w(f"`{sc.command()}`")
        w("")
        has_lat = any(sc.values(n, "latency_us") for n in sc.servers)
        head = ["server", sc.unit, "server CPU µs/reply", "upcase CPU / this"]
        head += ["latency p50 / p99, µs"] if has_lat else []
        head += ["wrong"] + (["lost", "late"] if sc.kind == "udp" else []) + ["failed runs"]
        w("| " + " | ".join(head) + " |")
        w("|" + " --- |" * len(head))
        for name in sc.servers:
            rel = ratio(sc.median("upcase", "cpu"), sc.median(name, "cpu"))
            row = [name, spread(sc.values(name, sc.metric), 0 if sc.metric == "req_per_s" else 1),
                   spread(sc.values(name, "cpu"), 2),
                   "" if name == "upcase" or rel is None else f"{rel:.2f}×"]
            if has_lat:
                lat = sc.values(name, "latency_us")
                row.append(f"{statistics.median(l['p50'] for l in lat):.0f} / "
                           f"{statistics.median(l['p99'] for l in lat):.0f}" if lat else "")
            row.append(str(sc.total(name, "mismatches")))
            if sc.kind == "udp":
                row += [str(sc.total(name, "lost")), str(sc.total(name, "late"))]
            fails = sc.failures(name)
            row.append(f"{len(fails)}: {fails[0]}" if fails else "0")
            w("| " + " | ".join(row) + " |")
        w("")

    w(f"## {a.conns} connections at once")
    w("")
    w("Opened as a storm from 16 threads with no pacing, held, then one line sent on each. Peak RSS")
    w("is the server's `VmHWM` from `/proc/PID/status`; the server runs with its default settings")
    w("(`--io epoll` for upcase, `--io uring` for upcase-uring).")
    w("")
    w("| server | run | opened | answered | connect p50 / p99 / max, ms | connects over 1 s | peak RSS, MiB | server exit |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, i, r in ((n, i, r) for n, rows in storms.items() for i, r in enumerate(rows, 1)):
        c = r.get("connect_ms") or {}
        rss_mib = f"{r['rss_kib'] / 1024:.1f}" if r.get("rss_kib") else "?"
        err = f" ({r['error']})" if r.get("error") else ""
        w(f"| {name} | {i} | {r.get('opened', '?')} | {r.get('answered', '?')}{err} | "
          f"{c.get('p50', 0):.2f} / {c.get('p99', 0):.2f} / {c.get('max', 0):.1f} | "
          f"{r.get('slow_connects', '?')} | {rss_mib} | {r.get('server_exit')} |")
    w("")

    if crit:
        w("## Criterion: the transform and the framer")
        w("")
        w("`cargo bench -p upcase-core --features fast --bench transform --bench framer`; medians, in")
        w("input GB/s for the transform and millions of lines per second for the framer.")
        w("")
        w("| text | size | upcase GB/s | copy + make_ascii_uppercase GB/s | str::to_uppercase GB/s | upcase / copy | upcase / to_uppercase |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        texts = sorted({g.split("/", 1)[1] for (g, _, _) in crit if g.startswith("transform/")},
                       key=lambda t: (["ascii", "latin", "greek", "cjk", "mixed", "unicode"] + [t]).index(t))
        for text in texts:
            for size in ("64", "4096", "65536"):
                g = f"transform/{text}"
                up, cp, tu = (crit.get((g, f, size)) for f in ("upcase", "copy_make_ascii_uppercase", "str_to_uppercase"))
                if not (up and cp and tu):
                    continue
                nbytes = up[1]["Bytes"]
                w(f"| {text} | {size} | {nbytes / up[0]:.2f} | {nbytes / cp[0]:.2f} | {nbytes / tu[0]:.2f} | "
                  f"{cp[0] / up[0]:.2f}× | {tu[0] / up[0]:.2f}× |")
        w("")
        w("| line length | lines/s (millions) |")
        w("| --- | --- |")
        for n in ("16", "64", "1024"):
            if ("framer", "lines", n) in crit:
                ns, tp = crit[("framer", "lines", n)]
                w(f"| {n} B | {tp['Elements'] / ns * 1e3:.1f} |")
        w("")

    missed = [t for t in targets + targets21
              if t[2] is not None and not t[6] and not t[0].startswith("epoll-")]
    w("## Targets missed, and why")
    w("")
    if not missed:
        w("None in this run.")
        w("")
    for tid, what, value, *_ in missed:
        w(f"### {what}")
        w("")
        w(why.get(tid) or f"_Reason not measured yet: profile it and write it in `bench/reasons.md` under `## {tid}`._")
        w("")
    history = ROOT / "bench/history.md"
    if history.exists():
        w(history.read_text().rstrip())
    Path(a.out).write_text("\n".join(lines) + "\n")
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Soak: `upcase serve` (release build, default settings, loopback, port 0) under verified load
# mixed with every attack of SECURITY.md (`upcase-bench --mode soak`, bench/README.md), for SECS
# seconds (default 10). Fails unless every reply verified, none lost or corrupted, no error, the
# server's peak RSS (VmHWM) stayed under RSS_LIMIT_KIB (default 65536, 64 MiB), and SIGTERM
# ended it with status 0.
#
#   scripts/soak.sh [SECS]
#
# CARGO_TARGET_DIR (default target/) says where the binaries are built.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rss_limit_kib=${RSS_LIMIT_KIB:-65536}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p upcase -p upcase-bench
server=$target/release/upcase
bench=$target/release/upcase-bench
out=$(mktemp) err=$(mktemp) json=$(mktemp)
"$server" serve --tcp 127.0.0.1:0 --udp 127.0.0.1:0 >"$out" 2>"$err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out" "$err" "$json"' EXIT
for _ in $(seq 100); do
  [ "$(grep -c '^listening' "$out" || true)" -ge 2 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
tcp=$(awk '$1 == "listening" && $2 == "tcp" {print $3}' "$out")
udp=$(awk '$1 == "listening" && $2 == "udp" {print $3}' "$out")
[ -n "$tcp" ] && [ -n "$udp" ] || { echo "soak: the server did not start"; tail -5 "$err"; exit 1; }
status=0
"$bench" --mode soak --unicode --addr "$tcp" --udp-addr "$udp" --duration "$secs" \
  --server-pid "$pid" --json >"$json" || status=$?
peak=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
server_status=0
wait "$pid" || server_status=$?
python3 - "$json" "$peak" "$rss_limit_kib" "$status" "$server_status" <<'PY'
import json, sys
path, peak, limit, status, server_status = sys.argv[1], *map(int, sys.argv[2:])
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"soak: upcase-bench printed no summary (exit {status})")
    sys.exit(1)
cpu = (r.get("server_cpu") or {}).get("us_per_reply")
print(f"soak {r['seconds']:.0f} s: verified {r['requests']}, lost {r['lost']}, corrupted {r['mismatches']}, "
      f"errors {r['errors']}, server peak RSS {peak / 1024:.1f} MiB (limit {limit / 1024:.0f} MiB)"
      + (f", server CPU {cpu:.2f} µs/reply" if cpu is not None else ""))
problems = []
if status != 0:
    problems.append(f"upcase-bench exited {status}: {r.get('error')}")
if r["requests"] == 0:
    problems.append("no reply verified")
if r["lost"] or r["mismatches"] or r["errors"]:
    problems.append(f"lost {r['lost']}, corrupted {r['mismatches']}, errors {r['errors']}")
if peak > limit:
    problems.append(f"peak RSS {peak} KiB over the limit of {limit} KiB")
if server_status != 0:
    problems.append(f"the server exited with status {server_status} on SIGTERM")
for p in problems:
    print(f"soak: FAILED: {p}")
sys.exit(1 if problems else 0)
PY

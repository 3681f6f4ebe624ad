#!/usr/bin/env bash
# Soak: `upcase serve` (release build, default settings, loopback, port 0) under verified load
# mixed with every attack of SECURITY.md (`upcase bench --mode soak`), for SECS seconds
# (default 10). Fails unless every reply verified, none lost or corrupted, the server's peak
# RSS stayed under the bound, and SIGTERM ended it with status 0.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rss_limit_kib=${RSS_LIMIT_KIB:-131072}
cargo build --release --quiet
bin=target/release/upcase
out=$(mktemp) err=$(mktemp)
"$bin" serve --tcp 127.0.0.1:0 --udp 127.0.0.1:0 >"$out" 2>"$err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out" "$err"' EXIT
for _ in $(seq 100); do
  [ "$(grep -c listening "$out" || true)" -ge 2 ] && break
  sleep 0.1
done
tcp=$(awk '$2 == "tcp" {print $3}' "$out")
udp=$(awk '$2 == "udp" {print $3}' "$out")
[ -n "$tcp" ] && [ -n "$udp" ] || { echo "server did not start"; cat "$err"; exit 1; }
status=0
"$bin" bench --mode soak --unicode --addr "$tcp" --udp-addr "$udp" --duration "$secs" --json >"$out.json" || status=$?
peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid" || { echo "server exited with status $?"; tail -5 "$err"; exit 1; }
python3 - "$out.json" "$peak" "$rss_limit_kib" "$status" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
peak, limit, status = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"soak {r['seconds']:.0f} s: verified {r['requests']}, lost {r['lost']}, corrupted {r['mismatches']}, "
      f"errors {r['errors']}, server peak RSS {peak / 1024:.1f} MiB")
ok = status == 0 and r["lost"] == 0 and r["mismatches"] == 0 and r["errors"] == 0 and r["requests"] > 0 and peak <= limit
sys.exit(0 if ok else 1)
PY
rm -f "$out.json"

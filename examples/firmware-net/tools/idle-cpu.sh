#!/usr/bin/env bash
# Host CPU that QEMU spends on an idle guest: boots IMAGE through run.sh on free ports, waits for
# the ready lines, lets it idle for SECS seconds (default 10) with no traffic, and prints QEMU's
# utime+stime over that window from /proc/PID/stat, as seconds and as a share of one core.
# Kills QEMU when done. Linux only.
#   tools/idle-cpu.sh target/thumbv7m-none-eabi/release/upcase-firmware-net [SECS]
set -euo pipefail
image=${1:?usage: idle-cpu.sh IMAGE [SECS]}
secs=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
tcp=$(port SOCK_STREAM)
udp=$(port SOCK_DGRAM)
out=$(mktemp)
UPCASE_NET_TCP=$tcp UPCASE_NET_UDP=$udp "$here/run.sh" "$image" >"$out" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 300); do
  grep -q '^listening udp' "$out" && break
  kill -0 "$pid" 2>/dev/null || { echo "QEMU exited before it served" >&2; exit 1; }
  sleep 0.1
done
grep -q '^listening udp' "$out" || { echo "no ready line within 30 s" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
a=$(ticks)
sleep "$secs"
b=$(ticks)
awk -v t=$((b - a)) -v hz="$hz" -v s="$secs" \
  'BEGIN { printf "idle %d s: QEMU used %.2f s of host CPU (%.1f %% of one core)\n", s, t/hz, 100*t/hz/s }'

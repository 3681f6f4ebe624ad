#!/usr/bin/env bash
# System calls the server makes per request, epoll against io_uring (issue 21): a fixed lockstep
# load (scripts/lockstep.py: N TCP connections, then N UDP sockets, R rounds, each round one
# 64 B request on every client, every reply checked), one worker, counted by `strace -f -c`
# attached to the server.
# A count, not a timing: strace slows the server, which only makes batches larger.
#
#   scripts/syscalls.sh [N] [R]          # default 16 connections x 500 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-16} R=${2:-500}
command -v strace >/dev/null || { apt-get update && apt-get install -y strace; }
cargo build --release --quiet -p upcase
dir=$(mktemp -d)
server="" tracer=""
trap 'kill $tracer $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for proto in tcp udp; do
for io in epoll uring; do
  target/release/upcase serve --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --io "$io" --workers 1 >"$dir/out" 2>"$dir/err" &
  server=$!
  for _ in $(seq 100); do [ "$(grep -c listening "$dir/out")" -ge 2 ] && break; sleep 0.1; done
  port=$(awk -v p="$proto" '$1 == "listening" && $2 == p {sub(/.*:/, "", $3); print $3}' "$dir/out")
  strace -f -c -p "$server" -o "$dir/strace" 2>/dev/null &
  tracer=$!
  sleep 0.5 # strace attaches to every thread
  python3 scripts/lockstep.py "$proto" "$port" "$N" "$R" >/dev/null
  sleep 0.3
  kill -INT "$tracer"
  wait "$tracer" || true
  kill -TERM "$server"
  wait "$server"
  echo "== $proto, --io $io: $((N * R)) requests"
  grep -E 'sendto|recvfrom|sendmmsg|recvmmsg|epoll_wait|io_uring_enter|total' "$dir/strace"
  awk -v req=$((N * R)) '$NF == "total" {print "system calls per request: " $4 / req}' "$dir/strace"
done
done

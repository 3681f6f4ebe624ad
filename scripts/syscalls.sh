#!/usr/bin/env bash
# System calls the server makes per request, epoll against io_uring (issue 21): a fixed lockstep
# pingpong (scripts/lockstep.py: N connections, R rounds, each round one 64 B line on every
# connection, every reply checked), one worker, counted by `strace -f -c` attached to the server.
# A count, not a timing: strace slows the server, which only makes batches larger.
#
#   scripts/syscalls.sh [N] [R]          # default 16 connections x 500 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-16} R=${2:-500}
command -v strace >/dev/null || { apt-get update && apt-get install -y strace; }
cargo build --release --quiet -p upcase
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for io in epoll uring; do
  target/release/upcase serve --tcp 127.0.0.1:0 --no-udp --io "$io" --workers 1 >"$dir/out" 2>"$dir/err" &
  server=$!
  for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.1; done
  port=$(sed 's/.*://' "$dir/out")
  strace -f -c -p "$server" -o "$dir/strace" 2>/dev/null &
  tracer=$!
  sleep 0.5 # strace attaches to every thread
  python3 scripts/lockstep.py "$port" "$N" "$R" >/dev/null
  sleep 0.3
  kill -INT "$tracer"
  wait "$tracer" || true
  kill -TERM "$server"
  wait "$server"
  echo "== --io $io: $((N * R)) requests"
  grep -E 'sendto|recvfrom|epoll_wait|io_uring_enter|total' "$dir/strace"
  awk -v req=$((N * R)) '$NF == "total" {print "system calls per request: " $4 / req}' "$dir/strace"
done

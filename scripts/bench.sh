#!/usr/bin/env bash
# The whole performance comparison against issue 12's targets: builds upcase and upcase-bench
# (release) and the baseline servers (bench/peers: careful, naive, tokio, and monoio-lines, the
# io_uring one of issue 21; outside the workspace, with its own lock file), runs every scenario on
# loopback, and writes BENCHMARKS.md. monoio-lines runs in the TCP scenarios beside the others; a
# kernel that refuses io_uring leaves it out of the run, and BENCHMARKS.md says why. upcase runs
# twice: `--io epoll` (upcase, in every scenario) and `--io uring` (upcase-uring, in every
# scenario, left out like monoio-lines where the kernel refuses io_uring).
#
#   scripts/bench.sh                      # 3 reps of 5 s per server and scenario, criterion
#   scripts/bench.sh --quick              # smoke run: 1 rep of 1 s, short criterion
#   scripts/bench.sh --reps 5 --duration 10 --conns 10000 --skip-criterion --out FILE
#
# CARGO_TARGET_DIR (default target/) and PEERS_TARGET_DIR (default: the same) say where the
# binaries are built.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export PEERS_TARGET_DIR=${PEERS_TARGET_DIR:-$CARGO_TARGET_DIR}
cargo build --release --quiet -p upcase -p upcase-bench
CARGO_TARGET_DIR=$PEERS_TARGET_DIR cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
exec python3 scripts/bench.py "$@"

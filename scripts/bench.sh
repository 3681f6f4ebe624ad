#!/usr/bin/env bash
# The whole performance comparison: builds upcase and the baseline servers (benches/peers, with
# tokio, outside the workspace), runs every scenario on loopback, and writes BENCHMARKS.md.
# Arguments go to scripts/bench.py (--duration SECS, --reps N, --conns N, --skip-criterion).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
cargo build --release --manifest-path benches/peers/Cargo.toml
exec python3 scripts/bench.py "$@"

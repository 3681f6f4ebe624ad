#!/usr/bin/env bash
# Every test of upcase, in the order CI runs them. The README's test command; `.ci/run` calls it.
# It installs what the tests need, because a fresh machine has nothing but the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "install: thumb targets (RUSTUP_AUTO_INSTALL=0 is set on these machines)"
rustup target add thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p upcase-core --all-targets --no-default-features -- -D warnings
cargo clippy -p upcase-core --all-targets --features async -- -D warnings

step "tests"
cargo test --workspace
cargo test -p upcase-core --no-default-features
cargo test -p upcase-core --features async

step "core on thumb targets"
for target in thumbv6m-none-eabi thumbv7em-none-eabihf; do
  for features in "--no-default-features" "" "--no-default-features --features defmt" "--features defmt,async"; do
    echo "-- $target $features"
    # shellcheck disable=SC2086
    cargo build -p upcase-core --target "$target" $features
  done
done

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc -p upcase-core --no-deps --features async

echo
echo "ci: all steps passed"

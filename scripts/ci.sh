#!/usr/bin/env bash
# Every test of upcase, in the order CI runs them. The README's test command; `.ci/run` calls it.
# It installs what the tests need, because a fresh machine has nothing but the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "install: thumb targets (RUSTUP_AUTO_INSTALL=0 is set on these machines)"
rustup target add thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf

step "install: qemu-system-arm (the firmware test runs the image under QEMU)"
if ! command -v qemu-system-arm >/dev/null; then
  apt-get update
  apt-get install -y qemu-system-arm
fi

step "install: cargo-fuzz (fuzzing uses the installed nightly toolchain)"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi

# Crates outside the workspace, each with its own lock file and target folder.
FIRMWARE=examples/firmware/Cargo.toml
QEMU_TEST=examples/firmware-qemu-test/Cargo.toml
NET=examples/firmware-net/Cargo.toml
NET_TEST=examples/firmware-net-test/Cargo.toml
EMBASSY=examples/firmware-net/embassy/Cargo.toml

step "format"
cargo fmt --all -- --check
for m in "$FIRMWARE" "$QEMU_TEST" "$NET" "$NET_TEST" "$EMBASSY" fuzz/Cargo.toml bench/peers/Cargo.toml; do cargo fmt --manifest-path "$m" -- --check; done

# upcase-core's feature sets: default (unicode: the firmware's build), ASCII-only, the fast path
# (what upcase-std uses; in --workspace), and the async drivers.
CORE_FEATURES=("" "--no-default-features" "--no-default-features --features fast" "--features async")

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
for features in "${CORE_FEATURES[@]}"; do
  # shellcheck disable=SC2086
  cargo clippy -p upcase-core --all-targets $features -- -D warnings
done

step "tests"
cargo test --workspace
for features in "${CORE_FEATURES[@]}"; do
  # shellcheck disable=SC2086
  cargo test -p upcase-core $features
done
cargo bench -p upcase-core --features fast --no-run

step "core on thumb targets"
for target in thumbv6m-none-eabi thumbv7em-none-eabihf; do
  for features in "--no-default-features" "" "--features fast" "--no-default-features --features defmt" "--features defmt,async"; do
    echo "-- $target $features"
    # shellcheck disable=SC2086
    cargo build -p upcase-core --target "$target" $features
  done
done

step "firmware: every image variant builds, clippy-clean"
# From inside the folder: its .cargo/config.toml (target, runner) is found from the current
# directory, not from --manifest-path.
(
  cd examples/firmware
  cargo clippy --release -- -D warnings
  cargo clippy --release --target thumbv6m-none-eabi --no-default-features -- -D warnings
  cargo clippy --release --features async -- -D warnings
  cargo build --release --features defmt
  cargo build --release --features report
  cargo build --release --target thumbv7em-none-eabihf
  cargo build --release --target thumbv7em-none-eabihf --no-default-features
)
cargo clippy --manifest-path "$QEMU_TEST" --all-targets -- -D warnings

step "firmware under QEMU: M3 and M0, Unicode and ASCII-only, async, typed line ends, flash budgets"
cargo test --manifest-path "$QEMU_TEST" --release -- --test-threads=1

step "network firmware: smoltcp on the Stellaris MAC, and the embassy-net recipe, clippy-clean"
# firmware-net's images: the QEMU ones (default: Unicode and semihosting; ASCII-only; DHCP) and
# the board ones (no semihosting: nothing but a reset on a fault; defmt over RTT; DHCP), each
# clippy-clean, and the defmt one linked (-Tdefmt.x).
(
  cd examples/firmware-net
  for features in "" "--no-default-features --features semihosting" "--features dhcp" \
    "--no-default-features --features unicode" "--no-default-features --features unicode,defmt,dhcp"; do
    echo "-- firmware-net $features"
    # shellcheck disable=SC2086
    time cargo clippy --release $features -- -D warnings
  done
  time cargo build --release --no-default-features --features unicode,defmt,dhcp --target-dir target/board
)
(cd examples/firmware-net/embassy && cargo clippy --target thumbv7em-none-eabihf -- -D warnings)
cargo clippy --manifest-path "$NET_TEST" --all-targets -- -D warnings

step "network firmware under QEMU: TCP and UDP byte for byte, the close, forged sources (as root), DHCP"
time cargo test --manifest-path "$NET_TEST" --release -- --test-threads=1

step "soak: verified load mixed with every attack, 10 s"
scripts/soak.sh 10

step "fuzz: build every target, run each for 10 s from the seed corpus"
(
  cd fuzz
  cargo +nightly fuzz build -O
  for target in $(cargo +nightly fuzz list); do
    scratch=$(mktemp -d)
    cargo +nightly fuzz run -O "$target" "$scratch" "corpus/$target" -- -max_total_time=10
    rm -rf "$scratch"
  done
)

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc -p upcase-core --no-deps --features async

echo
echo "ci: all steps passed"

#!/usr/bin/env bash
# Every test of upcase, in the order CI runs them. The README's test command; `.ci/run` calls it.
# It installs what the tests need, because a fresh machine has nothing but the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints its name; the next one (or the end) prints how long it took, and the end
# prints every step's time again, longest first, with the total.
STEP="" STEP_START=$SECONDS TIMES=()
step() {
  if [[ -n $STEP ]]; then
    local took=$((SECONDS - STEP_START))
    printf '== took %d s: %s\n' "$took" "$STEP"
    TIMES+=("$(printf '%5d s  %s' "$took" "$STEP")")
  fi
  STEP=$* STEP_START=$SECONDS
  [[ -n $STEP ]] && printf '\n== %s\n' "$STEP"
  return 0
}

step "install: thumb targets (RUSTUP_AUTO_INSTALL=0 is set on these machines)"
rustup target add thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf

step "install: qemu-system-arm (the firmware test runs the image under QEMU), systemd's tools (socket activation and unit tests), mingw-w64's gcc (the Windows clippy of the core's benches: criterion's dependency alloca compiles C in its build script)"
missing=()
command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)
{ command -v systemd-socket-activate && command -v systemd-analyze; } >/dev/null || missing+=(systemd)
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
if ((${#missing[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
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
EMBASSY_FW=examples/firmware-embassy/Cargo.toml

step "format"
cargo fmt --all -- --check
for m in "$FIRMWARE" "$QEMU_TEST" "$NET" "$NET_TEST" "$EMBASSY" "$EMBASSY_FW" fuzz/Cargo.toml bench/peers/Cargo.toml; do cargo fmt --manifest-path "$m" -- --check; done

# upcase-core's feature sets: default (unicode: the firmware's build), ASCII-only, the fast path
# (what upcase-std uses; in --workspace), and the async drivers.
CORE_FEATURES=("" "--no-default-features" "--no-default-features --features fast" "--features async")

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The test seam that takes the one-datagram-per-receive UDP path of other systems on Linux.
cargo clippy -p upcase-std --all-targets --features _single-datagram -- -D warnings
cargo clippy -p upcase-std --all-targets --features _uring-unavailable -- -D warnings
for features in "${CORE_FEATURES[@]}"; do
  # shellcheck disable=SC2086
  cargo clippy -p upcase-core --all-targets $features -- -D warnings
done

step "other desktops: clippy -D warnings (cargo check's passes and the lints) for macOS, FreeBSD, Windows"
# No linker or SDK is needed to check. `rustup target add` is quick once the targets are there.
rustup target add x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd \
  x86_64-pc-windows-msvc x86_64-pc-windows-gnu
cross_clippy() {
  local target=$1 start=$SECONDS
  shift
  echo "-- $target: $*"
  cargo clippy --target "$target" "$@" -- -D warnings
  echo "-- $target: $((SECONDS - start)) s"
}
for target in x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd; do
  cross_clippy "$target" -p upcase-std -p upcase --all-targets
done
# Windows. On MSVC the core's benches cannot be checked: criterion's dependency alloca compiles C
# with MSVC's cl.exe in its build script. (upcase-std and upcase pull in no such crate.)
for target in x86_64-pc-windows-gnu x86_64-pc-windows-msvc; do
  cross_clippy "$target" -p upcase-std -p upcase --all-targets
done
cross_clippy x86_64-pc-windows-gnu -p upcase-core -p upcase-model --all-targets
cross_clippy x86_64-pc-windows-msvc -p upcase-core -p upcase-model --lib

step "tests"
cargo test --workspace
cargo test -p upcase-std --features _single-datagram --test udp_drain
for features in "${CORE_FEATURES[@]}"; do
  # shellcheck disable=SC2086
  cargo test -p upcase-core $features
done
cargo bench -p upcase-core --features fast --no-run

step "tests over epoll: the end-to-end and in-process suites again, every server on the epoll driver"
# UPCASE_IO is read by `upcase serve --io` and by std-shim/tests/common. The run above used
# `auto`, which is io_uring on these machines (its log line says so; tests/cli.rs checks that
# --io uring runs here); this one pins epoll, so that both drivers pass the same suites.
UPCASE_IO=epoll cargo test -p upcase -p upcase-std
# Where io_uring cannot run (the probe fails by a test seam): auto falls back, uring says why.
cargo test -p upcase-std --features _uring-unavailable --test io_fallback

step "core on thumb targets"
for target in thumbv6m-none-eabi thumbv7em-none-eabihf; do
  for features in "--no-default-features" "" "--features fast" "--no-default-features --features defmt" "--features defmt,async"; do
    echo "-- $target $features"
    # shellcheck disable=SC2086
    cargo build -p upcase-core --target "$target" $features
  done
done

step "firmware: every image variant builds, clippy-clean; no panic paths, proven by the linker"
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
  # no-panic: the panic handler calls a function that is never defined, so these link only when
  # the optimiser removed every panic path; a panic path left fails the link, and CI. Full
  # Unicode and ASCII-only on the M3 and the M0, the async driver, and the core's fast paths
  # (the std server's) on the M4F. The QEMU test below runs no-panic images too.
  cargo clippy --release --features no-panic,fast -- -D warnings
  for features in "no-panic" "no-panic --no-default-features" "no-panic,async" \
    "no-panic --target thumbv6m-none-eabi" "no-panic --target thumbv6m-none-eabi --no-default-features" \
    "no-panic,fast --target thumbv7em-none-eabihf"; do
    echo "-- no-panic proof: cargo build --release --features $features"
    # shellcheck disable=SC2086
    time cargo build --release --features $features
  done
)
cargo clippy --manifest-path "$QEMU_TEST" --all-targets -- -D warnings

step "firmware under QEMU: M3 and M0, Unicode and ASCII-only, async, typed line ends, flash and stack budgets"
cargo test --manifest-path "$QEMU_TEST" --release -- --test-threads=1

step "network firmware: smoltcp on the Stellaris MAC, and the embassy-net recipe, clippy-clean"
# The LM3S6965 pieces the images share (examples/lm3s6965: the MAC's register level, the
# interrupt table, the stack painting, the diagnostic lines): formatted and clippy-clean as
# each image builds it, the M3 with and without semihosting and the M0 (the UART image's
# `report` build). Outside the workspace too, so linted here, not by the images' clippy.
(
  cd examples/lm3s6965
  cargo fmt -- --check
  cargo clippy --target thumbv7m-none-eabi -- -D warnings
  cargo clippy --target thumbv7m-none-eabi --features semihosting -- -D warnings
  cargo clippy --target thumbv6m-none-eabi -- -D warnings
)
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

step "embassy firmware: the QEMU image (static, DHCP, ASCII-only without semihosting) and the NUCLEO-F429ZI image (static, DHCP), clippy-clean"
# The board image is built in CI, not run in CI: it needs the board and a probe.
(
  cd examples/firmware-embassy
  time cargo clippy --release -- -D warnings
  time cargo clippy --release --features dhcp -- -D warnings
  time cargo clippy --release --no-default-features -- -D warnings
  time cargo clippy --release --features board-nucleo-f429zi --target thumbv7em-none-eabihf -- -D warnings
  time cargo build --release --features board-nucleo-f429zi --target thumbv7em-none-eabihf
  time cargo build --release --features board-nucleo-f429zi,dhcp --target thumbv7em-none-eabihf
)

step "network firmware under QEMU (smoltcp and embassy images): TCP and UDP byte for byte, the close, forged sources (as root), DHCP, timers"
time cargo test --manifest-path "$NET_TEST" --release -- --test-threads=1

step "benchmark peers (careful, naive, tokio, monoio): clippy-clean, and their replies checked"
cargo clippy --manifest-path bench/peers/Cargo.toml --all-targets -- -D warnings
cargo test --manifest-path bench/peers/Cargo.toml

step "soak: verified load mixed with every attack, 10 s, on each driver"
# `auto` runs io_uring where the kernel allows it; the second run pins epoll.
scripts/soak.sh 10
UPCASE_IO=epoll scripts/soak.sh 10

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

step "systemd units: systemd-analyze verify"
# Also part of `cargo test --workspace`; here so that a machine without it says so.
if systemd-analyze --version >/dev/null 2>&1; then
  cargo test -p upcase --test units
else
  echo "skipped: systemd-analyze cannot run here (install the systemd package)"
fi

step "package: the crates package and verify; their tests and benches build from the packages"
# upcase-bench is not published. --allow-dirty: a local run checks the working tree as it is.
cargo package --workspace --exclude upcase-bench --allow-dirty
# Each package is built as a user gets it: unpacked outside this workspace, its unpublished
# dependencies (the packages before it) patched in from their own packages. The target folder
# is shared, so the registry dependencies are not built again.
unpacked=$(mktemp -d)
patch=()
for crate in upcase-model upcase-core upcase-std; do
  version=$(cargo pkgid -p "$crate" | sed 's/.*[#@]//')
  tar xzf "target/package/$crate-$version.crate" -C "$unpacked"
  if [[ $crate != upcase-model ]]; then
    (cd "$unpacked/$crate-$version" && cargo test --all-targets --no-run --target-dir "$OLDPWD/target" "${patch[@]}")
  fi
  patch+=(--config "patch.crates-io.$crate.path='$unpacked/$crate-$version'")
done
rm -rf "$unpacked"

step "Windows under Wine: core, model and upcase-std tests as x86_64-pc-windows-gnu programs"
# scripts/wine.sh installs Wine 8.0 and mingw-w64, builds the bcryptprimitives.dll stand-in and
# the prefix, and runs the command with Wine as cargo's runner for that target.
# Each test run under Wine is bounded (it takes about a minute): a hung program fails CI with
# a line that says so in 15 minutes, not at CI's own limit. The bound is inside wine.sh, so its
# exit stops the prefix's processes, the hung one with them.
WINE_BOUND=15m
wine_bounded() {
  local rc=0
  scripts/wine.sh timeout --kill-after=30s "$WINE_BOUND" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "ci: under Wine, '$*' did not end within $WINE_BOUND" >&2
  fi
  return "$rc"
}
time wine_bounded cargo test -p upcase-core -p upcase-model -p upcase-std \
  --target x86_64-pc-windows-gnu

step "Windows under Wine: the end-to-end suite (tests/*.rs) against upcase.exe"
# The same tests as on Linux, from the same Linux test process: UPCASE_EXE makes every place
# that starts upcase run `wine64 upcase.exe` instead (tests/common/mod.rs), and the stop
# request becomes Ctrl-C. A test that cannot run there says why on one line, counted below.
WIN_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
time scripts/wine.sh cargo build --target x86_64-pc-windows-gnu -p upcase --bin upcase
wine_e2e_log="$WIN_TARGET_DIR/wine/e2e.log"
time UPCASE_EXE="$WIN_TARGET_DIR/x86_64-pc-windows-gnu/debug/upcase.exe" \
  wine_bounded cargo test -p upcase 2>&1 | tee "$wine_e2e_log"
echo "-- under Wine: $(grep -c '^skipped under Wine: ' "$wine_e2e_log") skipped tests or parts, each with its reason above"

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc -p upcase-core --no-deps --features async

step ""
echo
printf '%s\n' "${TIMES[@]}" | sort -rn
echo "ci: all steps passed in $SECONDS s"

#!/usr/bin/env bash
# Windows under Wine: sets up what running our x86_64-pc-windows-gnu programs needs on a fresh
# Debian 12 machine, then runs the command given (if any) with cargo's runner for that target set
# to Wine. Every step is idempotent, so running it again costs about a second.
#
#   scripts/wine.sh                                        # set up only
#   scripts/wine.sh cargo test -p upcase-std --target x86_64-pc-windows-gnu
#
# What it sets up, under ${CARGO_TARGET_DIR:-target}/wine:
#   - Debian's Wine 8.0 and the mingw-w64 cross-compiler (apt, without recommends: 18 packages);
#   - the Rust target x86_64-pc-windows-gnu (rustup; mingw's gcc is its linker);
#   - bcryptprimitives.dll, our stand-in built from scripts/wine/bcryptprimitives.c: Rust >= 1.78
#     imports ProcessPrng from it and Wine has it only from 8.13, so without it every Rust
#     program fails to load with c0000135 (STATUS_DLL_NOT_FOUND);
#   - a 64-bit Wine prefix with the stand-in in its system32.
#
# Wine's helper processes (wineserver, services.exe, explorer.exe, ...) inherit the standard
# streams of the wine process that starts them, and a pipe stays open until they exit. So this
# script starts them itself with their output in files (prefix.log, wineserver.log), before the
# command runs, and stops them (wineserver -k, this prefix only) when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver
TARGET=x86_64-pc-windows-gnu
DIR="${CARGO_TARGET_DIR:-$PWD/target}/wine"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

timed() {
  local what=$1 start=$SECONDS
  shift
  "$@"
  printf 'wine.sh: %s: %d s\n' "$what" $((SECONDS - start))
}

install_packages() {
  if [[ -x $WINE ]] && command -v x86_64-w64-mingw32-gcc >/dev/null; then
    return
  fi
  apt-get update
  # wine64 alone runs 64-bit programs: no i386 architecture, no wine32, no recommends.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wine64 gcc-mingw-w64-x86-64
}

build_stub() {
  local src=scripts/wine/bcryptprimitives.c def=scripts/wine/bcryptprimitives.def
  local dll="$DIR/bcryptprimitives.dll"
  if [[ -f $dll && $dll -nt $src && $dll -nt $def ]]; then
    return
  fi
  x86_64-w64-mingw32-gcc -O2 -Wall -Wextra -Werror -shared -s -o "$dll" "$src" "$def" -lbcrypt
}

export WINEPREFIX="$DIR/prefix"
export WINEDEBUG=-all
# mscoree and mshtml off: no prompt to download Mono or Gecko, which nothing here needs; no
# desktop menu entries; our bcryptprimitives.dll, never a built-in one.
export WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d;bcryptprimitives=n"
export WINEARCH=win64

start_wine() {
  # A persistent server for this prefix, with its output in a file, then the boot, which starts
  # the prefix's services with their output in a file too. The first boot creates the prefix.
  mkdir -p "$WINEPREFIX"
  if ! "$WINESERVER" -p >"$DIR/wineserver.log" 2>&1; then
    cat "$DIR/wineserver.log" >&2
    return 1
  fi
  if ! "$WINE" wineboot --init >"$DIR/prefix.log" 2>&1; then
    cat "$DIR/prefix.log" >&2
    return 1
  fi
  cp "$DIR/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
}

stop_wine() {
  WINEPREFIX="$WINEPREFIX" "$WINESERVER" -k >/dev/null 2>&1 || true
}

# One run at a time per prefix: a second wineserver for it would not start, and this script's
# `wineserver -k` at exit would end the other run's programs.
exec 9>"$DIR/lock"
flock 9

timed "install wine64 and mingw-w64" install_packages
timed "rustup target add $TARGET" rustup target add "$TARGET"
timed "build the bcryptprimitives.dll stand-in" build_stub
trap stop_wine EXIT
timed "start the Wine prefix $WINEPREFIX" start_wine

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$WINE"
if [[ $# -gt 0 ]]; then
  "$@"
fi

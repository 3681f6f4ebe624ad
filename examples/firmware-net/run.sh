#!/usr/bin/env bash
# `cargo run` calls it with the image's path; it also runs by hand:
#   ./run.sh target/thumbv7m-none-eabi/release/upcase-firmware-net
# Boots the image under QEMU and prints its ready lines: ../lm3s6965/run.sh, shared with
# firmware-embassy, says how (host ports UPCASE_NET_TCP and UPCASE_NET_UDP, guest address
# UPCASE_NET_GUEST). It execs QEMU, so this process id is QEMU's.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/../lm3s6965/run.sh" upcase-firmware-net "$@"

#!/usr/bin/env bash
# The QEMU runner of the network images (firmware-net and firmware-embassy), which their own
# run.sh call: `run.sh NAME IMAGE`, NAME being the image's name at the start of its ready line
# (`NAME: serving ...`).
#
# Boots IMAGE under QEMU's lm3s6965evb with its Stellaris MAC on QEMU's user network, and
# forwards host ports into the guest: 127.0.0.1:$UPCASE_NET_TCP (default 65432) to the guest's
# TCP 65432, and 127.0.0.1:$UPCASE_NET_UDP (default 9876) to its UDP 9876.
#
# Like `upcase serve`, stdout carries only the ready lines, `listening tcp 127.0.0.1:PORT` and
# `listening udp 127.0.0.1:PORT`, printed once the guest says it serves (with feature `dhcp`,
# once it has its lease). The guest's diagnostics (semihosting) go to stderr. QEMU replaces
# this shell (exec), so the process id that started it is QEMU's own: killing it stops the guest.
#
# UPCASE_NET_GUEST (default 10.0.2.15, QEMU's own default) is the first address QEMU's DHCP
# server hands out, and the guest address the forwards go to: an image built with
# `--features dhcp` serves there; a static image always uses 10.0.2.15.
set -euo pipefail
name=${1:?usage: run.sh NAME IMAGE}
image=${2:?usage: run.sh NAME IMAGE}
tcp=${UPCASE_NET_TCP:-65432}
udp=${UPCASE_NET_UDP:-9876}
guest=${UPCASE_NET_GUEST:-10.0.2.15}

announce() {
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line" >&2
    if [[ $line == "$name: serving "* ]]; then
      printf 'listening tcp 127.0.0.1:%s\nlistening udp 127.0.0.1:%s\n' "$tcp" "$udp"
    fi
  done
}

# The forwards listen on 127.0.0.1 only; the guest starts no traffic of its own but, with
# feature `dhcp`, its DHCP exchange with QEMU's built-in server: it only answers what comes
# through them. (restrict=on is not used: QEMU's user network then drops every UDP datagram
# the guest sends, replies included.)
exec qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -display none -monitor none \
  -serial none -semihosting-config enable=on,target=native \
  -nic "user,model=stellaris,dhcpstart=${guest},hostfwd=tcp:127.0.0.1:${tcp}-${guest}:65432,hostfwd=udp:127.0.0.1:${udp}-${guest}:9876" \
  -kernel "$image" > >(announce)

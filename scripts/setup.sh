#!/usr/bin/env bash
# Installs what building and testing the relay needs, only when it is missing.
set -euo pipefail

need=()
have_pkg() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
pkgs=(libevent-dev libhttp-parser-dev libssl-dev libsqlite3-dev libpq-dev pkg-config curl python3)
# --fuzz: Debian's clang with its libFuzzer and sanitizer runtimes (make fuzz, make test-tsan).
[ "${1:-}" = "--fuzz" ] && pkgs+=(clang-14 libclang-rt-14-dev)
# --test: what the suite drives as a person or an operator would: a headless browser for the
# demo page, Prometheus (and its promtool) scraping /metrics, systemd-analyze for the units;
# relay-bench's baselines (nginx, haproxy, wrk, mosquitto), so its small run covers them; and
# a real Linux NAT between network namespaces for test_nat_netns.py (ip, nft, conntrack); and
# a PostgreSQL 15 server that test_store_postgres.py starts throwaway clusters of (pgserver.py);
# keepalived (VRRP) moving the floating addresses of Tests/cluster's three-node site.
[ "${1:-}" = "--test" ] && pkgs+=(chromium prometheus systemd nginx-light haproxy wrk mosquitto \
                                 iproute2 nftables conntrack postgresql keepalived)
for pkg in "${pkgs[@]}"; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# --test and --cross: the device agent built for other CPUs (make agent-cross) and run under
# qemu-user-static: Debian's cross compilers, musl for the static x86-64 build, and an
# sshd/ssh pair for the footprint bench's `ssh -R` baseline. The targets' libssl and libevent
# are not installed system-wide: scripts/cross-sysroot.sh downloads their Debian packages
# (armhf, mipsel: bookworm release architectures) into .build-cross/, since multiarch would
# require the same version as the host's packages, which mipsel (no security updates) lacks.
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--cross" ]; then
  cross=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross gcc-mipsel-linux-gnu libc6-dev-mipsel-cross qemu-user-static musl-tools openssh-server openssh-client)
  cneed=()
  for pkg in "${cross[@]}"; do have_pkg "$pkg" || cneed+=("$pkg"); done
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  added=0
  foreign=$(dpkg --print-foreign-architectures)
  for arch in armhf mipsel; do
    grep -qx "$arch" <<<"$foreign" || { $SUDO dpkg --add-architecture "$arch"; added=1; }
  done
  if [ ${#cneed[@]} -gt 0 ] || [ $added = 1 ] || ! apt-cache show libssl-dev:mipsel >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    if [ ${#cneed[@]} -gt 0 ]; then
      echo "setup: installing ${cneed[*]}" >&2
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${cneed[@]}" >/dev/null
    fi
  fi
fi
if [ "${1:-}" = "--test" ]; then
  python3 -c 'import pytest, requests, cryptography' 2>/dev/null || python3 -m pip install -q pytest requests cryptography
fi

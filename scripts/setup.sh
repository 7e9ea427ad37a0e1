#!/usr/bin/env bash
# Installs what building and testing the relay needs, only when it is missing.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkgs=(libevent-dev libhttp-parser-dev libssl-dev libsqlite3-dev pkg-config curl python3)
# --fuzz: Debian's clang with its libFuzzer and sanitizer runtimes (make fuzz, make test-tsan).
[ "${1:-}" = "--fuzz" ] && pkgs+=(clang-14 libclang-rt-14-dev)
# --test: what the suite drives as a person or an operator would: a headless browser for the
# demo page, Prometheus (and its promtool) scraping /metrics, systemd-analyze for the units;
# relay-bench's baselines (nginx, haproxy, wrk, mosquitto), so its small run covers them; and
# a real Linux NAT between network namespaces for test_nat_netns.py (ip, nft, conntrack).
[ "${1:-}" = "--test" ] && pkgs+=(chromium prometheus systemd nginx-light haproxy wrk mosquitto \
                                 iproute2 nftables conntrack)
for pkg in "${pkgs[@]}"; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  python3 -c 'import pytest, requests, cryptography' 2>/dev/null || python3 -m pip install -q pytest requests cryptography
fi

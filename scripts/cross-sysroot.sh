#!/usr/bin/env bash
# The target's libraries for cross-building relay-agent: Debian's own armhf/mipsel packages of
# OpenSSL, libevent and http-parser (its header only), downloaded with apt-get download and
# unpacked into .build-cross/ARCH/sysroot. Not installed with dpkg: multiarch requires the same
# version as the host's packages, and mipsel (no longer in bookworm-security) lags behind.
# The C library comes from the cross compiler's own (/usr/TRIPLET). Idempotent: kept once unpacked.
#   scripts/cross-sysroot.sh armhf|mipsel|arm64
set -euo pipefail
arch=$1
root=".build-cross/$arch"
sysroot="$root/sysroot"
[ -e "$sysroot/.done" ] && exit 0
dpkg --print-foreign-architectures | grep -qx "$arch" || { echo "cross-sysroot: run scripts/setup.sh --cross first ($arch)" >&2; exit 1; }
mkdir -p "$root/debs" "$sysroot"
pkgs=(libssl3 libssl-dev libevent-core-2.1-7 libevent-dev libhttp-parser-dev)
( cd "$root/debs" && apt-get download -q "${pkgs[@]/%/:$arch}" 2>&1 >/dev/null | grep -v "unsandboxed" >&2 || true )
for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
ls "$sysroot"/usr/lib/*/libssl.so "$sysroot"/usr/lib/*/libevent_core.so >/dev/null || { echo "cross-sysroot: download failed" >&2; exit 1; }
touch "$sysroot/.done"
echo "cross-sysroot: $sysroot"

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
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# The foreign architecture must be known to dpkg and apt's lists must hold its packages. Both
# are checked here rather than assumed from an earlier setup step (no pipe into grep -q: under
# pipefail a writer cut short by grep's early exit would read as "missing").
foreign=$(dpkg --print-foreign-architectures)
if ! grep -qx "$arch" <<<"$foreign"; then
  echo "cross-sysroot: adding the $arch architecture to dpkg" >&2
  $SUDO dpkg --add-architecture "$arch"
  $SUDO apt-get update -qq
fi
mkdir -p "$root/debs" "$sysroot"
pkgs=(libssl3 libssl-dev libevent-core-2.1-7 libevent-dev libhttp-parser-dev)
download() { ( cd "$root/debs" && apt-get download -q "${pkgs[@]/%/:$arch}" >/dev/null 2>"../download.err" ); }
if ! download; then
  echo "cross-sysroot: $arch packages not in apt's lists yet; updating them" >&2
  $SUDO apt-get update -qq
  download || { grep -v unsandboxed "$root/download.err" >&2; echo "cross-sysroot: apt-get download failed ($arch)" >&2; exit 1; }
fi
for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
ls "$sysroot"/usr/lib/*/libssl.so "$sysroot"/usr/lib/*/libevent_core.so >/dev/null || { echo "cross-sysroot: download failed" >&2; exit 1; }
touch "$sysroot/.done"
echo "cross-sysroot: $sysroot"

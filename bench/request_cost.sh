#!/usr/bin/env bash
# The relay's own instructions per small keep-alive request, counted by callgrind (see
# bench/request_cost.c). Usage: bench/request_cost.sh [SOURCE_TREE]   (default: this one)
# Prints the total for N1 and N2 requests and their difference per request, then the
# functions that account for it. Instruction counts are reproducible run to run.
set -euo pipefail
tree="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/request_cost.$$"
mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
n1=${N1:-500}
n2=${N2:-1500}
cc -g -O2 -std=gnu11 -I"$tree/Sources/CRelayCore/include" -I"$tree/Sources/CRelayCore" -I"$tree/Tests/fuzz" \
  "$tree"/Sources/CRelayCore/*.c "$here/request_cost.c" -o "$out/request_cost" \
  -levent_core -levent_pthreads -lhttp_parser -lssl -lcrypto -lpthread
for n in "$n1" "$n2"; do
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" "$out/request_cost" "$n" >"$out/log.$n" 2>&1 ||
    { cat "$out/log.$n"; exit 1; }
done
ir() { awk '/^summary:/ {print $2}' "$1"; }
a=$(ir "$out/cg.$n1"); b=$(ir "$out/cg.$n2")
echo "instructions: $a for $n1 requests, $b for $n2"
echo "per request: $(( (b - a) / (n2 - n1) ))"
callgrind_annotate --inclusive=no "$out/cg.$n2" 2>/dev/null | sed -n '/^Ir/,$p' | head -${TOP:-25}

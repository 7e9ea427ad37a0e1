#!/usr/bin/env bash
# The loop-thread scaling series (issue "Every core of a node"), for a machine bigger than
# the one it is built on, which needs no Swift toolchain:
#
#   bench/scale.sh pack [OUT.tar.gz]   here: builds relay and relay-bench with the Swift
#                                      runtime linked in (--static-swift-stdlib) and writes a
#                                      tarball: bin/ (both, rpath $ORIGIN/../lib), lib/ (the
#                                      exact libevent, OpenSSL, http-parser, SQLite, libstdc++
#                                      ... files they load), scale.sh, MANIFEST
#   ./scale.sh run [options]           there, in the extracted directory: relay-bench
#                                      --threads 1,2,4,8,16 (ingest from several sender
#                                      threads, wakes at high concurrency), then the scaling
#                                      efficiency rate(N) / (N x rate(1)) of each rate
#
# run's options (each also as a variable: THREADS=, DEVICES=, ...):
#   --threads LIST      loop thread counts (default 1,2,4,8,16)
#   --devices N         simulated devices (default 200000)
#   --duration S        relay-bench --duration per run (default 10)
#   --senders K         steady-state sender threads (default: CPUs / 4, 1 to 16)
#   --concurrency LIST  wake concurrency levels (default 64,512)
#   --budget S          the whole series is stopped after S seconds (default 570)
#   --smoke             a short series to check the kit works: threads 1,2, 5000 devices,
#                       duration 2 (the figures mean nothing)
#   --out DIR           where the table and JSON go (default ./scale-results-<time>)
#
# Everything runs on loopback. Every process the series starts is in one process group that
# is stopped (SIGTERM, then SIGKILL) when the script exits, however it exits.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "scale.sh: $*" >&2; exit 2; }

# ---------------------------------------------------------------- pack

stage=""

pack() {
  local repo out scratch name bin lib
  repo="$(cd "$here/.." && pwd)"
  [ -f "$repo/Package.swift" ] || die "pack runs in the source tree (bench/scale.sh pack); this is an extracted kit"
  command -v swift >/dev/null || die "pack needs the Swift toolchain (swift on PATH)"
  scratch="$repo/.build-static"
  out="${1:-$scratch/relay-scale.tar.gz}"
  case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
  echo "scale.sh pack: swift build -c release --static-swift-stdlib --scratch-path .build-static (cold: 10+ minutes)"
  # $ORIGIN/../lib: the binaries find the shipped libraries without a wrapper.
  (cd "$repo" && swift build -c release --static-swift-stdlib --scratch-path "$scratch" \
     --product relay -Xlinker -rpath -Xlinker '$ORIGIN/../lib')
  (cd "$repo" && swift build -c release --static-swift-stdlib --scratch-path "$scratch" \
     --product relay-bench -Xlinker -rpath -Xlinker '$ORIGIN/../lib')
  bin="$(cd "$repo" && swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)"
  name="relay-scale"
  stage="$(mktemp -d "${TMPDIR:-/tmp}/relay-scale-pack.XXXXXX")"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/$name/bin" "$stage/$name/lib"
  cp "$bin/relay" "$bin/relay-bench" "$stage/$name/bin/"
  strip --strip-debug "$stage/$name/bin/relay" "$stage/$name/bin/relay-bench" 2>/dev/null || true
  cp "$here/scale.sh" "$stage/$name/scale.sh"
  chmod 755 "$stage/$name/scale.sh"
  # Every shared object the binaries load but glibc's own (the target has those; glibc must
  # be at least as new as this machine's), copied as the file the name resolves to.
  lib="$stage/$name/lib"
  local so path
  for b in relay relay-bench; do
    ldd "$bin/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
  done | sort -u | while read -r so path; do
    case "$so" in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*|libutil.so.*) continue ;;
      libswift*|libFoundation*|lib_FoundationICU*|libdispatch*|libBlocksRuntime*)
        die "$so is still dynamic ($path): --static-swift-stdlib did not take" ;;
    esac
    cp -L "$path" "$lib/$so"
  done
  {
    echo "relay-scale kit"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    echo "commit: $(cd "$repo" && git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "swift: $(swift --version 2>&1 | head -1)"
    echo "glibc: $(ldd --version 2>&1 | head -1)"
    echo "libraries shipped in lib/:"
    (cd "$lib" && ls -1 | sed 's/^/  /')
    echo "run: ./scale.sh run   (./scale.sh run --smoke to check the kit first)"
  } > "$stage/$name/MANIFEST"
  mkdir -p "$(dirname "$out")"
  tar -C "$stage" -czf "$out" "$name"
  echo "scale.sh pack: wrote $out ($(du -h "$out" | cut -f1)); on the target: tar xzf $(basename "$out") && cd $name && ./scale.sh run"
}

# ---------------------------------------------------------------- run

run() {
  local threads="${THREADS:-1,2,4,8,16}" devices="${DEVICES:-200000}" duration="${DURATION:-10}"
  local senders="${SENDERS:-}" concurrency="${CONCURRENCY:-64,512}" budget="${BUDGET:-570}" smoke=0
  out="${OUT:-}"  # global: the EXIT trap removes $out/tmp after run has returned
  while [ $# -gt 0 ]; do
    case "$1" in
      --threads) threads="${2:?--threads needs a list}"; shift 2 ;;
      --devices) devices="${2:?--devices needs a number}"; shift 2 ;;
      --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
      --senders) senders="${2:?--senders needs a number}"; shift 2 ;;
      --concurrency) concurrency="${2:?--concurrency needs a list}"; shift 2 ;;
      --budget) budget="${2:?--budget needs seconds}"; shift 2 ;;
      --out) out="${2:?--out needs a directory}"; shift 2 ;;
      --smoke) smoke=1; shift ;;
      -h|--help) sed -n '2,30p' "$here/scale.sh"; return 0 ;;
      *) die "run: unknown option '$1' (see ./scale.sh --help)" ;;
    esac
  done
  if [ "$smoke" = 1 ]; then
    threads=1,2 devices=5000 duration=2 concurrency=8,64 budget=240
  fi
  local cpus
  cpus="$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
  [ -n "$senders" ] || senders=$(( cpus / 4 < 1 ? 1 : (cpus / 4 > 16 ? 16 : cpus / 4) ))
  [[ "$threads" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--threads: '$threads' is not a comma list of counts, e.g. 1,2,4,8,16"
  [[ "$devices" =~ ^[0-9]+$ ]] || die "--devices: '$devices' is not a whole number"
  [[ "$senders" =~ ^[0-9]+$ ]] || die "--senders: '$senders' is not a whole number"
  [[ "$budget" =~ ^[0-9]+$ ]] && [ "$budget" -ge 30 ] && [ "$budget" -le 3600 ] ||
    die "--budget: '$budget' is not a number of seconds from 30 to 3600"
  [[ "$duration" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--duration: '$duration' is not a number of seconds"

  local benchbin
  if [ -x "$here/bin/relay-bench" ]; then
    benchbin="$here/bin/relay-bench"                       # an extracted kit
  elif [ -x "$here/../.build-static/release/relay-bench" ]; then
    benchbin="$(cd "$here/../.build-static/release" && pwd)/relay-bench"  # the source tree, after pack
  else
    die "no relay-bench: run ./scale.sh run in an extracted kit, or bench/scale.sh pack first"
  fi
  [ -x "$(dirname "$benchbin")/relay" ] || die "no relay next to $benchbin"
  # The shipped libraries, should the rpath not be honoured (a setuid shell, a noexec mount).
  if [ -d "$here/lib" ]; then export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi

  [ -n "$out" ] || out="$PWD/scale-results-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$out"
  local max
  max="$(tr ',' '\n' <<<"$threads" | sort -n | tail -1)"
  {
    echo "scale.sh run: threads $threads, $devices devices, duration $duration s per measurement, $senders sender threads,"
    echo "  wake concurrency $concurrency, budget $budget s; $cpus CPUs; results in $out"
    if [ "$smoke" = 1 ]; then
      echo "  SMOKE RUN: a check that the kit runs; with these durations and this machine the figures mean little"
    fi
    if [ "$cpus" -lt $(( 2 * max )) ]; then
      echo "  note: $cpus CPUs for up to $max relay loops plus the bench's senders, terminals and devices:"
      echo "        the relay and the load share cores, so the efficiency at the top counts is the machine's, not the relay's"
    fi
    echo "  net.core.rmem_max=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo ?) (the relay asks for 8 MiB per UDP socket; less means kernel drops)"
  } | tee "$out/summary.txt"

  # The bench (and every relay, nginx it starts) in a process group of its own, stopped on
  # any exit; its wall time bounded by the budget.
  pid=""
  # relay-bench stops its own children on SIGTERM; its direct children are also noted first
  # and stopped by PID, in case it cannot (they may sit in process groups of their own).
  children_of() {
    local f
    for f in /proc/[0-9]*/stat; do
      awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) { split(FILENAME, a, "/"); print a[3] } }' "$f" 2>/dev/null || true
    done
  }
  stop_group() {
    [ -n "$pid" ] || return 0
    local kids i k
    kids="$(children_of "$pid")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for i in $(seq 1 150); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    for k in $kids; do kill -TERM "$k" 2>/dev/null || true; done
    for i in $(seq 1 50); do
      local alive=0
      for k in $kids; do kill -0 "$k" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
    pid=""
  }
  # relay-bench's temp directories (stores, logs) go under $out/tmp, removed at exit: a
  # bench stopped by a signal cannot remove its own.
  mkdir -p "$out/tmp"
  trap 'stop_group; rm -rf "$out/tmp"' EXIT
  trap 'stop_group; rm -rf "$out/tmp"; exit 130' INT TERM
  TMPDIR="$out/tmp" setsid "$benchbin" --threads "$threads" --devices "$devices" --duration "$duration" --senders "$senders" \
    --phases steady,wakes --concurrency "$concurrency" --json "$out/scale.json" \
    >"$out/relay-bench.txt" 2>"$out/relay-bench.log" &
  pid=$!
  local deadline=$(( SECONDS + budget )) rc=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "scale.sh run: the series passed its budget of $budget s: stopped (see $out/relay-bench.log)" | tee -a "$out/summary.txt"
      stop_group
      return 1
    fi
    sleep 1
  done
  wait "$pid" || rc=$?
  pid=""
  if [ "$rc" != 0 ]; then
    echo "scale.sh run: relay-bench failed ($rc):" >&2
    tail -20 "$out/relay-bench.log" >&2
    tail -20 "$out/relay-bench.txt" >&2
    return 1
  fi
  sed -n '/\[scaling\]/,$p' "$out/relay-bench.txt" | tee -a "$out/summary.txt"
  # The efficiency of each rate at each count, and the goal at the top count.
  awk -v max="$max" -v smoke="$smoke" '
    /\[scaling\]/ { on = 1; next }
    !on { next }
    /^  figure/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^threads=/) { sub("threads=", "", $i); t[++n] = $i } ; next }
    /^  [a-z]/ && !/scaling efficiency/ { label = $0; sub(/^  /, "", label); sub(/  +[-0-9.,n\/a ]+$/, "", label); next }
    /scaling efficiency/ {
      line = $0; sub(/^.*x rate\([0-9]+\)\)/, "", line); k = split(line, v, " ")
      printf "  efficiency %-48s", label
      for (i = 1; i <= k && i <= n; i++) printf "  N=%s: %s", t[i], v[i]
      printf "\n"
      if (t[n] == max && max >= 16) goal = goal sprintf("  goal >= 0.8 at %s loops, %s: %s (%s)\n", max, label, v[n], (v[n] + 0 >= 0.8 ? "met" : "missed"))
    }
    END {
      printf "%s", goal
      if (smoke == 1) print "  (smoke run: these efficiencies mean little)"
    }' "$out/relay-bench.txt" | tee -a "$out/summary.txt"
  echo "scale.sh run: table $out/relay-bench.txt, JSON $out/scale.json, summary $out/summary.txt"
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  -h|--help|"") sed -n '2,30p' "$here/scale.sh"; [ -n "${1:-}" ] ;;
  *) die "unknown command '$1': pack or run (see bench/scale.sh --help)" ;;
esac

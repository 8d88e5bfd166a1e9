#!/usr/bin/env bash
# `img convert` beside `qemu-img convert` on 1 GiB of random data (issue 16), in one run:
# raw -> qcow2, qcow2 -> raw and raw -> qcow2 -c (random data does not compress, so -c costs
# one compression attempt per cluster and the clusters are written plainly, by both tools).
# The tools run interleaved RUNS times per case; prints each run, the medians and their
# ratio, and checks every output with `qemu-img compare` (and `qemu-img check` for qcow2).
# Both read the source from the page cache after the first run. Usage:
#   scripts/bench-convert.sh [RUNS] [SIZE]     (defaults 3, 1G)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SIZE=${2:-1G}
QEMU_IMG=${QEMU_IMG:-qemu-img}
DIR=target/strata/convert-bench
STRATA=target/release/qemu-runner

cargo build -q --release -p qemu-runner
rm -rf "$DIR"
mkdir -p "$DIR"
head -c "$SIZE" /dev/urandom > "$DIR/src.raw"
"$QEMU_IMG" convert -f raw -O qcow2 "$DIR/src.raw" "$DIR/src.qcow2"

ms() { # command... -> elapsed milliseconds
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

run_case() { # NAME SRC OUTFMT [convert options...]
    local name=$1 src=$2 fmt=$3
    shift 3
    local ours=() theirs=() r a b
    for r in $(seq 1 "$RUNS"); do
        rm -f "$DIR/ours.out" "$DIR/theirs.out"
        a=$(ms "$STRATA" img convert "$@" -O "$fmt" "$src" "$DIR/ours.out")
        b=$(ms "$QEMU_IMG" convert "$@" -O "$fmt" "$src" "$DIR/theirs.out")
        echo "  $name run $r: strata ${a} ms, qemu-img ${b} ms"
        ours+=("$a") theirs+=("$b")
    done
    "$QEMU_IMG" compare -q "$src" "$DIR/ours.out"
    if [ "$fmt" = qcow2 ]; then "$QEMU_IMG" check -q "$DIR/ours.out"; fi
    local mo mt
    mo=$(printf '%s\n' "${ours[@]}" | median)
    mt=$(printf '%s\n' "${theirs[@]}" | median)
    echo "$name: median strata ${mo} ms, qemu-img ${mt} ms, strata/qemu-img $(awk -v a="$mo" -v b="$mt" 'BEGIN {printf "%.2f", a / b}')"
}

echo "$("$QEMU_IMG" --version | head -1); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
run_case "raw->qcow2" "$DIR/src.raw" qcow2
run_case "qcow2->raw" "$DIR/src.qcow2" raw
run_case "raw->qcow2 -c" "$DIR/src.raw" qcow2 -c
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

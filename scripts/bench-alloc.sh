#!/usr/bin/env bash
# Allocating qcow2 writes side by side: `qemu-runner img bench -w -S <cluster>` (Strata) and
# `qemu-img bench` with the same flags, each run on a fresh overlay (4 KiB writes, one per
# cluster, -t writeback), plus the overwrite of the same clusters on a second pass. Prints the
# median IOPS of RUNS runs and the ratios. Usage:
#   scripts/bench-alloc.sh [DIR] [RUNS] [COUNT]    (default: target/strata/bench-alloc, 3, 16000)
# Cases: an overlay over an empty qcow2 (copy-on-write reads zeros), over a raw file of data
# (64 KiB copied per write), and the same with extended_l2=on (4 KiB writes copy nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/strata/bench-alloc}
RUNS=${2:-3}
COUNT=${3:-16000}
QEMU_IMG=${QEMU_IMG:-qemu-img}
cargo build -q --release -p qemu-runner
STRATA=$PWD/target/release/qemu-runner
mkdir -p "$DIR"
cd "$DIR"
size=$((COUNT * 64 / 1024 + 64))M
[ -f empty.qcow2 ] || "$QEMU_IMG" create -q -f qcow2 empty.qcow2 "$size"
if [ ! -f data.raw ]; then
    "$QEMU_IMG" create -q -f raw data.raw "$size"
    dd if=/dev/urandom of=data.raw bs=1M count="${size%M}" conv=notrunc status=none
fi

iops() { awk -v c="$1" '/Run completed in/ { printf "%d\n", c / $4 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# run TOOL BACKING BFMT OPTS DEPTH PASSES: IOPS of the last pass on a fresh overlay.
run() {
    local tool=$1 backing=$2 bfmt=$3 opts=$4 depth=$5 passes=$6
    rm -f top.qcow2
    "$QEMU_IMG" create -q -f qcow2 -o "$opts" -b "$backing" -F "$bfmt" top.qcow2
    local flags="-w -t writeback -d $depth -c $COUNT -S 65536 -f qcow2"
    for _ in $(seq "$passes"); do
        if [ "$tool" = strata ]; then "$STRATA" img bench $flags top.qcow2; else "$QEMU_IMG" bench $flags top.qcow2; fi
    done | tail -n 2 | iops "$COUNT" | tail -n 1
}

printf "%-44s %10s %10s %6s   %10s %14s\n" "case (4 KiB, -S 64k)" "strata" "qemu-img" "ratio" "overwrite" "alloc/overwr."
for case in "empty.qcow2 qcow2 cluster_size=65536" "data.raw raw cluster_size=65536" "data.raw raw cluster_size=65536,extended_l2=on"; do
    set -- $case
    for depth in 1 32; do
        s=$(for _ in $(seq "$RUNS"); do run strata "$1" "$2" "$3" "$depth" 1; done | median)
        q=$(for _ in $(seq "$RUNS"); do run qemu "$1" "$2" "$3" "$depth" 1; done | median)
        o=$(for _ in $(seq "$RUNS"); do run strata "$1" "$2" "$3" "$depth" 2; done | median)
        printf "%-44s %10s %10s %6s   %10s %14s\n" "over $1 ($3) -d $depth" "$s" "$q" "$(ratio "$s" "$q")" "$o" "$(ratio "$s" "$o")"
    done
done

#!/usr/bin/env bash
# `img convert -O raw` of a huge sparse qcow2 beside `qemu-img convert -O raw`, in one run (issue
# 14: block status drives convert). The qcow2 is as large as the file system lets the raw output
# be (found by growing a sparse file: ext4 with 4 KiB blocks stops at 16 TiB - 4 KiB), with a few
# MiB of data written by qemu-io at scattered offsets (the first and last bytes, 1 GiB, every TiB)
# and a zeroed range; a second image does the same with 4 KiB clusters (8 TiB: the largest size
# qemu-img allows with them), where a mostly empty L1 table has 2 Mi entries. The tools run
# interleaved RUNS times; prints each run and the medians, and checks the outputs equal with
# `qemu-img compare`. Usage:
#   scripts/bench-convert-sparse.sh [RUNS]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
QEMU_IMG=${QEMU_IMG:-qemu-img}
QEMU_IO=${QEMU_IO:-qemu-io}
DIR=target/strata/convert-sparse
STRATA=target/release/qemu-runner

cargo build -q --release -p qemu-runner
rm -rf "$DIR"
mkdir -p "$DIR"

# The largest raw file this file system takes, down from 16 TiB in 4 KiB steps (at most 64 TiB
# tried first).
SIZE=$((64 << 40))
while ! truncate -s "$SIZE" "$DIR/probe" 2>/dev/null; do
    if [ "$SIZE" -gt $((16 << 40)) ]; then SIZE=$((16 << 40)); else SIZE=$((SIZE - 4096)); fi
    [ "$SIZE" -gt 0 ] || { echo "no sparse file possible here"; exit 1; }
done
rm -f "$DIR/probe"
echo "largest raw output here: $SIZE bytes ($((SIZE >> 30)) GiB - $(( (1 << 44) - SIZE )) B short of 16 TiB)"

make_image() { # NAME SIZE CLUSTER
    local img=$DIR/$1 size=$2
    "$QEMU_IMG" create -q -f qcow2 -o cluster_size="$3" "$img" "$size"
    local cmds=(-c "write -P 0x11 0 1M" -c "write -P 0x22 1G 512k" -c "write -z 2G 1M" -c "write -P 0x33 $((size - 65536)) 64k")
    local t
    for t in $(seq 1 $(( (size >> 40) - 1 ))); do cmds+=(-c "write -P $((t % 200 + 1)) $((t << 40)) 256k"); done
    "$QEMU_IO" -f qcow2 "${cmds[@]}" "$img" >/dev/null
}
make_image big64k.qcow2 "$SIZE" 64k
make_image big4k.qcow2 $((8 << 40)) 4k

ms() { # command... -> elapsed milliseconds
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

for img in big64k.qcow2 big4k.qcow2; do
    src=$DIR/$img
    echo "== $img: $("$QEMU_IMG" info "$src" | sed -n 's/^virtual size: //p'), $(du -k "$src" | cut -f1) KiB on disk"
    ours=() theirs=()
    for r in $(seq 1 "$RUNS"); do
        rm -f "$DIR/ours.raw" "$DIR/theirs.raw"
        a=$(ms "$STRATA" img convert -O raw "$src" "$DIR/ours.raw")
        b=$(ms "$QEMU_IMG" convert -O raw "$src" "$DIR/theirs.raw")
        echo "run $r: strata ${a} ms, qemu-img ${b} ms"
        ours+=("$a") theirs+=("$b")
    done
    "$QEMU_IMG" compare -q -f raw -F raw "$DIR/ours.raw" "$DIR/theirs.raw" || { echo "outputs differ"; exit 1; }
    echo "outputs identical; disk use: strata $(du -k "$DIR/ours.raw" | cut -f1) KiB, qemu-img $(du -k "$DIR/theirs.raw" | cut -f1) KiB"
    echo "median: strata $(printf '%s\n' "${ours[@]}" | median) ms, qemu-img $(printf '%s\n' "${theirs[@]}" | median) ms"
    rm -f "$DIR/ours.raw" "$DIR/theirs.raw"
done

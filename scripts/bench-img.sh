#!/usr/bin/env bash
# Side by side: `qemu-runner img bench` (Strata's block layer) and `qemu-img bench` on the same
# raw file with the same flags, QD1 and QD32, reads and writes, -t writeback and -t none.
# Prints the median IOPS of RUNS runs of each and their ratio. Usage:
#   scripts/bench-img.sh [FILE] [RUNS]     (default: target/strata/bench.img, 3 runs)
# FILE must be on a file system with O_DIRECT (not tmpfs); it is created (1 GiB, random) if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${1:-target/strata/bench.img}
RUNS=${2:-3}
QEMU_IMG=${QEMU_IMG:-qemu-img}
cargo build -q --release -p qemu-runner
STRATA=target/release/qemu-runner
mkdir -p "$(dirname "$FILE")"
if [ ! -f "$FILE" ]; then
    "$QEMU_IMG" create -q -f raw "$FILE" 1G
    dd if=/dev/urandom of="$FILE" bs=1M count=1024 conv=notrunc status=none
fi

# seconds -> IOPS for COUNT requests, from "Run completed in X seconds."
iops() { awk -v c="$1" '/Run completed in/ { printf "%d\n", c / $4 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

printf "%-34s %12s %12s %7s\n" "flags (-f raw, 4 KiB)" "strata IOPS" "qemu-img" "ratio"
for cache in writeback none; do
    for rw in read write; do
        for depth in 1 32; do
            if [ "$cache" = writeback ]; then count=$([ "$rw" = read ] && echo 200000 || echo 100000)
            else count=$([ "$depth" = 1 ] && echo 20000 || echo 60000); fi
            flags="-t $cache -d $depth -c $count"
            [ "$rw" = write ] && flags="$flags -w"
            s=$(for _ in $(seq "$RUNS"); do "$STRATA" img bench $flags -f raw "$FILE" | iops "$count"; done | median)
            q=$(for _ in $(seq "$RUNS"); do "$QEMU_IMG" bench $flags -f raw "$FILE" | iops "$count"; done | median)
            printf "%-34s %12s %12s %7s\n" "$rw $flags" "$s" "$q" "$(awk -v a="$s" -v b="$q" 'BEGIN { printf "%.2f", a / b }')"
        done
    done
done

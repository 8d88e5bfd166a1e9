#!/usr/bin/env bash
# Strata beside the other Rust qcow2 implementations (imago, qcow2-rs, through peers/'s
# `peer-bench`) and `qemu-img bench`, on the same qcow2 images with the same qemu-img bench flags:
# reads at QD1 and QD32, -t writeback. The tools run interleaved (A B C D E, A B C D E, ...) RUNS
# times; prints the median IOPS of each, and Strata's ratio to the best of the three peers. The
# `pread` column is no qcow2 at all: the same 4 KiB requests as plain preads of the raw source file
# (from min(depth, cores) threads), the floor on this machine. Usage:
#   scripts/bench-peers.sh [RUNS]      (default 7)
# Images (made once, under target/strata/peers/, ~2.7 GiB; delete the folder to remake them):
#   source.raw   1 GiB of random data;
#   full.qcow2   `qemu-img convert -O qcow2` of it: every cluster allocated;
#   chain.qcow2  a 3-deep chain of the same data: full.qcow2 as the base (it has everything),
#                chain-mid.qcow2 over it rewriting every third 16 MiB stripe (stripes 1, 4, 7, ...)
#                and chain.qcow2 over that rewriting another third (stripes 2, 5, 8, ...), with the
#                source's own bytes (qemu-io write -s), so the chain reads like source.raw and each
#                layer serves a third of the reads.
# Before timing, each library reads each image whole at QD1 and QD32 and compares every byte with
# source.raw (peer-bench --verify); a difference stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
QEMU_IMG=${QEMU_IMG:-qemu-img}
QEMU_IO=${QEMU_IO:-qemu-io}
DIR=target/strata/peers
STRATA=target/release/qemu-runner
PEER=peers/target/release/peer-bench

cargo build -q --release -p qemu-runner
cargo build -q --release --manifest-path peers/Cargo.toml

mkdir -p "$DIR"
RAW=$DIR/source.raw
if [ ! -f "$RAW" ]; then
    dd if=/dev/urandom of="$RAW.tmp" bs=1M count=1024 status=none
    mv "$RAW.tmp" "$RAW"
fi
if [ ! -f "$DIR/full.qcow2" ]; then
    "$QEMU_IMG" convert -f raw -O qcow2 "$RAW" "$DIR/full.qcow2.tmp"
    mv "$DIR/full.qcow2.tmp" "$DIR/full.qcow2"
fi
if [ ! -f "$DIR/chain.qcow2" ]; then
    rm -f "$DIR"/chain-mid.qcow2 "$DIR"/chain.qcow2.tmp
    mkdir -p "$DIR/stripes"
    # backing names are relative, resolved against the referring image's folder
    "$QEMU_IMG" create -q -f qcow2 -b full.qcow2 -F qcow2 "$DIR/chain-mid.qcow2"
    "$QEMU_IMG" create -q -f qcow2 -b chain-mid.qcow2 -F qcow2 "$DIR/chain.qcow2.tmp"
    for layer in 1 2; do
        img=$([ "$layer" = 1 ] && echo "$DIR/chain-mid.qcow2" || echo "$DIR/chain.qcow2.tmp")
        cmds=()
        for ((i = layer; i < 64; i += 3)); do
            dd if="$RAW" of="$DIR/stripes/$i" bs=16M skip="$i" count=1 status=none
            cmds+=(-c "write -q -s $DIR/stripes/$i $((i * 16))M 16M")
        done
        "$QEMU_IO" -f qcow2 "${cmds[@]}" "$img"
        rm -f "$DIR"/stripes/*
    done
    rmdir "$DIR/stripes"
    "$QEMU_IMG" compare -q "$DIR/chain.qcow2.tmp" "$RAW"
    mv "$DIR/chain.qcow2.tmp" "$DIR/chain.qcow2"
fi

# The content checks: every byte of each image through each library, at QD1 and QD32.
for img in full chain; do
    for lib in imago qcow2-rs; do
        for depth in 1 32; do
            "$PEER" "$lib" -s 64k -c 16384 -d "$depth" -f qcow2 --verify "$RAW" "$DIR/$img.qcow2" >/dev/null
        done
    done
done

ver() { awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/[^0-9.]/, ""); print }' peers/Cargo.lock; }
echo "strata $(git describe --always --dirty); imago $(ver imago) (sync feature, min(depth, $(nproc))"\
    "threads); qcow2-rs $(ver qcow2-rs) (sync engine: faster than its tokio-uring $(ver tokio-uring)"\
    "engine on page-cached reads, see peers/src/main.rs); $("$QEMU_IMG" --version | head -1)"
echo "reads verified against $RAW for imago and qcow2-rs (whole image, QD1 and QD32)"
echo "median IOPS of $RUNS interleaved runs, 4 KiB reads, -t writeback, -c 200000"

# seconds -> IOPS for COUNT requests, from "Run completed in X seconds."
iops() { awk -v c="$1" '/Run completed in/ { printf "%d\n", c / $4 }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

tools=(strata imago qcow2-rs qemu-img pread)
printf "%-12s %-5s %10s %10s %10s %10s %10s %22s\n" image test "${tools[@]}" "strata / best peer"
for img in full chain; do
    for depth in 1 32; do
        count=200000
        flags="-t writeback -d $depth -c $count"
        declare -A got=()
        for _ in $(seq "$RUNS"); do
            for tool in "${tools[@]}"; do
                case $tool in
                    strata) out=$("$STRATA" img bench $flags -f qcow2 "$DIR/$img.qcow2") ;;
                    imago | qcow2-rs) out=$("$PEER" "$tool" $flags -f qcow2 "$DIR/$img.qcow2") ;;
                    qemu-img) out=$("$QEMU_IMG" bench $flags -f qcow2 "$DIR/$img.qcow2") ;;
                    pread) out=$("$PEER" pread $flags -f raw "$RAW") ;;
                esac
                got[$tool]="${got[$tool]:-} $(iops "$count" <<<"$out")"
            done
        done
        declare -A med=()
        for tool in "${tools[@]}"; do med[$tool]=$(median <<<"${got[$tool]}"); done
        best=imago
        for tool in qcow2-rs qemu-img; do [ "${med[$tool]}" -gt "${med[$best]}" ] && best=$tool; done
        ratio=$(awk -v a="${med[strata]}" -v b="${med[$best]}" 'BEGIN { printf "%.2f", a / b }')
        printf "%-12s %-5s %10s %10s %10s %10s %10s %22s\n" "$img.qcow2" "QD$depth" \
            "${med[strata]}" "${med[imago]}" "${med[qcow2-rs]}" "${med[qemu-img]}" "${med[pread]}" \
            "$ratio (vs $best)"
        unset got med
    done
done

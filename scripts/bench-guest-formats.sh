#!/usr/bin/env bash
# What a format costs the guest: the Strata kernel's `bench` (TCG, microvm, QD32, 4 KiB) on the
# same data as raw, as a fully allocated qcow2 and through 8 empty qcow2 overlays (randread), and
# random writes into a raw file, an empty qcow2 and a qcow2 overlay over a raw base of random data
# (copy-on-write: 60 KiB copied per 4 KiB write with 64 KiB clusters). Each guest case boots RUNS
# times, interleaved, and the medians and their ratios to raw are printed. For the overlay, QEMU's
# own overlay/raw ratio is measured the same way on the host (`qemu-img bench -w -d 32`, 4 KiB at
# 64 KiB steps: one allocation per write) as the yardstick. Usage:
#   scripts/bench-guest-formats.sh [SECONDS] [RUNS]      (default: 3 s, 5 runs)
# Images live in target/strata/bench-formats/ (256 MiB each, made once). Needs qemu-img, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
RUNS=${2:-5}
QEMU_IMG=${QEMU_IMG:-qemu-img}
cargo build -q --release -p qemu-runner
RUNNER=$PWD/target/release/qemu-runner
DIR=target/strata/bench-formats
mkdir -p "$DIR"
cd "$DIR"
if [ ! -f base.raw ]; then
    "$QEMU_IMG" create -q -f raw base.raw 256M
    dd if=/dev/urandom of=base.raw bs=1M count=256 conv=notrunc status=none
fi
[ -f full.qcow2 ] || "$QEMU_IMG" convert -f raw -O qcow2 base.raw full.qcow2
prev=base.raw fmt=raw
for i in $(seq 1 8); do
    [ -f "chain-$i.qcow2" ] || "$QEMU_IMG" create -q -f qcow2 -b "$prev" -F "$fmt" "chain-$i.qcow2"
    prev=chain-$i.qcow2 fmt=qcow2
done

# guest DRIVE CMD: one boot, prints the bench record's IOPS.
guest() {
    "$RUNNER" boot --accel tcg --machine microvm --timeout $((SECS * 4 + 60)) --json \
        --drive "$1" --cmd "$2" > run.json 2>/dev/null || {
        echo "boot failed: $1 / $2" >&2
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("console") or r)' run.json >&2
        return 1
    }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print([x for x in r["records"] if x["type"] == "bench"][0]["iops"])' run.json
}
read_case() { guest "file=$1,format=$2,serial=d,read-only=on" "bench d --rw randread --bs 4k --qd 32 --seconds $SECS"; }
# write_case FORMAT: random writes into a fresh image of that kind.
write_case() {
    rm -f w.img
    case $1 in
        raw) "$QEMU_IMG" create -q -f raw w.img 256M; fmt=raw ;;
        qcow2) "$QEMU_IMG" create -q -f qcow2 w.img 256M; fmt=qcow2 ;;
        overlay) "$QEMU_IMG" create -q -f qcow2 -b base.raw -F raw w.img; fmt=qcow2 ;;
    esac
    guest "file=w.img,format=$fmt,serial=d" "bench d --rw randwrite --bs 4k --qd 32 --seconds $SECS"
}
# qemu_write KIND: qemu-img bench's allocating writes (one per 64 KiB cluster) on a fresh image.
qemu_write() {
    rm -f q.img
    case $1 in
        raw) "$QEMU_IMG" create -q -f raw q.img 256M; fmt=raw ;;
        overlay) "$QEMU_IMG" create -q -f qcow2 -b base.raw -F raw q.img; fmt=qcow2 ;;
    esac
    "$QEMU_IMG" bench -f "$fmt" -w -t writeback -d 32 -c 4000 -s 4096 -S 65536 q.img |
        awk '/Run completed in/ { printf "%d\n", 4000 / $4 }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A got
cases="r-raw r-qcow2 r-chain8 w-raw w-qcow2 w-overlay q-raw q-overlay"
for run in $(seq "$RUNS"); do
    got[r-raw]+=" $(read_case base.raw raw)"
    got[r-qcow2]+=" $(read_case full.qcow2 qcow2)"
    got[r-chain8]+=" $(read_case chain-8.qcow2 qcow2)"
    got[w-raw]+=" $(write_case raw)"
    got[w-qcow2]+=" $(write_case qcow2)"
    got[w-overlay]+=" $(write_case overlay)"
    got[q-raw]+=" $(qemu_write raw)"
    got[q-overlay]+=" $(qemu_write overlay)"
    echo "run $run of $RUNS done" >&2
done
rm -f w.img q.img run.json
declare -A med
for c in $cases; do med[$c]=$(echo ${got[$c]} | tr ' ' '\n' | median); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "Strata guest (TCG, microvm), 4 KiB, QD32, $SECS s per boot; medians of $RUNS interleaved runs; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-44s %10s %8s   %s\n" case IOPS "vs raw" runs
printf "%-44s %10s %8s   %s\n" "randread raw" "${med[r-raw]}" 1.00 "${got[r-raw]}"
printf "%-44s %10s %8s   %s\n" "randread fully allocated qcow2" "${med[r-qcow2]}" "$(ratio "${med[r-qcow2]}" "${med[r-raw]}")" "${got[r-qcow2]}"
printf "%-44s %10s %8s   %s\n" "randread 8 empty overlays over raw" "${med[r-chain8]}" "$(ratio "${med[r-chain8]}" "${med[r-raw]}")" "${got[r-chain8]}"
printf "%-44s %10s %8s   %s\n" "randwrite raw" "${med[w-raw]}" 1.00 "${got[w-raw]}"
printf "%-44s %10s %8s   %s\n" "randwrite empty qcow2" "${med[w-qcow2]}" "$(ratio "${med[w-qcow2]}" "${med[w-raw]}")" "${got[w-qcow2]}"
printf "%-44s %10s %8s   %s\n" "randwrite qcow2 overlay over raw (CoW)" "${med[w-overlay]}" "$(ratio "${med[w-overlay]}" "${med[w-raw]}")" "${got[w-overlay]}"
printf "%-44s %10s %8s   %s\n" "qemu-img bench -w -S 64k raw (host)" "${med[q-raw]}" 1.00 "${got[q-raw]}"
printf "%-44s %10s %8s   %s\n" "qemu-img bench -w -S 64k overlay (host)" "${med[q-overlay]}" "$(ratio "${med[q-overlay]}" "${med[q-raw]}")" "${got[q-overlay]}"

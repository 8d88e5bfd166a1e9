#!/usr/bin/env bash
# What a format costs the guest: the Strata kernel's `bench` (TCG, microvm, QD32, 4 KiB) on the
# same data as raw, as a fully allocated qcow2 and through 8 empty qcow2 overlays (randread), and
# random writes into a raw file, an empty qcow2 and a qcow2 overlay over a raw base of random data
# (copy-on-write: 60 KiB copied per 4 KiB write with 64 KiB clusters). Each guest case boots RUNS
# times, interleaved, and the medians and their ratios to raw are printed. For the overlay, QEMU's
# own overlay/raw ratio is measured the same way on the host (`qemu-img bench -w -d 32`, 4 KiB at
# 64 KiB steps: one allocation per write) as the yardstick. Usage:
#   scripts/bench-guest-formats.sh [SECONDS] [RUNS]      (default: 3 s, 5 runs)
#   CASES=read scripts/bench-guest-formats.sh 1 100      (only the read cases: many short runs)
# Each run boots its cases in a rotated order (run k starts k cases further on), so no case always
# follows the same one. Beside the ratio of the medians, each case's ratio to raw is taken run by
# run (against that run's raw boot) and their median printed with a 95% bootstrap interval: on a
# machine whose speed drifts from minute to minute (raw alone can range 35k-80k IOPS), a per-run
# ratio cancels what separate medians keep, and the interval says whether a few per cent can be
# told apart at all (at about 0.15 spread per run, that takes on the order of 100 runs).
# Images live in target/strata/bench-formats/ (256 MiB each, made once). Needs qemu-img, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
RUNS=${2:-5}
CASES=${CASES:-all}
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

# run_case CASE: one measurement of CASE.
run_case() {
    case $1 in
        r-raw) read_case base.raw raw ;;
        r-qcow2) read_case full.qcow2 qcow2 ;;
        r-chain8) read_case chain-8.qcow2 qcow2 ;;
        w-*) write_case "${1#w-}" ;;
        q-*) qemu_write "${1#q-}" ;;
    esac
}
# rotated K GROUP...: the group's cases, starting K places on.
rotated() {
    local k=$1; shift
    local n=$#
    local all=("$@")
    for j in $(seq 0 $((n - 1))); do echo "${all[$(((j + k) % n))]}"; done
}

declare -A got
for run in $(seq "$RUNS"); do
    groups=()
    [ "$CASES" = write ] || groups+=("r-raw r-qcow2 r-chain8")
    [ "$CASES" = read ] || groups+=("w-raw w-qcow2 w-overlay" "q-raw q-overlay")
    for group in "${groups[@]}"; do
        # shellcheck disable=SC2086 # reason: the group is a word list
        for c in $(rotated "$run" $group); do got[$c]+=" $(run_case "$c")"; done
    done
    echo "run $run of $RUNS done" >&2
done
rm -f w.img q.img run.json
# stats CASE BASE: the median of CASE, its ratio of medians to BASE, and the median of the
# per-run ratios with a 95% bootstrap interval.
stats() {
    python3 - "${got[$1]}" "${got[$2]}" <<'PY'
import random, statistics as st, sys
case, base = ([float(v) for v in a.split()] for a in sys.argv[1:3])
ratios = [c / b for c, b in zip(case, base)]
random.seed(1)
meds = sorted(st.median(random.choices(ratios, k=len(ratios))) for _ in range(2000))
print("%d %.3f %.3f [%.3f, %.3f]" % (st.median(case), st.median(case) / st.median(base), st.median(ratios), meds[50], meds[1949]))
PY
}
echo "Strata guest (TCG, microvm), 4 KiB, QD32, $SECS s per boot; $RUNS interleaved runs; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-42s %8s %9s   %-26s %s\n" case IOPS "vs raw" "per-run ratio [95%]" runs
row() {
    read -r iops ofmed rest <<< "$(stats "$2" "$3")"
    printf "%-42s %8s %9s   %-26s %s\n" "$1" "$iops" "$ofmed" "$rest" "${got[$2]}"
}
if [ "$CASES" != write ]; then
    row "randread raw" r-raw r-raw
    row "randread fully allocated qcow2" r-qcow2 r-raw
    row "randread 8 empty overlays over raw" r-chain8 r-raw
fi
if [ "$CASES" != read ]; then
    row "randwrite raw" w-raw w-raw
    row "randwrite empty qcow2" w-qcow2 w-raw
    row "randwrite qcow2 overlay over raw (CoW)" w-overlay w-raw
    row "qemu-img bench -w -S 64k raw (host)" q-raw q-raw
    row "qemu-img bench -w -S 64k overlay (host)" q-overlay q-raw
fi

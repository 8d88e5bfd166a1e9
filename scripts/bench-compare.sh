#!/usr/bin/env bash
# Before/after benchmark of two builds of Strata, measured in the same run: the OLD and the NEW
# `qemu-runner` (and each its own kernel) run interleaved, OLD NEW OLD NEW ..., RUNS times per
# case on the same files. Prints per case the median IOPS of each side, the spread of its runs
# ((max - min) / median), the ratio of the medians new/old, and "paired", the median of the
# rounds' own new/old (robust to load that comes and goes between rounds). Usage:
#   scripts/bench-compare.sh OLD_DIR NEW_DIR [RUNS]      (default: 5 runs)
#   scripts/bench-compare.sh --snapshot DIR              (fill DIR from this checkout)
# A side's DIR holds `qemu-runner` and `strata-kernel` (and COMMIT, shown if present). --snapshot
# builds them the way the runner builds the kernel and copies them there:
#   cargo build --release -p qemu-runner
#   env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS DEFMT_LOG=info cargo build -p strata-kernel \
#       --release --target x86_64-unknown-none --target-dir target/kernel
#   cp target/release/qemu-runner target/kernel/x86_64-unknown-none/release/strata-kernel DIR/
# The guest boots always pass --kernel, so neither runner builds anything here. A runner keeps its
# run directories under the checkout it was built in, so keep that checkout's target/ writable.
# Cases (4 KiB requests, -t writeback on the host, TCG in the guest):
#   img read   `img bench -f qcow2` reads, QD1 and QD32, on a 1 GiB qcow2 fully allocated with
#              random data, and on a chain of 3 empty qcow2 overlays over it;
#   img alloc  scripts/bench-alloc.sh's allocating writes (-w -S 64k, 16000 writes, one per cluster,
#              on a fresh overlay), QD1 and QD32, over an empty qcow2 (4 overlays per sample) and
#              over a raw data file;
#   guest      `boot` with `bench ... --qd 32 --seconds 3`: randread on a chain of 8 empty qcow2
#              overlays over a 256 MiB raw base of random data, and randwrite on a fresh empty
#              qcow2 overlay over that base.
# Images live in target/strata/bench-compare/ (made once, reused; ~2.5 GiB). 5 runs take about
# 3 minutes on 2 idle cores, 8 beside a cargo build; the load average is printed, as the build's
# noise (spreads of 20-80%) swamps small differences: compare on an idle machine.
# Needs qemu-img (to make images) and python3 (for the guest's JSON).
set -euo pipefail
shopt -s inherit_errexit

if [ "${1:-}" = --snapshot ]; then
    [ $# = 2 ] || { echo "usage: $0 --snapshot DIR" >&2; exit 2; }
    mkdir -p "$2"
    DEST=$(realpath "$2")
    cd "$(dirname "$0")/.."
    cargo build -q --release -p qemu-runner
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS DEFMT_LOG=info cargo build -q -p strata-kernel \
        --release --target x86_64-unknown-none --target-dir target/kernel
    cp target/release/qemu-runner target/kernel/x86_64-unknown-none/release/strata-kernel "$DEST/"
    echo "$(git rev-parse HEAD)$([ -z "$(git status --porcelain --untracked-files=no)" ] || echo +dirty)" > "$DEST/COMMIT"
    echo "$DEST: qemu-runner, strata-kernel from $(cat "$DEST/COMMIT")"
    exit 0
fi

[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: $0 OLD_DIR NEW_DIR [RUNS] | --snapshot DIR" >&2; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
RUNS=${3:-5}
for side in "$OLD" "$NEW"; do
    for f in qemu-runner strata-kernel; do
        [ -x "$side/$f" ] || { echo "$side/$f missing; fill it with: $0 --snapshot $side" >&2; exit 2; }
    done
done
QEMU_IMG=${QEMU_IMG:-qemu-img}
READS=500000    # requests per host read run (~1 s; bench wraps at the image's end)
COUNT=16000     # allocating writes per run, as scripts/bench-alloc.sh
SECONDS_PER_BOOT=3
cd "$(dirname "$0")/.."
DIR=target/strata/bench-compare
mkdir -p "$DIR"
cd "$DIR"

# random_raw FILE SIZE_MIB: a raw file of random bytes (made under a temporary name, then moved).
random_raw() {
    "$QEMU_IMG" create -q -f raw "$1.tmp" "$2M"
    dd if=/dev/urandom of="$1.tmp" bs=1M count="$2" conv=notrunc status=none
    mv "$1.tmp" "$1"
}
# overlays PREFIX BASE BASE_FMT N: PREFIX-1.qcow2 over BASE, ..., PREFIX-N.qcow2 over PREFIX-(N-1).
overlays() {
    local prev=$2 fmt=$3 i
    for i in $(seq "$4"); do
        [ -f "$1-$i.qcow2" ] || "$QEMU_IMG" create -q -f qcow2 -b "$prev" -F "$fmt" "$1-$i.qcow2"
        prev=$1-$i.qcow2 fmt=qcow2
    done
}
if [ ! -f full.qcow2 ]; then
    random_raw full.raw 1024
    "$QEMU_IMG" convert -f raw -O qcow2 full.raw full.qcow2.tmp
    mv full.qcow2.tmp full.qcow2
    rm full.raw
fi
overlays chain3 full.qcow2 qcow2 3
alloc_size=$((COUNT * 64 / 1024 + 64))
[ -f alloc-empty.qcow2 ] || "$QEMU_IMG" create -q -f qcow2 alloc-empty.qcow2 "${alloc_size}M"
[ -f alloc-data.raw ] || random_raw alloc-data.raw "$alloc_size"
[ -f guest-base.raw ] || random_raw guest-base.raw 256
overlays chain8 guest-base.raw raw 8

# seconds -> IOPS for COUNT requests, from "Run completed in X seconds."
iops() { awk -v c="$1" '/Run completed in/ { printf "%d\n", c / $4 }'; }

# Each case function takes a side's DIR first and prints one IOPS figure.
# img_read SIDE FILE DEPTH
img_read() {
    "$1/qemu-runner" img bench -t writeback -d "$3" -c "$READS" -s 4096 -f qcow2 "$2" | iops "$READS"
}
# img_alloc SIDE BACKING BACKING_FMT DEPTH REPS: IOPS over REPS fresh overlays, each written as
# in scripts/bench-alloc.sh (REPS > 1 makes a sample long enough to be stable).
img_alloc() {
    local secs=0 s
    for _ in $(seq "$5"); do
        rm -f alloc-top.qcow2
        "$QEMU_IMG" create -q -f qcow2 -o cluster_size=65536 -b "$2" -F "$3" alloc-top.qcow2
        s=$("$1/qemu-runner" img bench -w -t writeback -d "$4" -c "$COUNT" -S 65536 -f qcow2 alloc-top.qcow2 |
            awk '/Run completed in/ { print $4 }')
        secs=$(awk -v a="$secs" -v b="$s" 'BEGIN { print a + b }')
    done
    awk -v c=$(($5 * COUNT)) -v s="$secs" 'BEGIN { printf "%d\n", c / s }'
}
# guest SIDE DRIVE CMD: boots the side's kernel under its runner, prints the bench record's IOPS.
guest() {
    local out=guest-run.json
    if ! "$1/qemu-runner" boot --kernel "$1/strata-kernel" --accel tcg --machine microvm \
        --timeout $((SECONDS_PER_BOOT * 4 + 60)) --json --drive "$2" --cmd "$3" > "$out" 2>/dev/null; then
        echo "boot with $1 failed:" >&2
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("console") or r)' "$out" >&2
        return 1
    fi
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print([x for x in r["records"] if x["type"] == "bench"][0]["iops"])' "$out"
}
# guest_write SIDE: randwrite on a fresh overlay (headroom: the whole base may get allocated).
guest_write() {
    rm -f guest-wtop.qcow2
    "$QEMU_IMG" create -q -f qcow2 -b guest-base.raw -F raw guest-wtop.qcow2
    guest "$1" "file=guest-wtop.qcow2,format=qcow2,serial=top,headroom=512M" \
        "bench top --rw randwrite --bs 4k --qd 32 --seconds $SECONDS_PER_BOOT"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# spread: (max - min) / median of the numbers on stdin, in percent.
spread() { sort -g | awk '{ a[NR] = $1 } END { printf "%.1f%%", 100 * (a[NR] - a[1]) / a[int((NR + 1) / 2)] }'; }
row() { printf "%-40s %9s %7s %9s %7s %8s %7s\n" "$@"; }

# compare LABEL FUNCTION ARGS...: FUNCTION OLD ARGS, then FUNCTION NEW ARGS, RUNS times; one row.
compare() {
    local label=$1 fn=$2 o=() n=() r=() i v om nm
    shift 2
    for i in $(seq "$RUNS"); do
        v=$("$fn" "$OLD" "$@")
        o+=("$v")
        v=$("$fn" "$NEW" "$@")
        n+=("$v")
    done
    for v in "${o[@]}" "${n[@]}"; do
        [[ $v =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ] || { echo "$label: not an IOPS figure: '$v'" >&2; exit 1; }
    done
    for i in "${!o[@]}"; do r+=("$(awk -v a="${n[i]}" -v b="${o[i]}" 'BEGIN { print a / b }')"); done
    om=$(printf '%s\n' "${o[@]}" | median)
    nm=$(printf '%s\n' "${n[@]}" | median)
    row "$label" "$om" "$(printf '%s\n' "${o[@]}" | spread)" "$nm" "$(printf '%s\n' "${n[@]}" | spread)" \
        "$(awk -v a="$nm" -v b="$om" 'BEGIN { printf "%.3f", a / b }')" \
        "$(printf '%s\n' "${r[@]}" | median | awk '{ printf "%.3f", $1 }')"
}

echo "old: $OLD ($(cat "$OLD/COMMIT" 2>/dev/null || echo "no COMMIT"))"
echo "new: $NEW ($(cat "$NEW/COMMIT" 2>/dev/null || echo "no COMMIT"))"
echo "$RUNS runs per side, interleaved old/new; median IOPS, spread = (max - min) / median, paired = median of the rounds' new/old"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
row "case (4 KiB)" "old IOPS" "spread" "new IOPS" "spread" "new/old" "paired"

# Warm-up, untimed: the page cache for the read images, each runner and QEMU once.
cat full.qcow2 guest-base.raw > /dev/null
for side in "$OLD" "$NEW"; do
    img_read "$side" chain3-3.qcow2 32 > /dev/null
    guest "$side" "file=chain8-8.qcow2,format=qcow2,serial=top,read-only=on" "bench top --rw randread --bs 4k --qd 1 --count 100" > /dev/null
done

for file in full.qcow2 chain3-3.qcow2; do
    for depth in 1 32; do
        compare "img read $([ $file = full.qcow2 ] && echo "full 1G qcow2" || echo "3 overlays on it") -d $depth" \
            img_read "$file" "$depth"
    done
done
# backing file, its format, fresh overlays per sample (an empty backing file's run is ~0.1 s)
for backing in "alloc-empty.qcow2 qcow2 4" "alloc-data.raw raw 1"; do
    set -- $backing
    for depth in 1 32; do
        compare "img alloc -S 64k over $([ "$2" = raw ] && echo "raw data" || echo "empty qcow2") -d $depth" \
            img_alloc "$1" "$2" "$depth" "$3"
    done
done
rm -f alloc-top.qcow2
compare "guest randread qd32, 8 overlays on raw" guest "file=chain8-8.qcow2,format=qcow2,serial=top,read-only=on" \
    "bench top --rw randread --bs 4k --qd 32 --seconds $SECONDS_PER_BOOT"
compare "guest randwrite qd32, overlay on raw" guest_write
rm -f guest-wtop.qcow2 guest-run.json
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# The guest's block stack at queue depth, in one run: `bench` in the Strata kernel (TCG) on
# QEMU's null-co driver and on a raw file, QD1 and QD32, and `qemu-img bench` on the same file
# with the same request size and depths (host side: the same QEMU block layer without a guest).
# Prints IOPS, MB/s, latency percentiles, cycles per stage (submit / device / completion, TSC
# cycles per I/O measured in the virtio leaf), the most requests the device held, doorbells,
# boot-to-first-I/O, and the kernel's footprint with the block layer's share. Each guest run is
# repeated RUNS times and the run with the median IOPS is shown (TCG shares the host's CPUs with
# everything else running). Usage:
#   scripts/bench-guest.sh [SECONDS] [FILE] [RUNS]   (default: 5 s, target/strata/bench-guest.img, 3)
# FILE is created (1 GiB of random bytes) if absent. MACHINE=pc for virtio-pci (default microvm).
# Needs python3 for the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
FILE=${2:-target/strata/bench-guest.img}
RUNS=${3:-3}
QEMU_IMG=${QEMU_IMG:-qemu-img}
MACHINE=${MACHINE:-microvm}
cargo build -q --release -p qemu-runner
RUNNER=target/release/qemu-runner
mkdir -p "$(dirname "$FILE")"
if [ ! -f "$FILE" ]; then
    "$QEMU_IMG" create -q -f raw "$FILE" 1G
    dd if=/dev/urandom of="$FILE" bs=1M count=1024 conv=notrunc status=none
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# boot NAME DRIVE CMD: runs the kernel, keeps the JSON result in $TMP/NAME.json
boot() {
    "$RUNNER" boot --accel tcg --machine "$MACHINE" --timeout $((SECONDS_PER_RUN * 4 + 60)) --json \
        --drive "$2" --cmd "$3" > "$TMP/$1.json" 2>/dev/null || {
        echo "boot $1 failed:"; python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("console") or r)' "$TMP/$1.json"; exit 1; }
}

echo "== guest: Strata kernel on $MACHINE, TCG, 4 KiB reads, $SECONDS_PER_RUN s each, median of $RUNS"
for run in $(seq "$RUNS"); do
    for qd in 1 32; do
        boot "null-qd$qd-$run" "driver=null-co,size=1G,serial=null0" "bench null0 --rw randread --bs 4k --qd $qd --seconds $SECONDS_PER_RUN"
        boot "file-qd$qd-$run" "file=$FILE,serial=file0,read-only=on" "bench file0 --rw randread --bs 4k --qd $qd --seconds $SECONDS_PER_RUN"
        boot "fileseq-qd$qd-$run" "file=$FILE,serial=file0,read-only=on" "bench file0 --rw read --bs 4k --qd $qd --seconds $SECONDS_PER_RUN"
    done
done

echo "== host: qemu-img bench on the same file (-f raw, -t writeback, 4 KiB sequential reads)"
for qd in 1 32; do
    count=$([ "$qd" = 1 ] && echo 200000 || echo 400000)
    "$QEMU_IMG" bench -f raw -t writeback -d "$qd" -c "$count" -s 4096 "$FILE" > "$TMP/qemu-img-qd$qd.txt"
    echo "$count" > "$TMP/qemu-img-qd$qd.count"
done

python3 - "$TMP" "$RUNS" <<'PY'
import json, os, sys
tmp, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    """The run of `name` with the median IOPS."""
    got = []
    for run in range(1, runs + 1):
        r = json.load(open(os.path.join(tmp, f"{name}-{run}.json")))
        b = [x for x in r["records"] if x["type"] == "bench"][0]
        got.append((b["iops"], r, b))
    got.sort(key=lambda g: g[0])
    _, r, b = got[len(got) // 2]
    return r, b
rows = []
print()
print(f"{'run':<22}{'IOPS':>9}{'MB/s':>8}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}"
      f"{'submit':>8}{'device':>9}{'compl':>8}{'all':>8}{'inflt':>6}{'I/O per bell':>13}{'1st I/O ms':>11}")
res = {}
for name in ["null-qd1", "null-qd32", "file-qd1", "file-qd32", "fileseq-qd1", "fileseq-qd32"]:
    r, b = load(name)
    res[name] = b
    bells = max(b["doorbells"], 1)
    print(f"{name:<22}{b['iops']:>9}{b['bytes_per_sec']/1e6:>8.1f}{b['lat_p50_ns']/1e3:>9.1f}{b['lat_p99_ns']/1e3:>9.1f}"
          f"{b['lat_p999_ns']/1e3:>10.1f}{b['submit_cycles']:>8}{b['device_cycles']:>9}{b['completion_cycles']:>8}"
          f"{b['cycles_per_io']:>8}{b['max_in_flight']:>6}{b['ios']/bells:>13.1f}{(r['boot_to_first_io_us'] or 0)/1e3:>11.1f}")
for qd in (1, 32):
    text = open(os.path.join(tmp, f"qemu-img-qd{qd}.txt")).read()
    count = int(open(os.path.join(tmp, f"qemu-img-qd{qd}.count")).read())
    secs = float(text.split("Run completed in")[1].split()[0])
    iops = count / secs
    res[f"qemu-img-qd{qd}"] = iops
    print(f"{'qemu-img bench qd'+str(qd):<22}{iops:>9.0f}{iops*4096/1e6:>8.1f}")
print()
print("cycles per I/O (TSC): submit = submit() entry to avail-ring publish; device = publish to used")
print("entry seen; completion = used entry seen to the request's poll returning Ready (includes waiting")
print("for the executor to reach the task); all = wall cycles / I/Os.")
for kind in ("null", "file", "fileseq"):
    q1, q32 = res[f"{kind}-qd1"]["iops"], res[f"{kind}-qd32"]["iops"]
    print(f"{kind}: QD32/QD1 = {q32/q1:.2f}x")
print(f"guest sequential vs qemu-img bench: QD1 {res['fileseq-qd1']['iops']/res['qemu-img-qd1']:.2f}, "
      f"QD32 {res['fileseq-qd32']['iops']/res['qemu-img-qd32']:.2f}")
r, _ = load("null-qd1")
fp = [x for x in r["records"] if x["type"] == "footprint"][0]
blk = r.get("block_footprint") or {}
print(f"footprint: text {fp['text']//1024} KiB, rodata {fp['rodata']//1024} KiB, data {fp['data']//1024} KiB, "
      f"bss {fp['bss']//1024} KiB; block layer (strata_block symbols): text {blk.get('text',0)//1024} KiB, "
      f"rodata {blk.get('rodata',0)//1024} KiB, data {blk.get('data',0)//1024} KiB, bss {blk.get('bss',0)//1024} KiB")
print(f"boot: VM start to kernel entry {r['entry_us']/1e3:.1f} ms, kernel entry to first I/O {r['boot_to_first_io_us']/1e3:.1f} ms")
PY

#!/usr/bin/env bash
# Static footprint per architecture (issue 17's budget): text, rodata, data and bss of
#   - the embedding example, full (strata-block's default features: writes, compression,
#     commands, filters) and read-only (`--no-default-features`: a raw+qcow2 chain opened
#     read-only and hashed), both built here;
#   - the kernel, as last built by qemu-runner (target/kernel/<triple>/release), if present;
# then the largest static symbols (.data/.bss) of each image, grouped by owner.
#
# Usage: scripts/footprint.sh [--opt-level s|z|3] [--no-build] [TRIPLE...]
#   --opt-level  the release profile's opt-level for the example builds (default: the
#                workspace's, 3); the images go to target/footprint-<level>.
#   --no-build   only measure what is already built.
# Goals (not gates): read-only qcow2 build <= 128 KiB text, full <= 256 KiB text, default
# static RAM <= 2 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

opt=""
build=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --opt-level) opt="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-none aarch64-unknown-none riscv64gc-unknown-none-elf)
dir=target/footprint${opt:+-$opt}

# Section sizes of an ELF: text rodata data bss (bytes; .got/.relro and eh_frame not counted).
sections() {
    size -A "$1" | awk '
        $1 == ".text" { t += $2 } $1 == ".rodata" { r += $2 }
        $1 == ".data" || $1 == ".sdata" { d += $2 } $1 == ".bss" || $1 == ".sbss" { b += $2 }
        END { printf "%d %d %d %d\n", t, r, d, b }'
}

# Who owns a static symbol (demangled name on stdin as "size name"): the kernel's and the
# example's big statics by name, everything else by its crate::module.
owners() {
    awk '{
        size = $1; $1 = ""; name = substr($0, 2)
        if (name ~ /BOOT_STACK/) o = "boot stack"
        else if (name ~ /BOOT_TABLES|PAGE_TABLE/) o = "page tables"
        else if (name ~ /stack::META/) o = "block: metadata cache"
        else if (name ~ /stack::BOUNCE/) o = "block: bounce buffers"
        else if (name ~ /embed_firmware::MEMORY/) o = "block: metadata cache + bounce (caller memory)"
        else if (name ~ /INFLATER|ZSTD/) o = "block: decoders (deflate, zstd window)"
        else if (name ~ /ARENA/) o = "virtio queues (DMA arena)"
        else if (name ~ /devices::CELLS/) o = "devices (virtio-blk state, graph nodes)"
        else if (name ~ /workloads::/) o = "workload buffers"
        else if (name ~ /embed_firmware::(TOP|BASE)/) o = "example RAM disks"
        else if (name ~ /executor/) o = "executor"
        else { o = name; sub(/<[^>]*>/, "", o); n = split(o, p, "::"); o = (n >= 2) ? p[1] "::" p[2] : p[1] }
        sum[o] += size
    }
    END { for (o in sum) printf "%10d  %s\n", sum[o], o }' | sort -rn | head -12
}

measure() { # label elf
    local label=$1 elf=$2
    [ -f "$elf" ] || { printf "%-34s (not built: %s)\n" "$label" "$elf"; return; }
    sections "$elf" | awk -v l="$label" '{ printf "%-34s %9d %9d %9d %10d   %7.1f %7.1f %9.1f\n", l, $1, $2, $3, $4, $1 / 1024, $2 / 1024, ($3 + $4) / 1024 }'
}

if [ $build = 1 ]; then
    for t in "${targets[@]}"; do
        rustup target list --installed 2>/dev/null | grep -qx "$t" || rustup target add "$t"
        for variant in full read-only; do
            if [ $variant = full ]; then feats=(--features firmware); else feats=(--no-default-features --features firmware,read-only); fi
            env -u RUSTFLAGS ${opt:+CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt} \
                cargo build -q -p strata-embed --release --target "$t" --target-dir "$dir" "${feats[@]}"
            mkdir -p "$dir/images"
            cp "$dir/$t/release/embed-firmware" "$dir/images/embed-$variant-$t"
        done
    done
fi

echo "opt-level: ${opt:-3 (workspace release profile)}"
printf "%-34s %9s %9s %9s %10s   %7s %7s %9s\n" image text rodata data bss "text K" "ro K" "static K"
for t in "${targets[@]}"; do
    measure "embed read-only $t" "$dir/images/embed-read-only-$t"
    measure "embed full $t" "$dir/images/embed-full-$t"
    measure "kernel $t" "target/kernel/$t/release/strata-kernel"
done

for t in "${targets[@]}"; do
    for elf in "$dir/images/embed-read-only-$t" "target/kernel/$t/release/strata-kernel"; do
        [ -f "$elf" ] || continue
        echo
        echo "static RAM by owner: $elf"
        nm -S -C -t d "$elf" | awk '$3 ~ /^[bBdD]$/ { $1 = ""; $3 = ""; print }' | awk '{ s = $1; $1 = ""; print s + 0, substr($0, 2) }' | owners
    done
done

#!/usr/bin/env bash
# Long guest crash runs: tests/tests/guest_crash.rs over several seeds with many cuts per image
# (three images per seed: raw, qcow2 with 64 KiB clusters, qcow2 with 4 KiB clusters).
#
#   scripts/guest-crash.sh [SEEDS [CUTS_PER_IMAGE [FIRST_SEED]]]   # default 4 seeds x 1000 cuts
#
# Prints each image's line (cuts, clean, with leaks, failed) and exits non-zero at the first
# failing seed; a failing cut names its seed and cut, and leaves its files under
# target/strata/tests/guest-crash-*.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-4}
cuts=${2:-1000}
first=${3:-1}
cargo test -q -p strata-tests --test guest_crash --no-run
for ((s = first; s < first + seeds; s++)); do
    echo "== seed $s, $cuts cuts per image"
    status=0
    out=$(STRATA_GUEST_CRASH_SEED=$s STRATA_GUEST_CRASH_CUTS=$cuts \
        cargo test -q -p strata-tests --test guest_crash -- --nocapture --test-threads 1 2>&1) || status=$?
    grep -oE 'guest crash .*|panicked.*|.*cut at entry.*' <<<"$out" || true
    test "$status" -eq 0 || { echo "seed $s failed (exit $status)"; exit 1; }
done

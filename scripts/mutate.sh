#!/usr/bin/env bash
# Runs the seeded qcow2 mutation harness (tests/tests/qcow2_mutate.rs) for longer than the
# test suite does, over several seeds, in release mode.
#
#   scripts/mutate.sh [SECONDS_PER_SEED] [FIRST_SEED] [SEEDS]
#
# Defaults: 300 s per seed, seeds 1..4. Failing mutants land in target/strata/mutants/; set
# STRATA_MUTATE_KEEP_LAX=1 to keep the ones Strata reads and qemu-img refuses as well.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
first=${2:-1}
count=${3:-4}
for ((seed = first; seed < first + count; seed++)); do
    STRATA_MUTATE_SECS=$secs STRATA_MUTATE_SEED=$seed \
        cargo test -q --release -p strata-tests --test qcow2_mutate -- --nocapture 2>&1 | grep -E '^mutate:|failing|\.qcow2:'
done

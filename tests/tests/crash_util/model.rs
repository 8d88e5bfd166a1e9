//! What a disk must show after a crash at a given recording seq: the guest operations covered by
//! the last guest flush that completed before the crash, applied to the starting contents; bytes
//! touched by any operation that was not covered but had started, and discarded bytes, may hold
//! anything.

use qemu_runner::img::block::dev::record::Seq;

use super::workload::{data, Kind, Op};

/// Expected bytes and which of them must match.
pub struct Expected {
    pub bytes: Vec<u8>,
    pub defined: Vec<bool>,
    /// Guest operations covered by a completed flush.
    pub covered: usize,
}

/// The expectation for a crash at seq `at` (every recorded event below `at` happened), over
/// `base` (the disk's contents before the workload) and `ops` (in completion order).
pub fn expected(base: &[u8], ops: &[Op], at: Seq) -> Expected {
    // The guest flush that completed before the crash and was submitted last.
    let stable_before = ops.iter().filter(|o| o.kind == Kind::Flush && o.done_seq <= at).map(|o| o.sub).max();
    let mut bytes = base.to_vec();
    let mut defined = vec![true; base.len()];
    let mut covered = 0;
    for op in ops {
        let is_covered = stable_before.is_some_and(|s| op.done < s);
        let (from, to) = (op.offset as usize, (op.offset + op.len) as usize);
        if is_covered {
            covered += 1;
            match op.kind {
                Kind::Write { seed } => bytes[from..to].copy_from_slice(&data(seed, op.len)),
                Kind::Zeroes { .. } => bytes[from..to].fill(0),
                Kind::Discard | Kind::Flush => {}
            }
            defined[from..to].fill(op.kind != Kind::Discard);
        }
    }
    // Uncovered operations that had started may have landed in whole, in part or not at all.
    for op in ops.iter().filter(|o| stable_before.is_none_or(|s| o.done >= s) && o.sub_seq < at) {
        defined[op.offset as usize..(op.offset + op.len) as usize].fill(false);
    }
    Expected { bytes, defined, covered }
}

/// The first mismatch and how many bytes differ, if any.
pub fn compare(exp: &Expected, actual: &[u8]) -> Option<String> {
    if actual.len() < exp.bytes.len() {
        return Some(format!("disk is {} bytes, expected {}", actual.len(), exp.bytes.len()));
    }
    let mut first = None;
    let mut count = 0u64;
    const CHUNK: usize = 4096;
    for (c, (e, a)) in exp.bytes.chunks(CHUNK).zip(actual.chunks(CHUNK)).enumerate() {
        if e == a {
            continue;
        }
        let defined = &exp.defined[c * CHUNK..c * CHUNK + e.len()];
        for (i, ((e, a), d)) in e.iter().zip(a).zip(defined).enumerate() {
            if *d && e != a {
                first.get_or_insert(c * CHUNK + i);
                count += 1;
            }
        }
    }
    first.map(|i| format!("{count} flushed bytes differ, first at {i:#x} (expected {:#04x}, found {:#04x})", exp.bytes[i], actual[i]))
}

//! The stress model: seeded data words, the per-block last-writer table and what a block must
//! hold. Pure functions, usable by a host-side checker without the engine.

use core::ops::Range;

use super::ops::{mix64, op_at, Config, Op, OpKind};

/// One block's last writer, as stored (encoded) in the model table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not written since the run began (content unknown).
    Initial,
    /// Written with data by this op.
    Data(u32),
    /// Zeroed (write-zeroes, with or without unmap) by this op.
    Zero(u32),
    /// Discarded by this op (content unknown).
    Discarded(u32),
}

const TAG_SHIFT: u32 = 30;
const INDEX_MASK: u32 = (1 << TAG_SHIFT) - 1;

impl Entry {
    /// The table's `u32`: two tag bits above a 30-bit op index; 0 is [`Entry::Initial`].
    pub fn encode(self) -> u32 {
        match self {
            Entry::Initial => 0,
            Entry::Data(i) => (1 << TAG_SHIFT) | (i & INDEX_MASK),
            Entry::Zero(i) => (2 << TAG_SHIFT) | (i & INDEX_MASK),
            Entry::Discarded(i) => (3 << TAG_SHIFT) | (i & INDEX_MASK),
        }
    }

    /// Reads a table `u32`.
    pub fn decode(raw: u32) -> Self {
        let i = raw & INDEX_MASK;
        match raw >> TAG_SHIFT {
            1 => Entry::Data(i),
            2 => Entry::Zero(i),
            3 => Entry::Discarded(i),
            _ => Entry::Initial,
        }
    }

    /// What `op` leaves in the blocks it covers (`None`: reads and flushes change nothing).
    pub fn after(op: &Op) -> Option<Self> {
        match op.kind {
            OpKind::Write => Some(Entry::Data(op.index)),
            OpKind::Zeroes { .. } => Some(Entry::Zero(op.index)),
            OpKind::Discard => Some(Entry::Discarded(op.index)),
            OpKind::Read | OpKind::Flush => None,
        }
    }
}

/// What a block must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Anything (not written since the start, or discarded).
    Unknown,
    /// Zeros.
    Zeros,
    /// The data op `.0` wrote ([`data_word`]).
    Data(u32),
}

/// What a block whose table entry is `entry` must hold.
pub fn expected(entry: Entry) -> Expected {
    match entry {
        Entry::Initial | Entry::Discarded(_) => Expected::Unknown,
        Entry::Zero(_) => Expected::Zeros,
        Entry::Data(i) => Expected::Data(i),
    }
}

/// The 8-byte word (little-endian) op `op` of run `seed` writes at byte `offset` (a multiple of
/// 8) of the disk.
pub fn data_word(seed: u64, op: u32, offset: u64) -> u64 {
    mix64(seed ^ mix64(u64::from(op).wrapping_mul(0x0100_0000_01b3).wrapping_add(offset >> 3)))
}

/// Fills `out` with what op `op` writes starting at byte `offset` (a multiple of 8).
pub fn fill_data(seed: u64, op: u32, offset: u64, out: &mut [u8]) {
    for (k, chunk) in out.chunks_mut(8).enumerate() {
        let word = data_word(seed, op, offset + 8 * k as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Fills `out` with what the block at byte `offset` of the disk must hold when its entry is
/// `entry`; returns false (and leaves `out` alone) when that is unknown.
pub fn expected_block(seed: u64, entry: Entry, offset: u64, out: &mut [u8]) -> bool {
    match expected(entry) {
        Expected::Unknown => false,
        Expected::Zeros => {
            out.fill(0);
            true
        }
        Expected::Data(op) => {
            fill_data(seed, op, offset, out);
            true
        }
    }
}

/// True if `data`, read at byte `offset` (a multiple of 8), is what `entry` says it must be.
pub fn block_matches(seed: u64, entry: Entry, offset: u64, data: &[u8]) -> bool {
    match expected(entry) {
        Expected::Unknown => true,
        Expected::Zeros => data.iter().all(|&b| b == 0),
        Expected::Data(op) => data.chunks(8).enumerate().all(|(k, chunk)| {
            let word = data_word(seed, op, offset + 8 * k as u64).to_le_bytes();
            chunk == &word[..chunk.len()]
        }),
    }
}

/// Calls `f(block, entry)` for every block (index in the region) that ops `ops` of `cfg` change,
/// in op order.
pub fn for_each_update(cfg: &Config, ops: Range<u32>, mut f: impl FnMut(u64, Entry)) {
    let bs = u64::from(cfg.block.max(1));
    for i in ops {
        let op = op_at(cfg, i);
        if let Some(entry) = Entry::after(&op) {
            let first = (op.offset - cfg.start) / bs;
            for b in first..first + op.len / bs {
                f(b, entry);
            }
        }
    }
}

/// Applies ops `ops` of `cfg` to `table` (one entry per block of the region; entries past its
/// end are ignored): start from a table of zeros ([`Entry::Initial`]) and replay `0..N` to know
/// what every block held after op `N - 1`.
pub fn replay(cfg: &Config, table: &mut [u32], ops: Range<u32>) {
    for_each_update(cfg, ops, |b, entry| {
        if let Some(slot) = usize::try_from(b).ok().and_then(|b| table.get_mut(b)) {
            *slot = entry.encode();
        }
    });
}

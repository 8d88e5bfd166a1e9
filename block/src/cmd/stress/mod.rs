//! A seeded stress engine: a reproducible mix of reads, writes, write-zeroes (with and without
//! unmap), discards and flushes at a queue depth, verified as it runs, with flush markers a
//! crash checker can replay.
//!
//! # The model (no heap)
//!
//! - **Ops are a pure function of the configuration.** [`op_at`]`(cfg, i)` derives op `i` (kind,
//!   block-aligned offset and length inside the region under test) from `(seed, i)` alone.
//! - **Data is a pure function of `(seed, op, offset)`.** Every 8-byte word a write puts at
//!   byte offset `o` is [`data_word`]`(seed, op, o)`, so a byte's expected value is known from
//!   the index of the op that wrote it last.
//! - **Last writers live in a caller-provided table**: one `u32` [`Entry`] per block of the region
//!   (`region_len / block` entries; [`Config::blocks`]): who last wrote, zeroed or discarded the
//!   block, or nobody since the run began ([`Entry::Initial`]).
//! - **Ops run in index order, and an op never starts while an overlapping one is in flight**
//!   (op `i` waits; later ops wait behind it). So the disk's content is always the result of
//!   applying ops `0..next` one after the other, whatever the completion order — the final
//!   image is a function of the seed — and a read checks exactly the blocks it covers against
//!   the table ([`block_matches`]). Discarded blocks and blocks not written during the run are
//!   unknown and not checked.
//! - **A flush is a barrier**: the engine waits until nothing is in flight, flushes, reports
//!   [`FlushMarker`] `flush K covers ops 0..N` (`N`: the flush's own op index) and only then
//!   issues op `N + 1`. [`Stress::finish`] flushes once more and reports the last marker, which
//!   covers every op.
//!
//! # Checking a crashed image
//!
//! Given the configuration and the last marker `flush K covers ops 0..N` printed before the
//! cut (none: `N = 0`), let `M` be the op index of the next flush op after `N` (or
//! `cfg.ops`): ops `N..M` may have been issued, in any completion state. For every block `b`:
//! 1. [`replay`] ops `0..N` into a fresh table (all [`Entry::Initial`]): `T[b]` is what was
//!    stable at the flush;
//! 2. [`for_each_update`] over `N..M` lists the later entries that may also have landed on `b`
//!    (in op order);
//! 3. the block must equal [`expected_block`] for `T[b]` or for one of those later entries
//!    (compare per sector if the device may tear a block); an unknown expectation
//!    ([`Expected::Unknown`]: not written since the start, or discarded) accepts anything.
//!
//! `qemu-runner img stress --json` prints the markers as JSON lines; the kernel's `stress`
//! workload prints them as `@{"type":"stress_flush",...}` records.

mod engine;
mod model;
mod ops;

pub use engine::{Event, FlushMarker, Stress, StressError, Summary};
pub use model::{block_matches, data_word, expected, expected_block, fill_data, for_each_update, replay, Entry, Expected};
pub use ops::{op_at, Config, ConfigError, Mix, Op, OpKind, MAX_OPS, MAX_QD};

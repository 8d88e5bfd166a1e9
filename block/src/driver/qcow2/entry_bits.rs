//! The bits of L1 and L2 entries (`qcow2.txt`, "Cluster mapping"), shared by the decoder
//! ([`super::tables`]) and the per-entry rules ([`super::entry_rules`]).

/// Offset bits of an L1 entry.
pub const L1_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
/// Reserved bits of an L1 entry.
pub const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Offset bits of a standard L2 entry.
pub const L2_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
/// Reserved bits of a standard L2 entry (bit 0 is the zero flag).
pub const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Refcount exactly one (L1 and L2).
pub const COPIED: u64 = 1 << 63;
/// Compressed cluster (L2).
pub const COMPRESSED: u64 = 1 << 62;
/// Reads as zeros (standard L2, version 3).
pub const ZERO: u64 = 1;

//! Block limits (QEMU's `BlockLimits`), computed bottom-up when a node opens: a leaf takes them
//! from its device, a translation node (raw window, filter) inherits its file child's. The io
//! layer makes every leaf request fit them.

use crate::dev::DeviceInfo;

/// What requests must look like at a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLimits {
    /// Offsets and lengths are multiples of this (a power of two).
    pub request_alignment: u32,
    /// Most bytes per request.
    pub max_transfer: u32,
    /// Preferred request size (0: none).
    pub opt_transfer: u32,
    /// Most scatter-gather segments per request.
    pub max_segments: u16,
    /// Most bytes per segment.
    pub max_segment_size: u32,
    /// Granularity of discard.
    pub discard_alignment: u32,
    /// Granularity of write-zeroes.
    pub write_zeroes_alignment: u32,
    /// Most bytes per write-zeroes request (QEMU's `max_pwrite_zeroes`; `u32::MAX`: no bound
    /// but `max_transfer`'s).
    pub max_write_zeroes: u32,
    /// Most bytes per discard request (QEMU's `max_pdiscard`; `u32::MAX`: no bound but
    /// `max_transfer`'s).
    pub max_discard: u32,
    /// Required alignment of buffer addresses and lengths (1: none).
    pub mem_alignment: u32,
}

impl BlockLimits {
    /// The limits of a leaf device, with nonsense (zero, not a power of two) made safe.
    pub fn from_device(info: &DeviceInfo) -> Self {
        let align = pow2_at_least(info.block_size);
        Self {
            request_alignment: align,
            max_transfer: (info.max_transfer / align * align).max(align),
            opt_transfer: info.opt_transfer,
            max_segments: info.max_segments.max(1),
            max_segment_size: info.max_segment_size.max(align),
            discard_alignment: pow2_at_least(info.discard_alignment).max(align),
            write_zeroes_alignment: align,
            max_write_zeroes: u32::MAX,
            max_discard: u32::MAX,
            mem_alignment: pow2_at_least(info.mem_alignment),
        }
    }

    /// Limits of a node with no child and no device (`null-co`): byte granularity, no bound
    /// on transfers the io layer would have to split for.
    pub fn unlimited() -> Self {
        Self {
            request_alignment: 1,
            max_transfer: u32::MAX,
            opt_transfer: 0,
            max_segments: u16::MAX,
            max_segment_size: u32::MAX,
            discard_alignment: 1,
            write_zeroes_alignment: 1,
            max_write_zeroes: u32::MAX,
            max_discard: u32::MAX,
            mem_alignment: 1,
        }
    }

    /// Limits of a node that passes requests straight to its file child.
    pub fn inherit(child: &BlockLimits) -> Self {
        *child
    }
}

fn pow2_at_least(x: u32) -> u32 {
    x.max(1).checked_next_power_of_two().unwrap_or(1 << 31)
}

//! Write-zeroes and discard at a leaf, with fallbacks, and zero detection.
//!
//! Write-zeroes: the block-aligned middle goes to the device as one WriteZeroes request per
//! `max_transfer` and `max_write_zeroes` (QEMU's `max_pwrite_zeroes`) when the device has it
//! (unmapping if allowed and supported), else as writes of a zeroed bounce buffer; unaligned
//! edges are written as zeros through the read-modify-write path. Discard is advisory (as in
//! QEMU): only the part aligned to the discard granularity goes to the device, in requests of
//! at most `max_discard` (QEMU's `max_pdiscard`), and a device without discard makes it a
//! successful no-op.

use crate::dev::{BlockDevice, DeviceFeatures, DeviceOp, Segment};
use crate::error::{Error, Result};
use crate::node::WriteGen;
use crate::io::Io;
use crate::node::{Node, NodeId};
use crate::io::leaf::{self, transfer, Buf};
use crate::io::tracked::ReqKind;

/// A block of zeros for edges.
static ZEROS: [u8; 4096] = [0; 4096];

/// True if every byte of `buf` is zero (detect-zeroes).
pub fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(16);
    words.all(|w| w == [0u8; 16]) && words.remainder().iter().all(|&b| b == 0)
}

/// Runs `op` over `len` bytes at `offset` of leaf `id`.
pub(crate) async fn leaf_range_op(io: &Io<'_, '_>, id: NodeId, offset: u64, len: u64, op: RangeOp) -> Result<()> {
    let node = io.node(id)?;
    let dev = node.device().ok_or(Error::BadGraph("leaf I/O on a format node"))?;
    if node.read_only {
        return Err(Error::ReadOnly);
    }
    let end = offset.checked_add(len).filter(|&e| e <= node.size()).ok_or(Error::OutOfRange { offset, len, size: node.size() })?;
    node.threshold.check(offset, len);
    let features = dev.info().features;
    let limits = node.limits;
    match op {
        RangeOp::Discard => {
            let g = u64::from(limits.discard_alignment);
            let (start, stop) = (offset.div_ceil(g) * g, end / g * g);
            if !features.contains(DeviceFeatures::DISCARD) || start >= stop {
                return Ok(());
            }
            let tracked = io.tracker.begin(id, ReqKind::Discard, start, stop - start).await;
            tracked.wait_serialising().await;
            let _generation = WriteGen(&node.flush.write_gen);
            let mut pos = start;
            while pos < stop {
                let n = (stop - pos).min(u64::from(limits.max_transfer.min(limits.max_discard)) / g * g).max(g);
                transfer_range(io, dev, DeviceOp::Discard, pos, n).await?;
                pos += n;
            }
        }
        RangeOp::WriteZeroes { unmap } => {
            let a = u64::from(limits.write_zeroes_alignment);
            let (start, stop) = (offset.div_ceil(a) * a, end / a * a);
            // One tracked request for the whole range (as QEMU), serialising if an edge is
            // partial, so no overlapping request lands between its edges and its middle.
            let tracked = io.tracker.begin(id, ReqKind::Write, offset, len).await;
            if start != offset || stop != end {
                tracked.serialise(a);
            }
            tracked.wait_serialising().await;
            let generation = WriteGen(&node.flush.write_gen);
            if start >= stop {
                write_zero_bytes(io, node, dev, offset, end).await?;
            } else {
                write_zero_bytes(io, node, dev, offset, start).await?;
                let device_op = if unmap && features.contains(DeviceFeatures::WRITE_ZEROES_UNMAP) {
                    Some(DeviceOp::WriteZeroes { unmap: true })
                } else if features.contains(DeviceFeatures::WRITE_ZEROES) {
                    Some(DeviceOp::WriteZeroes { unmap: false })
                } else {
                    None
                };
                let mut pos = start;
                match device_op {
                    Some(dop) => {
                        while pos < stop {
                            // QEMU's max_pwrite_zeroes, aligned down to the granularity.
                            let most = u64::from(limits.max_transfer.min(limits.max_write_zeroes));
                            let n = (stop - pos).min((most / a * a).max(a));
                            transfer_range(io, dev, dop, pos, n).await?;
                            pos += n;
                        }
                    }
                    None => {
                        let mut bounce = io.bounce.take(1).await?;
                        let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
                        let unit = (buf.len() as u64).min(u64::from(limits.max_transfer.min(limits.max_segment_size))) / a * a;
                        if unit == 0 {
                            return Err(Error::Unsupported("bounce buffers smaller than the device block size"));
                        }
                        buf.fill(0);
                        while pos < stop {
                            let n = (stop - pos).min(unit) as usize;
                            transfer(io, dev, DeviceOp::Write, pos, &[Segment::from_ref(&buf[..n])]).await?;
                            pos += n as u64;
                        }
                    }
                }
                write_zero_bytes(io, node, dev, stop, end).await?;
            }
            drop(generation);
            drop(tracked);
        }
    }
    Ok(())
}

/// Writes zeros over `[from, to)` (short, unaligned edges) through the read-modify-write path,
/// under the caller's tracked request.
async fn write_zero_bytes(
    io: &Io<'_, '_>,
    node: &Node<'_>,
    dev: &dyn BlockDevice,
    mut from: u64,
    to: u64,
) -> Result<()> {
    while from < to {
        let n = (to - from).min(ZEROS.len() as u64) as usize;
        leaf::move_bytes(io, node, dev, from, Buf::Write(&ZEROS[..n])).await?;
        from += n as u64;
    }
    Ok(())
}

async fn transfer_range(io: &Io<'_, '_>, dev: &dyn BlockDevice, op: DeviceOp, offset: u64, len: u64) -> Result<()> {
    let req = crate::dev::DeviceRequest { op, offset, len, segments: &[] };
    crate::io::device::run(dev, &req, !io.plugged()).await.map_err(Error::Device)
}

/// A range operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    /// Make the range read as zeros; `unmap` allows deallocating it.
    WriteZeroes {
        /// Deallocation allowed.
        unmap: bool,
    },
    /// Drop the range's contents (advisory).
    Discard,
}

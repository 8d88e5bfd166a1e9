//! Moving bytes at a leaf: alignment, read-modify-write, splitting, bouncing.
//!
//! A request is cut into windows. A window that is aligned to the device's block size and whose
//! memory meets the device's alignment goes straight between the caller's buffer and the
//! device, in pieces of at most `max_transfer` (and segment size). Anything else — an unaligned
//! head or tail, or memory the device cannot use — goes through a bounce buffer; for a write the
//! partial blocks are read first (read-modify-write), and the request is marked serialising over
//! its block-aligned range so no overlapping request interleaves with the read and the write.

use crate::dev::{BlockDevice, DeviceOp, DeviceRequest, Segment};
use crate::error::{Error, Result};
use crate::node::WriteGen;
use crate::io::Io;
use crate::node::{Node, NodeId};
use crate::io::bounce::Bounce;
use crate::io::device;
use crate::io::tracked::ReqKind;

/// The caller's memory for one leaf request.
pub(crate) enum Buf<'a> {
    /// Device to memory.
    Read(&'a mut [u8]),
    /// Memory to device.
    Write(&'a [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
        }
    }

    fn addr(&self, at: usize) -> usize {
        match self {
            Buf::Read(b) => b.as_ptr() as usize + at,
            Buf::Write(b) => b.as_ptr() as usize + at,
        }
    }
}

/// Reads or writes `buf` at byte `offset` of leaf node `id`.
pub(crate) async fn rw(io: &Io<'_, '_>, id: NodeId, offset: u64, buf: Buf<'_>) -> Result<()> {
    let node = io.node(id)?;
    let dev = node.device().ok_or(Error::BadGraph("leaf I/O on a format node"))?;
    let len = buf.len() as u64;
    let end = offset.checked_add(len).filter(|&e| e <= node.size()).ok_or(Error::OutOfRange { offset, len, size: node.size() })?;
    if len == 0 {
        return Ok(());
    }
    let writing = matches!(buf, Buf::Write(_));
    if writing && node.read_only {
        return Err(Error::ReadOnly);
    }
    if writing {
        node.threshold.check(offset, len);
    }
    if let Buf::Write(b) = &buf {
        if let Some(result) = write_now(io, node, dev, offset, end, b) {
            return result;
        }
    }
    // Nothing ever writes a read-only leaf, so no serialising request can overlap a read of
    // one: it needs no tracked request (a tracker slot and two scans saved per read).
    let _tracked = if node.read_only {
        None
    } else {
        let align = u64::from(node.limits.request_alignment);
        let kind = if writing { ReqKind::Write } else { ReqKind::Read };
        let tracked = io.tracker.begin(id, kind, offset, len).await;
        if writing && (!offset.is_multiple_of(align) || end % align != 0) {
            tracked.serialise(align);
        }
        tracked.wait_serialising().await;
        Some(tracked)
    };
    let _generation = writing.then(|| WriteGen(&node.flush.write_gen));
    // The whole range as one device request (the common case), awaited here: two futures fewer
    // between the caller and the device than `move_bytes`' loop, polled twice per queued request.
    if direct_len(node, offset, end, buf.addr(0)) == len {
        let (op, segment) = match buf {
            Buf::Read(b) => (DeviceOp::Read, Segment::from_mut(b)),
            Buf::Write(b) => (DeviceOp::Write, Segment::from_ref(b)),
        };
        let segments = [segment];
        let req = DeviceRequest { op, offset, len, segments: &segments };
        return device::run(dev, &req, !io.plugged()).await.map_err(Error::Device);
    }
    move_bytes(io, node, dev, offset, buf).await
}

/// [`rw`] for a read done at once: the range goes straight into `buf` as one device request,
/// no serialising request is in flight that the read would wait for, and the device runs it in
/// the caller's thread ([`BlockDevice::rw_now`]). `None` if any of that does not hold; then
/// nothing was read.
pub(crate) fn read_now(io: &Io<'_, '_>, id: NodeId, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
    let node = io.node(id).ok()?;
    let dev = node.device()?;
    let len = buf.len() as u64;
    let end = offset.checked_add(len).filter(|&e| e <= node.size())?;
    // A read-only leaf has no serialising requests (see `rw`).
    if len == 0 || !(node.read_only || goes_now(io, node, offset, end, buf.as_ptr() as usize)) {
        return None;
    }
    let segments = [Segment::from_mut(buf)];
    let req = DeviceRequest { op: DeviceOp::Read, offset, len, segments: &segments };
    Some(device::run_now(dev, &req)?.map_err(Error::Device))
}

/// [`rw`]'s write done at once, with no tracked request: as [`read_now`], whole blocks straight
/// from `buf` (so no read-modify-write) while no serialising request is in flight. It needs no
/// tracked request because nothing can start beside it: it is done when this returns. `None`
/// if it cannot be; then nothing was written.
fn write_now(io: &Io<'_, '_>, node: &Node<'_>, dev: &dyn BlockDevice, offset: u64, end: u64, buf: &[u8]) -> Option<Result<()>> {
    if !goes_now(io, node, offset, end, buf.as_ptr() as usize) {
        return None;
    }
    let segments = [Segment::from_ref(buf)];
    let req = DeviceRequest { op: DeviceOp::Write, offset, len: end - offset, segments: &segments };
    let result = device::run_now(dev, &req)?;
    // Counted for the next flush, written or failed (see `WriteGen`).
    drop(WriteGen(&node.flush.write_gen));
    Some(result.map_err(Error::Device))
}

/// True if `[offset, end)` of leaf `node`, with memory at `addr`, goes to the device as one
/// request and no serialising request is in flight at the leaf.
fn goes_now(io: &Io<'_, '_>, node: &Node<'_>, offset: u64, end: u64, addr: usize) -> bool {
    io.tracker.serialising() == 0 && direct_len(node, offset, end, addr) == end - offset
}

/// The data movement of [`rw`], for a caller that already holds a tracked request covering
/// `[offset, offset + buf.len())` — serialising over whole blocks if it writes partial ones — and
/// bumps the write generation itself. The range must lie inside the node.
pub(crate) async fn move_bytes(
    io: &Io<'_, '_>,
    node: &Node<'_>,
    dev: &dyn BlockDevice,
    offset: u64,
    mut buf: Buf<'_>,
) -> Result<()> {
    let writing = matches!(buf, Buf::Write(_));
    let align = u64::from(node.limits.request_alignment);
    let end = offset + buf.len() as u64;
    let mut bounce: Option<Bounce<'_, '_>> = None;
    let mut pos = offset;
    while pos < end {
        let at = (pos - offset) as usize;
        let direct = direct_len(node, pos, end, buf.addr(at));
        if direct > 0 {
            let n = direct as usize;
            let segment = match &mut buf {
                Buf::Read(b) => Segment::from_mut(&mut b[at..at + n]),
                Buf::Write(b) => Segment::from_ref(&b[at..at + n]),
            };
            let op = if writing { DeviceOp::Write } else { DeviceOp::Read };
            transfer(io, dev, op, pos, &[segment]).await?;
            pos += direct;
            continue;
        }
        // Bounce one window: whole blocks around `pos`, at most one buffer long.
        if bounce.is_none() {
            bounce = Some(io.bounce.take(1).await?);
        }
        let window = bounce.as_mut().and_then(|b| b.get(0)).ok_or(Error::NoSpace { what: "bounce buffers" })?;
        // A window is one device request: it must fit max_transfer and the segment size too.
        let max_io = u64::from(node.limits.max_transfer.min(node.limits.max_segment_size));
        let usable = ((window.len() as u64).min(max_io) / align * align) as usize;
        if usable == 0 {
            return Err(Error::Unsupported("bounce buffers smaller than the device block size"));
        }
        let wstart = pos / align * align;
        let wend = (end.div_ceil(align) * align).min(wstart + usable as u64);
        let cover_end = end.min(wend);
        let wlen = (wend - wstart) as usize;
        let data = &mut window[..wlen];
        let (lo, hi) = ((pos - wstart) as usize, (cover_end - wstart) as usize);
        match &mut buf {
            Buf::Read(b) => {
                transfer(io, dev, DeviceOp::Read, wstart, &[Segment::from_mut(data)]).await?;
                b[at..at + (hi - lo)].copy_from_slice(&data[lo..hi]);
            }
            Buf::Write(b) => {
                let block = align as usize;
                if lo > 0 {
                    transfer(io, dev, DeviceOp::Read, wstart, &[Segment::from_mut(&mut data[..block])]).await?;
                }
                if hi < wlen && (lo == 0 || wlen > block) {
                    let tail = wlen - block;
                    transfer(io, dev, DeviceOp::Read, wstart + tail as u64, &[Segment::from_mut(&mut data[tail..])]).await?;
                }
                data[lo..hi].copy_from_slice(&b[at..at + (hi - lo)]);
                transfer(io, dev, DeviceOp::Write, wstart, &[Segment::from_ref(data)]).await?;
            }
        }
        pos = cover_end;
    }
    Ok(())
}

/// Most parts of one vectored write (head copy-on-write, data, tail copy-on-write).
pub(crate) const MAX_PARTS: usize = 3;

/// Writes `parts` back to back from byte `offset` of leaf `id` as one tracked request: as one
/// device request with a segment per part where every part can go straight to the device,
/// else part by part.
pub(crate) async fn write_vectored(io: &Io<'_, '_>, id: NodeId, offset: u64, parts: &[&[u8]]) -> Result<()> {
    if let [one] = parts {
        return rw(io, id, offset, Buf::Write(one)).await;
    }
    let node = io.node(id)?;
    let dev = node.device().ok_or(Error::BadGraph("leaf I/O on a format node"))?;
    let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let end = offset.checked_add(len).filter(|&e| e <= node.size()).ok_or(Error::OutOfRange { offset, len, size: node.size() })?;
    if node.read_only {
        return Err(Error::ReadOnly);
    }
    node.threshold.check(offset, len);
    let align = u64::from(node.limits.request_alignment);
    let tracked = io.tracker.begin(id, ReqKind::Write, offset, len).await;
    if !offset.is_multiple_of(align) || end % align != 0 {
        tracked.serialise(align);
    }
    tracked.wait_serialising().await;
    let _generation = WriteGen(&node.flush.write_gen);
    let mut segments: heapless::Vec<Segment, MAX_PARTS> = heapless::Vec::new();
    let mut pos = offset;
    let mut direct = parts.len() <= usize::from(node.limits.max_segments) && len <= u64::from(node.limits.max_transfer);
    for p in parts {
        let n = p.len() as u64;
        direct &= n > 0 && direct_len(node, pos, pos + n, p.as_ptr() as usize) == n;
        direct &= segments.push(Segment::from_ref(p)).is_ok();
        pos += n;
    }
    if direct {
        return transfer(io, dev, DeviceOp::Write, offset, &segments).await;
    }
    let mut pos = offset;
    for p in parts {
        move_bytes(io, node, dev, pos, Buf::Write(p)).await?;
        pos += p.len() as u64;
    }
    Ok(())
}

/// Bytes from `pos` that can go straight to the device with memory at `addr`: 0 if `pos` is not
/// block-aligned, fewer than a block remain, or the memory is misaligned.
fn direct_len(node: &Node<'_>, pos: u64, end: u64, addr: usize) -> u64 {
    let l = &node.limits;
    let align = u64::from(l.request_alignment);
    let mem = u64::from(l.mem_alignment);
    let n = (end - pos).min(u64::from(l.max_transfer.min(l.max_segment_size)));
    // `BlockLimits` keeps both alignments powers of two: masks, not divisions, on every request.
    if align.is_power_of_two() && mem.is_power_of_two() {
        if pos & (align - 1) != 0 || (addr as u64) & (mem - 1) != 0 {
            return 0;
        }
        return n & !(align.max(mem) - 1);
    }
    if !pos.is_multiple_of(align) || !(addr as u64).is_multiple_of(mem) {
        return 0;
    }
    let unit = align.max(mem);
    n / unit * unit
}

/// One device request, with the graph's plug state deciding whether to notify at once.
pub(crate) async fn transfer(
    io: &Io<'_, '_>,
    dev: &dyn BlockDevice,
    op: DeviceOp,
    offset: u64,
    segments: &[Segment],
) -> Result<()> {
    let len = segments.iter().map(|s| s.len as u64).sum();
    let req = DeviceRequest { op, offset, len, segments };
    device::run(dev, &req, !io.plugged()).await.map_err(Error::Device)
}

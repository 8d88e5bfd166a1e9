//! Copy-on-read (QEMU's `BDRV_REQ_COPY_ON_READ`, `bdrv_co_do_copy_on_readv`), for reads through a
//! node whose driver asks for it ([`crate::driver::Driver::copy_on_read`], the `copy-on-read`
//! filter): the child's extents found in its backing chain — no deeper than the filter's
//! `bottom` — are read a whole allocation unit ((sub)cluster) at a time and written into the
//! child, so the child needs no copy-on-write for them and the next read finds them there. A
//! unit larger than a bounce buffer is written from the guest's buffer instead, the child's
//! copy-on-write filling the rest of it from the chain.
//!
//! Each unit is read and written back under the child's own write request (serialising over
//! its clusters, as QEMU makes a copy-on-read request serialising), so a guest write to the same
//! clusters waits and is never overwritten with the older data. A failed write-back is not the
//! read's failure: the guest gets its data either way (QEMU fails the read; the issue this was
//! built for asks that a failed copy never fail a read). Internal reads (a copy-on-write's
//! source, a probe) never come here: only requests that enter the filter do.

use super::walk::{self, ExtentKind};
use super::write::write_planned;
use super::Stack;
use crate::error::{Error, Result};
use crate::io::tracked::ReqKind;
use crate::node::NodeId;

/// Reads `buf` at `offset` of copy-on-read node `node`, copying what its child holds at most
/// `max_depth` backing links down into the child.
pub(crate) async fn read(s: &Stack<'_, '_>, node: NodeId, max_depth: u16, offset: u64, buf: &mut [u8]) -> Result<()> {
    let here = s.node(node)?;
    let len = buf.len() as u64;
    if offset.checked_add(len).is_none_or(|end| end > here.size()) {
        return Err(Error::OutOfRange { offset, len, size: here.size() });
    }
    let pass = here.pass.ok_or(Error::BadGraph("a copy-on-read node passes to its child"))?;
    let child = here.child(pass.role).ok_or(Error::BadGraph("copy-on-read without its child"))?;
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + pass.offset + done as u64;
        let extent = walk::block_status(s, child, pos, (buf.len() - done) as u64).await?;
        let n = usize::try_from(extent.len).unwrap_or(usize::MAX).min(buf.len() - done);
        let part = &mut buf[done..done + n];
        let from_chain = (1..=max_depth).contains(&extent.depth) && !matches!(extent.kind, ExtentKind::Hole | ExtentKind::Sink);
        if from_chain {
            copy_up(s, child, pos, part).await?;
        } else {
            walk::read_request(s, child, pos, part).await?;
        }
        done += n;
    }
    Ok(())
}

/// Reads `out` from `pos` of `child` and writes the allocation units it covers into `child`,
/// unit-aligned pieces of at most one bounce buffer, each under one write request.
async fn copy_up(s: &Stack<'_, '_>, child: NodeId, pos: u64, out: &mut [u8]) -> Result<()> {
    let state = s.driver(child)?;
    let unit = state.allocation_unit();
    // A child that does not allocate is only read.
    if unit == 0 {
        return walk::read_request(s, child, pos, out).await;
    }
    let size = s.node(child)?.size();
    let end = pos + out.len() as u64;
    let (first, last) = (pos / unit * unit, end.div_ceil(unit).saturating_mul(unit).min(size));
    if unit > s.bounce.buffer_size() as u64 {
        // A unit larger than a bounce buffer (2 MiB clusters): the guest's data is read into
        // its own buffer and written from there, and the child's write copies the rest of
        // each unit from the chain (its copy-on-write). No bounce buffer is held meanwhile, so
        // the copy-on-write's own cannot wait on this one. Under one write request over the
        // whole units, as below.
        let request = state.begin_write(s, child, ReqKind::Write, first, last - first).await?;
        walk::read(s, child, pos, out).await?;
        // The data is already the guest's; a failed write-back only leaves it uncopied.
        let _ = write_planned(s, child, state, pos, out).await;
        drop(request);
        return Ok(());
    }
    let mut bounce = s.bounce.take_for_copy(1).await?;
    let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
    // Whole units per piece.
    let piece = buf.len() as u64 / unit * unit;
    let mut at = first;
    while at < last {
        let n = (last - at).min(piece);
        let request = state.begin_write(s, child, ReqKind::Write, at, n).await?;
        let data = &mut buf[..n as usize];
        walk::read(s, child, at, data).await?;
        // The caller's part of this piece.
        let (from, to) = (at.max(pos), (at + n).min(end));
        if from < to {
            out[(from - pos) as usize..(to - pos) as usize].copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
        }
        // The data is already the guest's; a failed write-back only leaves it uncopied.
        let _ = write_planned(s, child, state, at, data).await;
        drop(request);
        at += n;
    }
    Ok(())
}

//! Metadata I/O of a format on its file (or data-file) child, without re-entering a format.
//!
//! A format reads its headers and tables through this module, never through the walk: the child
//! is resolved through translation-only nodes (raw windows, filters) by the [`Pass`] each keeps
//! down to a leaf, where [`leaf::rw`] moves the bytes. So the async call graph stays acyclic
//! (`docs/ARCHITECTURE.md`, "No heap means no recursion"): walk → driver → child_io → leaf, and
//! never back up.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::io::verify::{self, Verifier};
use crate::node::{Gate, NodeId, NodeKind, Pass, Role, MAX_DEPTH};
use crate::io::throttle::Direction;
use crate::io::leaf::{self, Buf};
use crate::io::RangeOp;
use crate::io::debug::IoType;

/// The leaf and offset where `len` bytes at `offset` of `node` live; the range must lie inside
/// every node on the way down.
fn to_leaf(io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<(NodeId, u64)> {
    route(io, node, offset, len).map(|r| (r.leaf, r.at))
}

/// Where a request of a format on its file child goes.
struct Route {
    /// The leaf.
    leaf: NodeId,
    /// The offset on it.
    at: u64,
    /// The first `blkverify` node on the way ([`Gate::Verify`]): its reference and the
    /// request's offset there.
    verify: Option<Verifier>,
}

/// [`to_leaf`], with the verifying node on the way.
fn route(io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Route> {
    let (mut cur, mut off) = (node, offset);
    let mut verify = None;
    for _ in 0..MAX_DEPTH {
        let here = io.node(cur)?;
        match off.checked_add(len) {
            Some(end) if end <= here.size() => {}
            _ => return Err(Error::OutOfRange { offset: off, len, size: here.size() }),
        }
        if let NodeKind::Leaf(_) = here.kind {
            return Ok(Route { leaf: cur, at: off, verify });
        }
        if here.gate == Gate::Verify && verify.is_none() {
            let reference = here.child(Role::Reference).ok_or(Error::BadGraph("blkverify without its reference"))?;
            verify = Some(Verifier { reference, offset: off });
        }
        let Pass { role, offset } = here.pass.ok_or(Error::BadGraph("metadata I/O through a node that is not translation-only"))?;
        cur = here.child(role).ok_or(Error::BadGraph("translation names a missing child"))?;
        off = off.checked_add(offset).ok_or(Error::OutOfRange { offset: off, len, size: here.size() })?;
    }
    Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
}

/// Compares `buf`, read at `v.offset` of a verifying node, with its reference
/// ([`crate::io::verify`]); the walk uses it for data it read through such a node.
pub(crate) async fn compare_with_reference(io: &Io<'_, '_>, v: Verifier, buf: &[u8]) -> Result<()> {
    let (leaf, at) = to_leaf(io, v.reference, v.offset, buf.len() as u64)?;
    verify::compare(io, leaf, at, v.offset, buf).await
}

/// The reference's leaf and offset for a request of `len` bytes that passed `v`.
fn reference_leaf(io: &Io<'_, '_>, v: Verifier, len: u64) -> Result<(NodeId, u64)> {
    to_leaf(io, v.reference, v.offset, len)
}

/// The gates of the nodes from `node` down to its leaf, for a request of `kind` over
/// `[offset, offset + len)`: blkdebug's rules ([`Io::debug_check_path`]) and throttle groups
/// ([`Gate::Throttle`]), which hold the format's I/O as the walk holds requests entering the
/// node. Without blkdebug nodes or throttle groups, two comparisons.
async fn gates(io: &Io<'_, '_>, node: NodeId, kind: IoType, offset: u64, len: u64) -> Result<()> {
    if io.has_debug() {
        io.debug_check_path(node, kind, offset, len).await?;
    }
    if io.throttle_groups.iter().all(Option::is_none) {
        return Ok(());
    }
    let dir = match kind {
        IoType::Read => Direction::Read,
        IoType::Write | IoType::WriteZeroes | IoType::Discard => Direction::Write,
        IoType::Flush | IoType::BlockStatus => return Ok(()),
    };
    let mut cur = node;
    for _ in 0..MAX_DEPTH {
        let here = io.node(cur)?;
        if let Gate::Throttle { group, member } = here.gate {
            io.throttle_group_at(group)?.admit(io, member, dir, len).await?;
        }
        match here.pass.and_then(|p| here.child(p.role)) {
            Some(child) => cur = child,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Size in bytes of `node` (the end of its file, for a format's child).
pub(crate) fn size(io: &Io<'_, '_>, node: NodeId) -> Result<u64> {
    Ok(io.node(node)?.size())
}

/// Reads exactly `buf.len()` bytes at `offset` of `node`; [`Error::OutOfRange`] if any of them
/// lies past its end.
pub(crate) async fn read(io: &Io<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    gates(io, node, IoType::Read, offset, buf.len() as u64).await?;
    let r = route(io, node, offset, buf.len() as u64)?;
    leaf::rw(io, r.leaf, r.at, Buf::Read(buf)).await?;
    match r.verify {
        Some(v) => compare_with_reference(io, v, buf).await,
        None => Ok(()),
    }
}

/// Reads what of `buf.len()` bytes at `offset` of `node` lies before its end and fills the rest
/// with zeros (a table whose last cluster the file does not hold in full); returns the bytes
/// actually read.
pub(crate) async fn read_upto(io: &Io<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let end = size(io, node)?;
    let n = end.saturating_sub(offset).min(buf.len() as u64) as usize;
    let (head, tail) = buf.split_at_mut(n);
    tail.fill(0);
    read(io, node, offset, head).await?;
    Ok(n)
}

/// Writes `buf` at `offset` of `node` (metadata, or a format's data on its data child); every
/// byte must lie inside the node ([`grow`] it first).
pub(crate) async fn write(io: &Io<'_, '_>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    gates(io, node, IoType::Write, offset, buf.len() as u64).await?;
    let r = route(io, node, offset, buf.len() as u64)?;
    leaf::rw(io, r.leaf, r.at, Buf::Write(buf)).await?;
    if let Some(v) = r.verify {
        let (leaf, at) = reference_leaf(io, v, buf.len() as u64)?;
        leaf::rw(io, leaf, at, Buf::Write(buf)).await?;
    }
    Ok(())
}

/// Writes `parts` back to back from `offset` of `node` as one leaf request where the leaf
/// allows (a copy-on-write head, the data and a copy-on-write tail).
pub(crate) async fn write_vectored(io: &Io<'_, '_>, node: NodeId, offset: u64, parts: &[&[u8]]) -> Result<()> {
    let len = parts.iter().map(|p| p.len() as u64).sum();
    if len == 0 {
        return Ok(());
    }
    gates(io, node, IoType::Write, offset, len).await?;
    let r = route(io, node, offset, len)?;
    leaf::write_vectored(io, r.leaf, r.at, parts).await?;
    if let Some(v) = r.verify {
        let (leaf, at) = reference_leaf(io, v, len)?;
        leaf::write_vectored(io, leaf, at, parts).await?;
    }
    Ok(())
}

/// Makes `node` at least `min_size` bytes long (an image file growing as clusters are
/// allocated at its end). Only a leaf grows: a window of fixed size over it cannot, and a
/// device of fixed size (a virtio disk) reports [`Error::NoSpace`]-like device errors.
pub(crate) fn grow(io: &Io<'_, '_>, node: NodeId, min_size: u64) -> Result<u64> {
    let here = io.node(node)?;
    if min_size <= here.size() {
        return Ok(here.size());
    }
    if !byte_filter(here) {
        return grow_node(io, node, min_size);
    }
    // A blkdebug or blkverify node is its image, byte for byte: the image grows under it, and
    // every such node on the way down with it; a blkverify node's reference grows too.
    let mut bottom = node;
    for _ in 0..MAX_DEPTH {
        let n = io.node(bottom)?;
        if !byte_filter(n) {
            break;
        }
        if n.gate == Gate::Verify {
            grow_node(io, n.child(Role::Reference).ok_or(Error::BadGraph("blkverify without its reference"))?, min_size)?;
        }
        bottom = n.child(Role::File).ok_or(Error::BadGraph("filter node without its child"))?;
    }
    let new = grow_node(io, bottom, min_size)?;
    let mut cur = node;
    while cur != bottom {
        let n = io.node(cur)?;
        n.size.set(new);
        cur = n.child(Role::File).ok_or(Error::BadGraph("filter node without its child"))?;
    }
    Ok(new)
}

/// True for the filters whose size is their file child's as it grows (`blkdebug`,
/// `blkverify`).
fn byte_filter(n: &crate::node::Node<'_>) -> bool {
    n.driver == crate::io::debug::DRIVER_NAME || n.gate == Gate::Verify
}

/// [`grow`] for a node that is not a blkdebug or blkverify node: only a leaf grows.
fn grow_node(io: &Io<'_, '_>, node: NodeId, min_size: u64) -> Result<u64> {
    let here = io.node(node)?;
    if min_size <= here.size() {
        return Ok(here.size());
    }
    let dev = here.device().ok_or(Error::NoSpace { what: "room in the image file (its node cannot grow)" })?;
    let new = dev.grow(min_size).map_err(|e| match e {
        crate::dev::DeviceError::NoSpace => Error::NoSpace { what: "room on the device holding the image" },
        other => Error::Device(other),
    })?;
    here.size.set(new);
    Ok(new)
}

/// Passes a discard of `len` bytes at `offset` of `node` down to its leaf (advisory).
pub(crate) async fn discard(io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<()> {
    let Some((add, limits)) = discard_cutter(io, node, len) else {
        gates(io, node, IoType::Discard, offset, len).await?;
        return range_op(io, node, offset, len, RangeOp::Discard).await;
    };
    // QEMU's bdrv_co_pdiscard at the node whose `max_discard` is smaller than the range (a
    // blkdebug node's `max-discard`): pieces up to its alignment, then aligned pieces of at most
    // its limit, each passing the gates on its own (a rule's `sector=` fails only its piece,
    // and the pieces before it reach the file); a piece smaller than the alignment is not
    // passed down (blkdebug's -ENOTSUP, which QEMU ignores).
    let align = u64::from(limits.discard_alignment.max(limits.request_alignment)).max(1);
    let most = (u64::from(limits.max_discard) / align * align).max(align);
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let at = pos + add;
        let mut n = end - pos;
        if !at.is_multiple_of(align) {
            n = n.min(align - at % align);
        } else if n > align && !(at + n).is_multiple_of(align) {
            n -= (at + n) % align;
        }
        n = n.min(most);
        if n >= align {
            gates(io, node, IoType::Discard, pos, n).await?;
            range_op(io, node, pos, n, RangeOp::Discard).await?;
        }
        pos += n;
    }
    Ok(())
}

/// The first blkdebug node from `node` down whose `max_discard` is below `len`: the offset it
/// adds to `node`'s and its limits.
fn discard_cutter(io: &Io<'_, '_>, node: NodeId, len: u64) -> Option<(u64, crate::node::BlockLimits)> {
    if !io.has_debug() {
        return None;
    }
    let (mut cur, mut add) = (node, 0u64);
    for _ in 0..MAX_DEPTH {
        let here = io.node(cur).ok()?;
        if here.driver == crate::io::debug::DRIVER_NAME && u64::from(here.limits.max_discard) < len {
            return Some((add, here.limits));
        }
        let p = here.pass?;
        cur = here.child(p.role)?;
        add = add.checked_add(p.offset)?;
    }
    None
}

/// `op` at the leaf below `node`, and on a verifying node's reference after it.
async fn range_op(io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64, op: RangeOp) -> Result<()> {
    let r = route(io, node, offset, len)?;
    crate::io::zero::leaf_range_op(io, r.leaf, r.at, len, op).await?;
    if let Some(v) = r.verify {
        let (leaf, at) = reference_leaf(io, v, len)?;
        crate::io::zero::leaf_range_op(io, leaf, at, len, op).await?;
    }
    Ok(())
}

/// Makes `len` bytes at `offset` of `node` read as zeros, offloaded to the leaf where it can
/// (virtio-blk's and host files' write-zeroes), else written from a zero buffer.
pub(crate) async fn write_zeroes(io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<()> {
    gates(io, node, IoType::WriteZeroes, offset, len).await?;
    range_op(io, node, offset, len, RangeOp::WriteZeroes { unmap: false }).await
}

//! The generic data path: formats map, this code moves data (DESIGN.md, "The data path").
//!
//! A request at a node is resolved extent by extent: starting at the node, each format driver is
//! asked where the range lives ([`Mapping`]); `Data` continues at a child at a translated offset,
//! `Unallocated` continues at the backing child at the same offset, `Zero` ends in zeros. The
//! walk is a loop bounded by [`MAX_DEPTH`], never a recursion, and ends at a leaf where
//! [`leaf::rw`] moves the bytes.

use crate::driver::Mapping;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, NodeKind, Role, MAX_DEPTH};
use crate::io::leaf::{self, Buf};

/// Where one extent of a request lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// On this leaf at this offset.
    Leaf(NodeId, u64),
    /// Reads as zeros.
    Zero,
}

/// Resolves the longest extent starting at `offset` (at most `len` bytes) of `node`.
pub(crate) async fn resolve<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64, writing: bool) -> Result<(Target, u64)> {
    let (mut cur, mut off, mut n) = (node, offset, len);
    for _ in 0..MAX_DEPTH {
        let here = graph.node(cur)?;
        if off >= here.size {
            // Below a larger overlay: past this node's end reads as zeros.
            return if writing { Err(Error::OutOfRange { offset: off, len: n, size: here.size }) } else { Ok((Target::Zero, n)) };
        }
        n = n.min(here.size - off);
        let state = match &here.kind {
            NodeKind::Leaf(_) => return Ok((Target::Leaf(cur, off), n)),
            NodeKind::Format(state) => state,
        };
        match state.map(off, n).await? {
            Mapping::Data { role, offset, len, writable } => {
                if writing && !writable {
                    return Err(Error::Unsupported("copy-on-write of a shared or compressed cluster"));
                }
                cur = here.child(role).ok_or(Error::BadGraph("mapping names a missing child"))?;
                off = offset;
                n = n.min(len);
            }
            Mapping::Zero { len } => {
                if writing {
                    return Err(Error::Unsupported("allocating writes"));
                }
                return Ok((Target::Zero, n.min(len)));
            }
            Mapping::Unallocated { len } => {
                n = n.min(len);
                if writing {
                    return Err(Error::Unsupported("allocating writes"));
                }
                match here.child(Role::Backing) {
                    Some(backing) => cur = backing,
                    None => return Ok((Target::Zero, n)),
                }
            }
        }
        if n == 0 {
            return Err(Error::BadGraph("a driver mapped an empty extent"));
        }
    }
    Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
}

/// Reads `buf` from byte `offset` of `node`.
pub(crate) async fn read<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = (buf.len() - done) as u64;
        let (target, n) = resolve(graph, node, offset + done as u64, rest, false).await?;
        let part = &mut buf[done..done + n as usize];
        match target {
            Target::Leaf(leaf, at) => leaf::rw(graph, leaf, at, Buf::Read(part)).await?,
            Target::Zero => part.fill(0),
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes `buf` at byte `offset` of `node`.
pub(crate) async fn write<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = (buf.len() - done) as u64;
        let (target, n) = resolve(graph, node, offset + done as u64, rest, true).await?;
        let Target::Leaf(leaf, at) = target else { return Err(Error::Unsupported("write into a zero extent")) };
        leaf::rw(graph, leaf, at, Buf::Write(&buf[done..done + n as usize])).await?;
        done += n as usize;
    }
    Ok(())
}

/// Runs `op` (write-zeroes or discard) over `len` bytes at `offset` of `node`, extent by extent.
pub(crate) async fn range_op<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64, op: RangeOp) -> Result<()> {
    let mut done = 0u64;
    while done < len {
        let (target, n) = resolve(graph, node, offset + done, len - done, true).await?;
        let Target::Leaf(leaf, at) = target else { return Err(Error::Unsupported("range operation on a zero extent")) };
        crate::io::zero::leaf_range_op(graph, leaf, at, n, op).await?;
        done += n;
    }
    Ok(())
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

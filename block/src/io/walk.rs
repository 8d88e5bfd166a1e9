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
    /// Reads as zeros: a layer says so (a zero cluster).
    Zero,
    /// Reads as zeros: no layer of the chain has it (or it lies past a shorter backing file).
    Hole,
    /// Inside a compressed cluster of format node `node`: decoded by its driver.
    Compressed {
        /// The format node.
        node: NodeId,
        /// Compressed data in its file child.
        host: u64,
        /// Its length.
        csize: u64,
        /// Offset inside the decoded cluster.
        skip: u64,
    },
}

/// A resolved extent: where, how long, and how many backing links were followed to get there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) target: Target,
    pub(crate) len: u64,
    pub(crate) depth: u8,
    /// The last node that is not translation-only to map the extent as data in this layer.
    pub(crate) mapped_by: Option<NodeId>,
}

/// Resolves the longest extent starting at `offset` (at most `len` bytes) of `node`.
pub(crate) async fn resolve<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64, writing: bool) -> Result<(Target, u64)> {
    locate(graph, node, offset, len, writing).await.map(|l| (l.target, l.len))
}

/// [`resolve`], with the backing depth.
pub(crate) async fn locate<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64, writing: bool) -> Result<Located> {
    let (mut cur, mut off, mut n) = (node, offset, len);
    let mut depth = 0u8;
    let mut mapped_by = None;
    let done = |target, len, depth, mapped_by| Ok(Located { target, len, depth, mapped_by });
    for _ in 0..MAX_DEPTH {
        let here = graph.node(cur)?;
        if off >= here.size() {
            // Below a larger overlay: past this node's end reads as zeros.
            return if writing { Err(Error::OutOfRange { offset: off, len: n, size: here.size() }) } else { done(Target::Hole, n, depth, None) };
        }
        n = n.min(here.size() - off);
        let state = match &here.kind {
            NodeKind::Leaf(_) => return done(Target::Leaf(cur, off), n, depth, mapped_by),
            NodeKind::Format(state) => state,
        };
        match state.map(graph, cur, off, n).await? {
            Mapping::Data { role, offset, len, writable } => {
                if writing && !writable {
                    return Err(Error::Unsupported("copy-on-write of a shared or compressed cluster"));
                }
                if !here.driver.caps.contains(crate::driver::DriverCaps::TRANSLATION_ONLY) {
                    mapped_by = Some(cur);
                }
                cur = here.child(role).ok_or(Error::BadGraph("mapping names a missing child"))?;
                off = offset;
                n = n.min(len);
            }
            Mapping::Zero { len } => {
                if writing {
                    return Err(Error::Unsupported("allocating writes"));
                }
                return done(Target::Zero, n.min(len), depth, None);
            }
            Mapping::Unallocated { len } => {
                n = n.min(len);
                if writing {
                    return Err(Error::Unsupported("allocating writes"));
                }
                match here.child(Role::Backing) {
                    Some(backing) => {
                        cur = backing;
                        depth = depth.saturating_add(1);
                    }
                    None => return done(Target::Hole, n, depth, None),
                }
            }
            Mapping::Compressed { host_offset, csize, skip, len } => {
                if writing {
                    return Err(Error::Unsupported("copy-on-write of a shared or compressed cluster"));
                }
                return done(Target::Compressed { node: cur, host: host_offset, csize, skip }, n.min(len), depth, Some(cur));
            }
        }
        if n == 0 {
            return Err(Error::BadGraph("a driver mapped an empty extent"));
        }
    }
    Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
}

/// Reads `buf` from byte `offset` of `node` as a request of its own: at a node that allocates
/// and frees while written, the read is tracked there, so no cluster it reads is freed (and
/// reused) before it is done. Internal reads (copy-on-write sources) use [`read`].
pub(crate) async fn read_request<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    let tracks = matches!(&graph.node(node)?.kind, NodeKind::Format(state) if state.tracks_reads());
    if !tracks {
        return read(graph, node, offset, buf).await;
    }
    let tracked = graph.format_tracker.begin(node, crate::io::tracked::ReqKind::Read, offset, buf.len() as u64).await;
    tracked.wait_serialising().await;
    read(graph, node, offset, buf).await
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
            Target::Zero | Target::Hole => part.fill(0),
            Target::Compressed { node: fmt, host, csize, skip } => {
                let NodeKind::Format(state) = &graph.node(fmt)?.kind else {
                    return Err(Error::BadGraph("compressed extent on a leaf"));
                };
                state.read_compressed(graph, fmt, host, csize, skip, part).await?;
            }
        }
        done += n as usize;
    }
    Ok(())
}

/// What one extent of a node is, as `qemu-img map` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// Data on a leaf at an offset (reached through the chain).
    Data {
        /// The leaf.
        leaf: NodeId,
        /// Offset on it.
        offset: u64,
        /// The format node that mapped it (a qcow2 node), or `None` if only translation nodes
        /// (raw) lie between the layer and the leaf.
        mapped_by: Option<NodeId>,
    },
    /// A compressed cluster (data, no plain offset).
    Compressed,
    /// A layer says zeros.
    Zero,
    /// No layer has it: zeros.
    Hole,
}

/// One extent of a node: its kind, length, and the backing depth where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// What it is.
    pub kind: ExtentKind,
    /// Length in bytes (at least 1).
    pub len: u64,
    /// Backing links followed (0: the node itself).
    pub depth: u8,
}

/// The extent starting at `offset` of `node`, at most `len` bytes (QEMU's block status, for
/// `img map`). Reads metadata only.
pub async fn block_status<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64) -> Result<Extent> {
    let l = locate(graph, node, offset, len, false).await?;
    let kind = match l.target {
        Target::Leaf(leaf, offset) => ExtentKind::Data { leaf, offset, mapped_by: l.mapped_by },
        Target::Zero => ExtentKind::Zero,
        Target::Hole => ExtentKind::Hole,
        Target::Compressed { .. } => ExtentKind::Compressed,
    };
    Ok(Extent { kind, len: l.len, depth: l.depth })
}

/// The format state of `node` if its driver handles whole write requests itself (qcow2).
fn writer<'g, 'd, const N: usize, const T: usize>(graph: &'g Graph<'d, N, T>, node: NodeId) -> Result<Option<&'g crate::driver::FormatState>> {
    Ok(match &graph.node(node)?.kind {
        NodeKind::Format(state) if state.writes_itself() => Some(state),
        _ => None,
    })
}

/// Writes `buf` at byte `offset` of `node`: a driver that writes itself gets the whole request,
/// anything else is mapped extent by extent down to leaves.
pub(crate) async fn write<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
    if let Some(state) = writer(graph, node)? {
        return state.write(graph, node, offset, buf).await;
    }
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
    if let Some(state) = writer(graph, node)? {
        return state.range_op(graph, node, offset, len, op).await;
    }
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

//! The static driver table (QEMU's `BlockDriver`s): one `static` descriptor per driver, probing
//! over the first 512 bytes of an image, and dispatch from a node's state to its driver.
//!
//! Adding a format is: a module with its descriptor and state, one entry in [`DRIVERS`], one
//! variant in [`FormatState`] and one arm in each of its `match`es. The io layer and the graph
//! do not change.

pub mod qcow2;
pub mod raw;

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Role};
use crate::options::OptionsView;

/// Bytes of an image a probe looks at (QEMU's `BLOCK_PROBE_BUF_SIZE`).
pub const PROBE_BYTES: usize = 512;

bitflags::bitflags! {
    /// What a driver can do.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DriverCaps: u32 {
        /// Opens on top of a file child (a format or filter), not a device.
        const FORMAT = 1 << 0;
        /// Writes are supported.
        const WRITE = 1 << 1;
        /// Can have a backing child.
        const BACKING = 1 << 2;
        /// Maps 1:1 onto its file child (raw window, filters): may sit under a format.
        const TRANSLATION_ONLY = 1 << 3;
    }
}

/// A driver descriptor.
#[derive(Debug)]
pub struct DriverDesc {
    /// The name used in `driver=`.
    pub name: &'static str,
    /// Capabilities.
    pub caps: DriverCaps,
    /// Scores the first [`PROBE_BYTES`] of an image (0: not this format; raw scores 1).
    pub probe: Option<fn(&[u8]) -> u32>,
    /// Option keys the driver accepts besides the common ones (`driver`, `node-name`,
    /// `read-only`, `file`).
    pub options: &'static [&'static str],
}

/// Leaf devices' pseudo-driver: devices are attached by name, never opened by `driver=`.
pub static DEVICE: DriverDesc = DriverDesc { name: "device", caps: DriverCaps::WRITE, probe: None, options: &[] };

/// Every format and filter driver, in probe order.
pub static DRIVERS: &[&DriverDesc] = &[&qcow2::QCOW2, &raw::RAW];

/// The driver named `name`.
pub fn by_name(name: &str) -> Result<&'static DriverDesc> {
    DRIVERS.iter().copied().find(|d| d.name == name).ok_or(Error::UnknownDriver)
}

/// The driver whose probe scores `head` highest; raw when nothing else claims it.
pub fn probe(head: &[u8]) -> &'static DriverDesc {
    let head = &head[..head.len().min(PROBE_BYTES)];
    DRIVERS
        .iter()
        .copied()
        .filter_map(|d| d.probe.map(|p| (p(head), d)))
        .filter(|&(score, _)| score > 0)
        .max_by_key(|&(score, _)| score)
        .map_or(&raw::RAW, |(_, d)| d)
}

/// Where a range of a format node lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// In the child with this role, at `offset`, for `len` bytes. `writable`: the node owns
    /// these bytes alone and they may be overwritten in place.
    Data {
        /// The child.
        role: Role,
        /// Offset in the child.
        offset: u64,
        /// Length of the extent.
        len: u64,
        /// May be overwritten in place.
        writable: bool,
    },
    /// Reads as zeros for `len` bytes.
    Zero {
        /// Length of the extent.
        len: u64,
    },
    /// Not allocated here: read from the backing child (zeros without one) for `len` bytes.
    Unallocated {
        /// Length of the extent.
        len: u64,
    },
    /// Inside one compressed cluster: the format decodes it ([`FormatState::read_compressed`])
    /// and the io layer copies `len` bytes starting `skip` bytes into the decoded cluster.
    Compressed {
        /// First byte of the compressed data in the file child.
        host_offset: u64,
        /// Bytes of compressed data the descriptor covers.
        csize: u64,
        /// Offset of the extent inside the decoded cluster.
        skip: u64,
        /// Length of the extent.
        len: u64,
    },
}

/// A format node's driver state.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // reason: nodes live in fixed arrays (no heap to box into); a qcow2 node's state is ~260 bytes by design
pub enum FormatState {
    /// `raw`: a window onto the file child.
    Raw(raw::Raw),
    /// `qcow2`.
    Qcow2(qcow2::Qcow2),
}

impl FormatState {
    /// Opens `desc` with `opts` over the file child `file` of `graph` (for writing unless
    /// `read_only`); returns the state and the node's size.
    pub(crate) async fn open<const N: usize, const T: usize>(
        desc: &'static DriverDesc,
        opts: &OptionsView<'_, '_>,
        graph: &Graph<'_, N, T>,
        file: NodeId,
        read_only: bool,
    ) -> Result<(Self, u64)> {
        let file_size = graph.node(file)?.size();
        if core::ptr::eq(desc, &raw::RAW) {
            let raw = raw::Raw::open(opts, file_size)?;
            let size = raw.size();
            return Ok((FormatState::Raw(raw), size));
        }
        if core::ptr::eq(desc, &qcow2::QCOW2) {
            let q = qcow2::Qcow2::open(graph, file, opts, read_only).await?;
            let size = q.size();
            return Ok((FormatState::Qcow2(q), size));
        }
        Err(Error::UnknownDriver)
    }

    /// Maps `len` bytes at `offset` (inside node `node`, whose state this is).
    pub(crate) async fn map<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        match self {
            FormatState::Raw(raw) => Ok(raw.map(offset, len)),
            FormatState::Qcow2(q) => q.map(graph, node, offset, len).await,
        }
    }

    /// For translation-only drivers: where byte `offset` lives (role of the child, offset
    /// there), with every following byte of the node contiguous after it. `None` for formats.
    /// Synchronous, so metadata I/O can pass through such nodes without re-entering a format.
    pub(crate) fn translate(&self, offset: u64) -> Option<(Role, u64)> {
        match self {
            FormatState::Raw(raw) => match raw.map(offset, 0) {
                Mapping::Data { role, offset, .. } => Some((role, offset)),
                _ => None,
            },
            FormatState::Qcow2(_) => None,
        }
    }

    /// Decodes a [`Mapping::Compressed`] extent of node `node` into `out`.
    pub(crate) async fn read_compressed<const N: usize, const T: usize>(
        &self,
        graph: &Graph<'_, N, T>,
        node: NodeId,
        host_offset: u64,
        csize: u64,
        skip: u64,
        out: &mut [u8],
    ) -> Result<()> {
        match self {
            FormatState::Qcow2(q) => q.read_compressed(graph, node, host_offset, csize, skip, out).await,
            FormatState::Raw(_) => Err(Error::BadGraph("compressed mapping from a driver without compression")),
        }
    }

    /// True if the driver handles whole write requests itself (allocation, copy-on-write)
    /// instead of mapping them for the generic path.
    pub(crate) fn writes_itself(&self) -> bool {
        matches!(self, FormatState::Qcow2(_))
    }

    /// Writes `buf` at `offset` of node `node` (drivers that [write themselves](Self::writes_itself)).
    pub(crate) async fn write<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
        match self {
            FormatState::Qcow2(q) => q.write(graph, node, offset, buf).await,
            FormatState::Raw(_) => Err(Error::BadGraph("raw maps its writes")),
        }
    }

    /// Write-zeroes or discard on node `node` (drivers that write themselves).
    pub(crate) async fn range_op<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64, op: crate::io::RangeOp) -> Result<()> {
        match self {
            FormatState::Qcow2(q) => q.range_op(graph, node, offset, len, op).await,
            FormatState::Raw(_) => Err(Error::BadGraph("raw maps its range operations")),
        }
    }

    /// Writes caches back and makes them stable, before the children flush (DESIGN.md rule 5).
    pub(crate) async fn flush_caches<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId) -> Result<()> {
        match self {
            FormatState::Qcow2(q) => q.flush_caches(graph, node).await,
            FormatState::Raw(_) => Ok(()),
        }
    }

    /// Grows node `node` to `new_size` bytes (drained by the caller).
    pub(crate) async fn resize<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, new_size: u64) -> Result<()> {
        match self {
            FormatState::Qcow2(q) => q.grow(graph, node, new_size).await,
            FormatState::Raw(_) => Err(Error::Unsupported("resizing a raw node")),
        }
    }

    /// A clean close: everything stable and the image marked clean.
    pub(crate) async fn close<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId) -> Result<()> {
        match self {
            FormatState::Qcow2(q) => q.close(graph, node).await,
            FormatState::Raw(_) => Ok(()),
        }
    }

    /// True if reads of node `node` must be tracked at the node: a format that allocates and
    /// frees clusters while it is written (a read must finish before its cluster is freed).
    pub(crate) fn tracks_reads(&self) -> bool {
        matches!(self, FormatState::Qcow2(q) if q.w.writable)
    }

    /// The qcow2 state, if this is a qcow2 node.
    pub fn qcow2(&self) -> Option<&qcow2::Qcow2> {
        match self {
            FormatState::Qcow2(q) => Some(q),
            FormatState::Raw(_) => None,
        }
    }
}

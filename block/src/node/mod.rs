//! A node of the graph (QEMU's `BlockDriverState`) as every layer sees it, and the links to its
//! children (`BdrvChild`). A format node's driver state is not here: the graph keeps it beside
//! the node, where only the layers above the drivers look (see `docs/ARCHITECTURE.md`).

pub mod limits;
pub mod perm;
pub mod threshold;

use core::cell::Cell;

pub use limits::BlockLimits;
pub use perm::{Attachment, Perm};
pub use threshold::{ThresholdExceeded, WriteThreshold};

use crate::dev::BlockDevice;

/// Longest node name.
pub const MAX_NODE_NAME: usize = 32;

/// Most children a node has (file, backing, data-file).
pub const MAX_CHILDREN: usize = 3;

/// Bound on any walk down the graph (a backing chain plus the translation nodes and leaf under
/// its bottom). Deeper graphs are refused.
pub const MAX_DEPTH: usize = 32;

/// A node's address: slot index plus the slot's generation, so an id kept after its node was
/// closed is detected ([`crate::Error::BadNode`]) instead of naming a newer node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub(crate) index: u16,
    pub(crate) generation: u16,
}

/// What a child is to its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Where the format stores everything (or its metadata, with a data file).
    File,
    /// Where unallocated ranges are read from.
    Backing,
    /// Where an external-data-file format keeps guest data.
    DataFile,
    /// `blkverify`'s reference (QEMU's `raw` child): every read is compared with it, every
    /// write goes to it too.
    Reference,
}

/// A parent's link to a child.
#[derive(Clone, Copy, Debug)]
pub struct Child {
    /// The role.
    pub role: Role,
    /// The child node.
    pub node: NodeId,
    /// What the parent holds on it.
    pub attachment: Attachment,
}

/// What a node is.
#[derive(Clone, Copy)]
pub enum NodeKind<'d> {
    /// A leaf device.
    Leaf(&'d dyn BlockDevice),
    /// A format, filter or protocol driver (its state is the graph's, beside the node).
    Driver,
}

/// How a translation-only node (a raw window, a filter) maps its bytes: byte `o` of the node is
/// byte `o + offset` of the child in `role`. Metadata I/O of a format above passes through such
/// nodes with this, without calling their driver (so it never re-enters a driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// The child the bytes are in.
    pub role: Role,
    /// Where the node's byte 0 lies in that child.
    pub offset: u64,
}

/// Flush generations (QEMU's `write_gen`/`flushed_gen`): a flush with nothing written since the
/// last one completes at once; concurrent flushes share one device flush.
#[derive(Default)]
pub struct FlushState {
    /// Bumped when a write to this node completes.
    pub(crate) write_gen: Cell<u64>,
    /// The `write_gen` the last successful flush covered.
    pub(crate) flushed_gen: Cell<u64>,
    /// A flush is running on this node.
    pub(crate) flushing: Cell<bool>,
    /// Device flushes actually issued (for tests and stats).
    pub(crate) issued: Cell<u64>,
}

/// One node.
pub struct Node<'d> {
    /// Unique name (`node-name`, or `#nINDEX`).
    pub name: heapless::String<MAX_NODE_NAME>,
    /// The driver's name (`driver=`; `device` for a leaf).
    pub driver: &'static str,
    /// Leaf or driver.
    pub kind: NodeKind<'d>,
    /// Children, at most one per role.
    pub children: heapless::Vec<Child, MAX_CHILDREN>,
    /// Refuses writes.
    pub read_only: bool,
    /// The driver was probed, not named (QEMU's `bs->probed`): a probed raw node refuses writes
    /// that would make its first sector probe as another format.
    pub probed: bool,
    /// Size in bytes (grows when an image file is extended or a disk resized).
    pub(crate) size: Cell<u64>,
    /// Limits, computed bottom-up at open.
    pub limits: BlockLimits,
    /// For translation-only nodes: where their bytes are (see [`Pass`]).
    pub pass: Option<Pass>,
    pub(crate) flush: FlushState,
    /// The write threshold (`write-threshold=`).
    pub threshold: WriteThreshold,
    /// What holds I/O a format above issues through this node on its way to the leaf.
    pub gate: Gate,
}

/// What a translation-only node does to the I/O a format above it issues on its file child
/// (metadata, and data written through the child): QEMU's formats do all their I/O through
/// their `file` child, so a filter placed there sees all of it. The walk admits requests that
/// enter a node through [`crate::driver`]'s `admit`; a format's own I/O goes straight down by
/// [`Pass`] ([`crate::io::child_io`]), which consults this instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gate {
    /// Nothing: the I/O passes.
    #[default]
    Open,
    /// Held by member `member` of throttle group number `group`, as the walk holds requests
    /// entering the node.
    Throttle {
        /// The group's index in the graph.
        group: usize,
        /// The node's member index in the group.
        member: usize,
    },
    /// A `blkverify` node: reads are compared with its reference child ([`Role::Reference`]),
    /// writes, write-zeroes and discards repeated on it, and it grows with the image
    /// ([`crate::io::verify`]).
    Verify,
}

/// Bumps a node's write generation when dropped: a write counts once it has started, whether it
/// succeeds, fails or is cancelled (some of its data may be on the device), so the next flush
/// is never skipped for it (QEMU's `bdrv_co_write_req_finish`).
pub(crate) struct WriteGen<'a>(pub(crate) &'a Cell<u64>);

impl Drop for WriteGen<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

impl<'d> Node<'d> {
    /// The child in `role`, if any.
    pub fn child(&self, role: Role) -> Option<NodeId> {
        self.children.iter().find(|c| c.role == role).map(|c| c.node)
    }

    /// The leaf device, if this is a leaf.
    pub fn device(&self) -> Option<&'d dyn BlockDevice> {
        match self.kind {
            NodeKind::Leaf(dev) => Some(dev),
            NodeKind::Driver => None,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size.get()
    }

    /// Device flushes this node issued.
    pub fn flushes_issued(&self) -> u64 {
        self.flush.issued.get()
    }
}

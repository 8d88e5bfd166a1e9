//! What a driver hands the layer above: where a range lives ([`Mapping`]), how a write is to be
//! carried out ([`WritePlan`], [`Allocation`]) and what a range operation needs ([`RangeStep`]).
//! Drivers decide; [`crate::path`] moves the data.

use crate::node::Role;

/// Where a range of a driver node lives.
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
        /// A host range the node keeps for it anyway (a preallocated zero cluster).
        kept: Option<Kept>,
    },
    /// Not allocated here: read from the backing child (zeros without one) for `len` bytes.
    Unallocated {
        /// Length of the extent.
        len: u64,
        /// A host range the node keeps for it anyway (unallocated subclusters of an allocated
        /// cluster).
        kept: Option<Kept>,
    },
    /// Data no storage keeps (`null-co` without `read-zeroes`): reads leave the caller's buffer
    /// as it is, for `len` bytes.
    Sink {
        /// Length of the extent.
        len: u64,
    },
    /// Inside one compressed cluster: the driver decodes it and the io layer copies `len` bytes
    /// starting `skip` bytes into the decoded cluster.
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

/// Where a node keeps host space for an extent it does not read from there: QEMU's
/// `QCOW2_SUBCLUSTER_ZERO_ALLOC` and `QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC`. Reads and writes never
/// use it (they follow the extent's kind); block status reports it, as QEMU's does (the offset
/// `qemu-img map` prints for such extents). The range is contiguous for the extent's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The child holding it.
    pub role: Role,
    /// Offset there of the extent's first byte.
    pub offset: u64,
}

/// How the next part of a write is carried out.
#[derive(Debug)]
pub enum WritePlan<P> {
    /// In place: `len` bytes go to the child in `role` at `offset`, which must be at least
    /// `grow_to` bytes long first (a cluster the image file ends inside).
    Child {
        /// The child.
        role: Role,
        /// Offset there.
        offset: u64,
        /// Bytes of the write this covers.
        len: u64,
        /// Size the child must reach before the write.
        grow_to: u64,
    },
    /// Nothing keeps the data (`null-co`): `len` bytes are done.
    Sink {
        /// Bytes of the write this covers.
        len: u64,
    },
    /// New space: write the data with its copy-on-write around it, then hand `P` back to the
    /// driver's commit.
    Allocate(Allocation, P),
}

/// An allocating part of a write: data for guest `[guest, guest + len)` at host `host` of the
/// child in `role`, with the uncovered parts of the first and last cluster filled around it.
/// The host range `[head.host or host, tail end)` is contiguous, so the io layer can write it as
/// one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The child the clusters are in.
    pub role: Role,
    /// Guest offset of the data.
    pub guest: u64,
    /// Bytes of the write this covers.
    pub len: u64,
    /// Host offset of the data.
    pub host: u64,
    /// Copy-on-write before the data (ends at `host`).
    pub head: Option<Cow>,
    /// Copy-on-write after the data (starts at `host + len`).
    pub tail: Option<Cow>,
    /// The host clusters were never written (past everything the image file held): a part
    /// whose source reads as zeros needs no write at all.
    pub fresh: bool,
    /// Size the child must reach before the write.
    pub grow_to: u64,
}

/// One copy-on-write span: fill host `[host, host + len)` with what the node reads at guest
/// `[guest, guest + len)` now (its backing chain, its own compressed or shared cluster), or with
/// zeros when `zeros`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cow {
    /// Guest offset of the source.
    pub guest: u64,
    /// Host offset of the destination.
    pub host: u64,
    /// Bytes.
    pub len: u64,
    /// The source is zeros (a zero cluster): nothing to read.
    pub zeros: bool,
}

/// What a range operation (write-zeroes, discard) needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeStep {
    /// The driver did the next `len` bytes (metadata only).
    Done {
        /// Bytes done.
        len: u64,
    },
    /// The next `len` bytes must read as zeros and the driver cannot say so in its metadata:
    /// write zeros as data where they do not read as zeros already.
    AsData {
        /// Bytes to write as zeros.
        len: u64,
    },
}

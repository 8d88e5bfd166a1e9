//! The static driver table (QEMU's `BlockDriver`s): one `static` descriptor per driver, probing
//! over the first 512 bytes of an image, and dispatch from a node's state to its driver.
//!
//! **Adding a driver** is a module with a descriptor and a state type that implements
//! [`Driver`], and one line in the [`drivers!`] list at the bottom of this file. The list makes
//! the state enum ([`FormatState`]), the pending-commit enum ([`Pending`]), the table
//! ([`DRIVERS`]) and every dispatch `match`; the layers above name no driver (the backend's
//! probed-raw guard compares with raw's descriptor, and `img info`/`img map` read qcow2's own
//! details through [`FormatState::qcow2`]).
//!
//! Drivers see a graph only through [`Io`] (the lower io half): they map, plan and commit; the
//! layer above ([`crate::path`]) walks the graph and moves data. No driver calls back up.

#[cfg(feature = "blkdebug")]
pub mod blkdebug;
#[cfg(feature = "blkverify")]
pub mod blkverify;
#[cfg(feature = "copy-on-read")]
pub mod cor;
pub mod filter;
pub mod null;
pub mod plan;
pub mod qcow2;
pub mod raw;
#[cfg(feature = "throttle")]
pub mod throttle;

pub use plan::{Allocation, Cow, Kept, Mapping, RangeStep, WritePlan};

use crate::error::{Error, Result};
use crate::io::tracked::{ReqKind, Tracked};
use crate::io::{Io, RangeOp};
use crate::node::{BlockLimits, NodeId, Pass, Role};
use crate::options::OptionsView;

/// What a read-write open (of a node, or of a writing backend) fails with in a build without
/// the `write` feature.
pub const NO_WRITE: Error = Error::Unsupported("read-write open (strata-block built without the `write` feature)");

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
        /// Opens without a file child: the node is where the data ends (QEMU's protocol
        /// drivers, such as `null-co`).
        const PROTOCOL = 1 << 4;
    }
}

/// A driver descriptor.
#[derive(Debug)]
pub struct DriverDesc {
    /// The name used in `driver=`.
    pub name: &'static str,
    /// Which entry of the table this is.
    pub id: DriverId,
    /// Capabilities.
    pub caps: DriverCaps,
    /// Scores the first [`PROBE_BYTES`] of an image (0: not this format; raw scores 1).
    pub probe: Option<fn(&[u8]) -> u32>,
    /// Option keys the driver accepts besides the common ones (`driver`, `node-name`,
    /// `read-only`, `file`).
    pub options: &'static [&'static str],
}

impl DriverDesc {
    /// The options key of the node's file child: `file`, or `image` for `blkdebug` (QEMU's
    /// child names).
    pub fn child_key(&self) -> &'static str {
        match self.id {
            #[cfg(feature = "blkdebug")]
            DriverId::Blkdebug => blkdebug::CHILD_KEY,
            #[cfg(feature = "blkverify")]
            DriverId::Blkverify => blkverify::CHILD_KEY,
            _ => "file",
        }
    }
}

/// A name an image stores (a backing or data file): offset and length in its file child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameRef {
    /// Offset in the image file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u16,
}

/// The other files a node's image names, which the graph opens after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Links<'a> {
    /// The backing file name, stored in the image.
    pub backing: Option<NameRef>,
    /// The backing file's format, if the image names it.
    pub backing_format: Option<&'a str>,
    /// The data-file name, stored in the image.
    pub data_file: Option<NameRef>,
    /// The image keeps guest data in an external data file.
    pub needs_data_file: bool,
}

/// A driver: what the layers above call on a node's state. Only `open`, `size` and `map` are
/// required; the rest default to "not supported" or "nothing to do".
#[allow(async_fn_in_trait)] // reason: dispatch is static (the generated enum), never `dyn`
pub trait Driver: Sized {
    /// What an allocating write hands from [`Driver::plan_write`] to [`Driver::commit_write`].
    type Pending;

    /// Opens a node over the file child `file` (`None` for a protocol driver), for writing
    /// unless `read_only`.
    async fn open(io: &Io<'_, '_>, file: Option<NodeId>, opts: &OptionsView<'_, '_>, read_only: bool) -> Result<Self>;

    /// The node's size in bytes.
    fn size(&self) -> u64;

    /// For translation-only drivers: where the node's bytes are in its child.
    fn pass(&self) -> Option<Pass> {
        None
    }

    /// The node's limits, given those it inherits from its file child (a filter's options can
    /// tighten them).
    fn limits(&self, inherited: BlockLimits) -> BlockLimits {
        inherited
    }

    /// The files the image names.
    fn links(&self) -> Links<'_> {
        Links::default()
    }

    /// For translation-only drivers that hold requests: what holds a format's own I/O passing
    /// the node ([`crate::node::Gate`]).
    fn gate(&self) -> crate::node::Gate {
        crate::node::Gate::Open
    }

    /// True if the driver may hold requests ([`Driver::admit`]): the walk skips the call
    /// otherwise.
    const ADMITS: bool = false;

    /// Holds a request entering node `node` until the driver lets it go on (a latency, a
    /// bucket); most drivers let everything through at once.
    async fn admit(&self, _io: &Io<'_, '_>, _node: NodeId, _kind: ReqKind, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }

    /// Where `len` bytes at `offset` of node `node` live.
    async fn map(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Mapping>;

    /// [`Driver::map`] when the driver knows the answer without I/O or waiting (a raw window,
    /// an empty qcow2 overlay): the walk then skips the asynchronous call. `None`: ask `map`.
    fn map_now(&self, _offset: u64, _len: u64) -> Option<Mapping> {
        None
    }

    /// [`Driver::map_now`], or the answer from what the driver holds in memory (a qcow2 lookup
    /// whose L2 slice is cached): no I/O, no waiting. The walk asks this first. `None`: ask
    /// `map`, which also reports any error.
    fn map_cached(&self, _io: &Io<'_, '_>, _node: NodeId, offset: u64, len: u64) -> Option<Mapping> {
        self.map_now(offset, len)
    }

    /// True while nothing of the node's own is allocated: every byte is
    /// [`Mapping::Unallocated`] (reads fall through to the backing child). Must only ever turn
    /// false, calling [`Io::shape_changed`] when it does: the walk remembers runs of empty
    /// layers until the shape changes.
    fn is_empty(&self) -> bool {
        false
    }

    /// The unit the driver allocates in (QEMU's cluster size, or subcluster size with extended
    /// L2 entries): a write of whole units needs no copy-on-write. 0: the driver does not
    /// allocate.
    fn allocation_unit(&self) -> u64 {
        0
    }

    /// For a filter that checks its file child against a second child (`blkverify`): that
    /// child's role. Reads go to both and are compared; writes go to both.
    fn verify_against(&self) -> Option<Role> {
        None
    }

    /// For a filter that copies what its child reads from the child's backing chain into the
    /// child (`copy-on-read`): the deepest backing layer, counted in links below the child,
    /// whose data is copied. `None`: reads are only reads.
    fn copy_on_read(&self) -> Option<u16> {
        None
    }

    /// Decodes a [`Mapping::Compressed`] extent into `out`.
    async fn read_compressed(&self, _io: &Io<'_, '_>, _node: NodeId, _host: u64, _csize: u64, _skip: u64, _out: &mut [u8]) -> Result<()> {
        Err(Error::BadGraph("compressed mapping from a driver without compression"))
    }

    /// True if reads must be tracked at the node: it allocates and frees while written, and a
    /// read must finish before a cluster it reads is freed.
    fn tracks_reads(&self) -> bool {
        false
    }

    /// Starts a write or range operation over `[offset, offset + len)`: checks, and the tracked
    /// request the whole operation holds (serialising where the driver allocates).
    async fn begin_write<'g>(&self, _io: &Io<'g, '_>, _node: NodeId, _kind: ReqKind, _offset: u64, _len: u64) -> Result<Option<Tracked<'g>>> {
        Ok(None)
    }

    /// How to write the next `len` bytes at `offset` (under [`Driver::begin_write`]'s request).
    async fn plan_write(&self, _io: &Io<'_, '_>, _node: NodeId, _offset: u64, _len: u64) -> Result<WritePlan<Self::Pending>> {
        Err(Error::Unsupported("writes to this driver"))
    }

    /// Makes an executed [`WritePlan::Allocate`] visible (metadata).
    async fn commit_write(&self, _io: &Io<'_, '_>, _node: NodeId, _pending: Self::Pending) -> Result<()> {
        Err(Error::BadGraph("commit without an allocation"))
    }

    /// The next step of write-zeroes or discard over `[offset, end)`.
    async fn plan_range(&self, _io: &Io<'_, '_>, _node: NodeId, _offset: u64, _end: u64, _op: RangeOp) -> Result<RangeStep> {
        Err(Error::Unsupported("range operations on this driver"))
    }

    /// Writes caches back and makes them stable, before the children flush.
    async fn flush_caches(&self, _io: &Io<'_, '_>, _node: NodeId) -> Result<()> {
        Ok(())
    }

    /// A clean close: everything stable and the image marked clean.
    async fn close(&self, _io: &Io<'_, '_>, _node: NodeId) -> Result<()> {
        Ok(())
    }

    /// Grows the node to `new_size` bytes (drained by the caller).
    async fn resize(&self, _io: &Io<'_, '_>, _node: NodeId, _new_size: u64) -> Result<()> {
        Err(Error::Unsupported("resizing a node of this driver"))
    }
}

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

/// Generates the table, the state and pending enums, and the dispatch, from one list of
/// `Variant(StateType) = DESCRIPTOR` lines; a line's `#[cfg(feature = ...)]` leaves that driver
/// out of all of them.
macro_rules! drivers {
    ($($(#[$cfg:meta])* $variant:ident($ty:ty) = $desc:path),* $(,)?) => {
        /// Which driver a descriptor is (one per line of the table).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DriverId {
            $($(#[$cfg])* #[doc = concat!("`", stringify!($variant), "`.")] $variant,)*
        }

        /// Every driver, in probe order.
        pub static DRIVERS: &[&DriverDesc] = &[$($(#[$cfg])* &$desc),*];

        /// A driver node's state.
        #[allow(clippy::large_enum_variant)] // reason: nodes live in fixed arrays (no heap to box into); a qcow2 node's state is about a kilobyte by design
        pub enum FormatState {
            $($(#[$cfg])* #[doc = concat!("`", stringify!($variant), "`.")] $variant($ty),)*
        }

        /// An allocating write between execution and commit.
        pub enum Pending {
            $($(#[$cfg])* #[doc = concat!("`", stringify!($variant), "`.")] $variant(<$ty as Driver>::Pending),)*
        }

        impl FormatState {
            /// Opens `desc` over `file` (see [`Driver::open`]).
            pub(crate) async fn open(desc: &'static DriverDesc, io: &Io<'_, '_>, file: Option<NodeId>, opts: &OptionsView<'_, '_>, read_only: bool) -> Result<Self> {
                match desc.id {
                    $($(#[$cfg])* DriverId::$variant => Ok(Self::$variant(<$ty as Driver>::open(io, file, opts, read_only).await?)),)*
                }
            }

            /// See [`Driver::size`].
            pub fn size(&self) -> u64 {
                match self { $($(#[$cfg])* Self::$variant(d) => d.size(),)* }
            }

            /// See [`Driver::pass`].
            pub fn pass(&self) -> Option<Pass> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.pass(),)* }
            }

            /// See [`Driver::limits`].
            pub fn limits(&self, inherited: BlockLimits) -> BlockLimits {
                match self { $($(#[$cfg])* Self::$variant(d) => d.limits(inherited),)* }
            }

            /// See [`Driver::gate`].
            pub fn gate(&self) -> crate::node::Gate {
                match self { $($(#[$cfg])* Self::$variant(d) => d.gate(),)* }
            }

            /// See [`Driver::links`].
            pub fn links(&self) -> Links<'_> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.links(),)* }
            }

            /// See [`Driver::tracks_reads`].
            pub(crate) fn tracks_reads(&self) -> bool {
                match self { $($(#[$cfg])* Self::$variant(d) => d.tracks_reads(),)* }
            }

            /// See [`Driver::ADMITS`].
            pub(crate) fn admits(&self) -> bool {
                match self { $($(#[$cfg])* Self::$variant(_) => <$ty as Driver>::ADMITS,)* }
            }

            /// See [`Driver::admit`].
            pub(crate) async fn admit(&self, io: &Io<'_, '_>, node: NodeId, kind: ReqKind, offset: u64, len: u64) -> Result<()> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.admit(io, node, kind, offset, len).await,)* }
            }

            /// See [`Driver::allocation_unit`].
            #[cfg_attr(not(feature = "copy-on-read"), allow(dead_code))] // reason: asked only by copy-on-read
            pub(crate) fn allocation_unit(&self) -> u64 {
                match self { $($(#[$cfg])* Self::$variant(d) => d.allocation_unit(),)* }
            }

            /// See [`Driver::verify_against`].
            pub(crate) fn verify_against(&self) -> Option<Role> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.verify_against(),)* }
            }

            /// See [`Driver::copy_on_read`].
            pub(crate) fn copy_on_read(&self) -> Option<u16> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.copy_on_read(),)* }
            }

            /// See [`Driver::map_cached`].
            pub(crate) fn map_cached(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<Mapping> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.map_cached(io, node, offset, len),)* }
            }

            /// See [`Driver::is_empty`].
            pub(crate) fn is_empty(&self) -> bool {
                match self { $($(#[$cfg])* Self::$variant(d) => d.is_empty(),)* }
            }

            /// See [`Driver::map`].
            pub(crate) async fn map(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.map(io, node, offset, len).await,)* }
            }

            /// See [`Driver::read_compressed`].
            pub(crate) async fn read_compressed(&self, io: &Io<'_, '_>, node: NodeId, host: u64, csize: u64, skip: u64, out: &mut [u8]) -> Result<()> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.read_compressed(io, node, host, csize, skip, out).await,)* }
            }

            /// See [`Driver::begin_write`].
            pub(crate) async fn begin_write<'g>(&self, io: &Io<'g, '_>, node: NodeId, kind: ReqKind, offset: u64, len: u64) -> Result<Option<Tracked<'g>>> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.begin_write(io, node, kind, offset, len).await,)* }
            }

            /// See [`Driver::plan_write`].
            pub(crate) async fn plan_write(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<WritePlan<Pending>> {
                match self {
                    $($(#[$cfg])* Self::$variant(d) => Ok(match d.plan_write(io, node, offset, len).await? {
                        WritePlan::Child { role, offset, len, grow_to } => WritePlan::Child { role, offset, len, grow_to },
                        WritePlan::Sink { len } => WritePlan::Sink { len },
                        WritePlan::Allocate(a, p) => WritePlan::Allocate(a, Pending::$variant(p)),
                    }),)*
                }
            }

            /// See [`Driver::commit_write`].
            pub(crate) async fn commit_write(&self, io: &Io<'_, '_>, node: NodeId, pending: Pending) -> Result<()> {
                match (self, pending) {
                    $($(#[$cfg])* (Self::$variant(d), Pending::$variant(p)) => d.commit_write(io, node, p).await,)*
                    #[allow(unreachable_patterns)] // reason: with one driver the arms above are exhaustive
                    _ => Err(Error::BadGraph("commit for another driver's allocation")),
                }
            }

            /// See [`Driver::plan_range`].
            pub(crate) async fn plan_range(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, end: u64, op: RangeOp) -> Result<RangeStep> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.plan_range(io, node, offset, end, op).await,)* }
            }

            /// See [`Driver::flush_caches`].
            pub(crate) async fn flush_caches(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.flush_caches(io, node).await,)* }
            }

            /// See [`Driver::close`].
            pub(crate) async fn close(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.close(io, node).await,)* }
            }

            /// See [`Driver::resize`].
            pub(crate) async fn resize(&self, io: &Io<'_, '_>, node: NodeId, new_size: u64) -> Result<()> {
                match self { $($(#[$cfg])* Self::$variant(d) => d.resize(io, node, new_size).await,)* }
            }
        }
    };
}

drivers! {
    Qcow2(qcow2::Qcow2) = qcow2::QCOW2,
    Raw(raw::Raw) = raw::RAW,
    NullCo(null::Null) = null::NULL_CO,
    NullAio(null::Null) = null::NULL_AIO,
    #[cfg(feature = "throttle")]
    Throttle(throttle::Throttle) = throttle::THROTTLE,
    #[cfg(feature = "copy-on-read")]
    CopyOnRead(cor::CopyOnRead) = cor::COPY_ON_READ,
    #[cfg(feature = "blkverify")]
    Blkverify(blkverify::Blkverify) = blkverify::BLKVERIFY,
    #[cfg(feature = "blkdebug")]
    Blkdebug(blkdebug::Blkdebug) = blkdebug::BLKDEBUG,
}

impl FormatState {
    /// The qcow2 state, for commands that are about qcow2 itself (`img info`'s format-specific
    /// section, `img map`'s host offsets).
    pub fn qcow2(&self) -> Option<&qcow2::Qcow2> {
        match self {
            FormatState::Qcow2(q) => Some(q),
            _ => None,
        }
    }
}

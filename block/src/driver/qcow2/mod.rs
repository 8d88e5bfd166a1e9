//! The qcow2 format (QEMU's `block/qcow2*.c`; spec: `docs/interop/qcow2.txt`).
//!
//! Split by concern. Reading: [`header`] (the struct and its field checks), [`extensions`],
//! [`validation`] (where tables may lie), [`tables`] (L1/L2 lookup and the mapping),
//! [`entry_rules`] (the spec's rules about one L2 entry, checked at use),
//! [`subclusters`] (extended L2), [`compressed`] (deflate through a bounded decoder), [`refcount`]
//! (reading and changing counts) and [`snapshots`]; every table goes through the graph-wide
//! slice cache ([`crate::io::cache`]). Writing: [`state`] (what a read-write node keeps: locks,
//! pending frees, header flags), [`alloc`] (cluster allocation, refcount blocks), [`write`]
//! (plan and commit; the io layer executes), [`grow`] (virtual size, refcount table),
//! [`zeroing`] (write-zeroes and discard steps), [`writeback`] (flush and clean close in
//! dependency order) and [`create`].
//!
//! The node state ([`Qcow2`]) is about a kilobyte: geometry, table positions, the header as
//! parsed, and the write state. Names (backing file, data file) are not kept: the opener reads
//! them from the image when it builds the chain. Metadata goes through the file child with
//! [`crate::io::child_io`], never through another format. The driver maps and plans; the io
//! layer moves data (`docs/ARCHITECTURE.md`).

pub mod amend;
#[cfg(feature = "compress")]
mod compressed;
#[cfg(not(feature = "compress"))]
#[path = "compressed_off.rs"]
mod compressed;
#[cfg(feature = "compress")]
mod compressed_zstd;
mod compressed_write;
mod data_file;
mod empty;
pub mod relink;
#[cfg_attr(not(feature = "write"), allow(dead_code))] // reason: read-only builds never repair a dirty image at open
pub mod check;
pub mod create;
mod entry_bits;
pub mod entry_rules;
pub mod extensions;
pub mod header;
mod alloc;
pub mod bitmaps;
mod grow;
pub mod measure;
mod plain_read;
mod refcount;
mod shrink;
pub mod snapshots;
pub(crate) mod state;
mod write;
mod writeback;
mod zeroing;
pub mod subclusters;
pub mod tables;
pub mod validation;

pub use refcount::entry as refcount_entry;

use super::{Driver, DriverCaps, DriverDesc, DriverId, Links, Mapping, NameRef, RangeStep, WritePlan};
use core::cell::Cell;

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::io::child_io;
use crate::io::tracked::{ReqKind, Tracked};
use crate::io::RangeOp;
use crate::options::OptionsView;

use extensions::Extensions;
use header::{Compression, Header, KNOWN_HEADER_LEN};
use snapshots::Walk;
use validation::{Metadata, Region, Table, Tables};

/// Largest L1 table scanned at open to learn that it is empty (64 Ki entries: a 32 TiB image
/// of 64 KiB clusters).
const L1_EMPTY_SCAN: u64 = 512 << 10;

/// The descriptor.
pub static QCOW2: DriverDesc = DriverDesc {
    name: "qcow2",
    id: DriverId::Qcow2,
    caps: DriverCaps::FORMAT.union(DriverCaps::BACKING).union(DriverCaps::WRITE),
    probe: Some(probe),
    options: &["backing", "data-file", "snapshot"],
};

fn probe(head: &[u8]) -> u32 {
    if header::looks_like_qcow2(head) {
        100
    } else {
        0
    }
}

/// An open qcow2 node.
#[derive(Debug)]
pub struct Qcow2 {
    pub(crate) cluster_bits: u8,
    pub(crate) extended_l2: bool,
    pub(crate) data_file: bool,
    pub(crate) refcount_order: u8,
    #[cfg_attr(not(feature = "compress"), allow(dead_code))] // reason: read only by the decoders
    pub(crate) compression: Compression,
    /// The L1 table mapped: the active one, or the open snapshot's (moves when it grows).
    pub(crate) l1: Cell<Region>,
    pub(crate) l1_entries: Cell<u32>,
    /// Every entry of the mapped L1 table is zero (an empty overlay): every range reads through
    /// to the backing file without a table lookup. Found at open for tables up to
    /// [`L1_EMPTY_SCAN`] bytes (false for larger ones); only ever cleared, by the first write
    /// that gives the table an entry.
    pub(crate) l1_empty: Cell<bool>,
    /// The last L1 entry looked up, validated: (its file offset, the L2 table it names, the
    /// `l1_changes` it was read under). Saves the L1 lookup of nearby reads.
    pub(crate) last_l1: Cell<Option<(u64, u64, u64)>>,
    /// Bumped whenever an L1 entry or the L1 table changes: older `last_l1`s are void.
    pub(crate) l1_changes: Cell<u64>,
    /// Header cluster and tables, for overlap checks (tables move when they grow).
    pub(crate) meta: Tables,
    /// The snapshot open (index in the table), if any.
    pub(crate) snapshot: Option<u32>,
    /// The snapshot table in force: (offset, entries); moves when snapshots are made or deleted.
    pub(crate) snap_table: Cell<(u64, u32)>,
    size: Cell<u64>,
    header: Header,
    ext: Extensions,
    /// What a read-write open keeps (inert on read-only nodes).
    pub(crate) w: state::WriteState,
}

impl Qcow2 {
    /// Opens the image in `file`: header, extensions and tables checked, the snapshot given by
    /// `snapshot.name` or `snapshot.id` selected (read-only).
    /// Read-write opens (`read_only` false) repair a dirty image first (as QEMU), refuse corrupt
    /// and external-data-file images and snapshots, and clear unknown autoclear bits before
    /// anything else is written.
    pub(crate) async fn open_image(
        io: &Io<'_, '_>,
        file: NodeId,
        opts: &OptionsView<'_, '_>,
        read_only: bool,
    ) -> Result<Self> {
        if io.meta.slots() == 0 {
            return Err(Error::NoSpace { what: "metadata cache (Graph::set_metadata_cache)" });
        }
        // A dirty image is repaired before a read-write open reads its tables (QEMU's
        // `qcow2_do_open`): the repair may rebuild the refcount structure. A corrupt one is
        // refused below.
        #[cfg(feature = "write")]
        if !read_only {
            check::repair_if_dirty(io, file).await?;
        }
        #[cfg(not(feature = "write"))]
        if !read_only {
            return Err(super::NO_WRITE);
        }
        let mut bytes = [0u8; KNOWN_HEADER_LEN];
        let present = child_io::read_upto(io, file, 0, &mut bytes).await?;
        let header = Header::parse(&bytes, present)?;
        let file_size = child_io::size(io, file)?;
        let cs = header.cluster_size();
        if u64::from(header.l1_size) < header.l1_entries_for(header.size) {
            return Err(Error::BadImage { what: "L1 table too small for the virtual size" });
        }
        let l1 = validation::place(Table::L1, header.l1_table_offset, u64::from(header.l1_size) * 8, validation::MAX_L1_BYTES, cs, file_size)?;
        // As QEMU (`qcow2_do_open`): an image without a refcount table cannot be used at all
        // (only a repair could rebuild one).
        if header.refcount_table_clusters == 0 {
            return Err(Error::BadImage { what: "no refcount table (refcount_table_clusters is 0)" });
        }
        let rt_bytes = u64::from(header.refcount_table_clusters) * cs;
        let refcount_table = validation::place(Table::RefcountTable, header.refcount_table_offset, rt_bytes, validation::MAX_REFTABLE_BYTES, cs, file_size)?;
        let ext = extensions::read(io, file, &header).await?;
        let data_file = header.incompatible & header::incompat::DATA_FILE != 0;
        // "neither compressed clusters nor internal snapshots are supported" with a data file.
        if data_file && header.nb_snapshots != 0 {
            return Err(Error::BadImage { what: "internal snapshots in an image with an external data file" });
        }
        let snaps = snapshots::check(io, file, &header).await?;
        let meta = Metadata { header: Region::new(0, cs), l1, refcount_table, snapshots: snaps };
        validation::disjoint(&meta)?;
        let mut q = Qcow2 {
            cluster_bits: header.cluster_bits as u8,
            extended_l2: header.extended_l2(),
            data_file,
            refcount_order: header.refcount_order as u8,
            compression: header.compression,
            l1: Cell::new(l1),
            l1_entries: Cell::new(header.l1_size),
            l1_empty: Cell::new(false),
            last_l1: Cell::new(None),
            l1_changes: Cell::new(0),
            meta: Tables::new(meta),
            snapshot: None,
            snap_table: Cell::new((header.snapshots_offset, header.nb_snapshots)),
            size: Cell::new(header.size),
            header,
            ext,
            w: state::WriteState::new(&header, !read_only, Self::zeroed_from(io, file, file_size)?),
        };
        let wanted = match (opts.get("snapshot.name"), opts.get("snapshot.id")) {
            (Some(v), _) => Some((v, false)),
            (None, Some(v)) => Some((v, true)),
            (None, None) => None,
        };
        if let Some((value, by_id)) = wanted {
            let key = value.as_str().ok_or(Error::BadOption { key: "snapshot.name", why: "names contain no commas" })?;
            let mut walk = Walk::new(&header);
            let snap = match snapshots::find(io, file, &mut walk, key, by_id).await {
                Err(Error::NotFound) => return Err(Error::BadOption { key: "snapshot.name", why: "no snapshot of that name or id" }),
                other => other?,
            };
            if snap.disk_size > i64::MAX as u64 {
                return Err(Error::BadImage { what: "snapshot virtual size above 2^63" });
            }
            if u64::from(snap.l1_size) < header.l1_entries_for(snap.disk_size) {
                return Err(Error::BadImage { what: "snapshot L1 table too small for its virtual size" });
            }
            if !read_only {
                return Err(Error::BadOption { key: "snapshot.name", why: "snapshots open read-only (add read-only=on)" });
            }
            let snap_l1 = validation::place(Table::SnapshotL1, snap.l1_table_offset, u64::from(snap.l1_size) * 8, validation::MAX_L1_BYTES, cs, file_size)?;
            if meta.hit(&snap_l1).is_some() {
                return Err(Error::BadImage { what: "snapshot L1 table overlaps the header or a table" });
            }
            q.l1.set(snap_l1);
            q.l1_entries.set(snap.l1_size);
            q.size.set(snap.disk_size);
            q.snapshot = Some(snap.index);
        }
        q.l1_empty.set(Self::all_zero(io, file, q.l1.get()).await?);
        if !read_only {
            q.open_for_writing(io, file).await?;
        }
        Ok(q)
    }

    /// True if the `region` of `file` (a table of at most [`L1_EMPTY_SCAN`] bytes) is all zeros;
    /// false for a larger one, without reading it.
    async fn all_zero(io: &Io<'_, '_>, file: NodeId, region: Region) -> Result<bool> {
        if region.len > L1_EMPTY_SCAN {
            return Ok(false);
        }
        let mut buf = [0u8; 512];
        let mut at = 0;
        while at < region.len {
            let n = (region.len - at).min(buf.len() as u64) as usize;
            child_io::read_upto(io, file, region.start + at, &mut buf[..n]).await?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Where the image file reads as zeros to its end: its size, or less if its device knows.
    fn zeroed_from(io: &Io<'_, '_>, file: NodeId, file_size: u64) -> Result<u64> {
        let known = io.node(file)?.device().and_then(|d| d.zeroed_from());
        Ok(known.map_or(file_size, |z| z.min(file_size)))
    }

    /// The node's virtual size: the header's, rounded down to whole 512-byte sectors as QEMU
    /// does (`total_sectors`), so reads match `qemu-img convert` byte for byte.
    pub fn size(&self) -> u64 {
        self.size.get() & !511
    }

    /// The header as parsed.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// What the header extensions say.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The snapshot open, if any (index in the snapshot table).
    pub fn open_snapshot(&self) -> Option<u32> {
        self.snapshot
    }

    /// A walk over the snapshot table (list it with [`Walk::next`] on the node's file child).
    pub fn snapshots(&self) -> Walk {
        let (offset, count) = self.snap_table.get();
        Walk::at(&self.header, offset, count)
    }

    /// Reads `buf.len()` bytes at `offset` of the image file under qcow2 node `node` (names,
    /// tables: what tools such as `img info` show).
    pub async fn read_file_bytes(io: &Io<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let file = io.node(node)?.child(crate::node::Role::File).ok_or(Error::BadGraph("qcow2 node without a file child"))?;
        child_io::read(io, file, offset, buf).await
    }

    pub(crate) fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    pub(crate) fn l2_entries(&self) -> u64 {
        1 << self.l2_bits()
    }

    /// log2 of [`Qcow2::l2_entries`].
    pub(crate) fn l2_bits(&self) -> u32 {
        u32::from(self.cluster_bits) - if self.extended_l2 { 4 } else { 3 }
    }

    /// Bytes of a table read at once: a 4 KiB slice, or one cluster if clusters are smaller.
    pub(crate) fn slice_len(&self) -> usize {
        (self.cluster_size() as usize).min(crate::io::cache::SLICE)
    }
}

impl Driver for Qcow2 {
    type Pending = write::Pending;

    async fn open(io: &Io<'_, '_>, file: Option<NodeId>, opts: &OptionsView<'_, '_>, read_only: bool) -> Result<Self> {
        let file = file.ok_or(Error::BadOption { key: "file", why: "missing" })?;
        Self::open_image(io, file, opts, read_only).await
    }

    fn size(&self) -> u64 {
        Qcow2::size(self)
    }

    fn links(&self) -> Links<'_> {
        let backing = (self.header.backing_file_offset != 0)
            .then_some(NameRef { offset: self.header.backing_file_offset, len: self.header.backing_file_size as u16 });
        Links { backing, backing_format: self.ext.backing_format(), data_file: self.ext.data_file, needs_data_file: self.data_file }
    }

    async fn map(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        Qcow2::map(self, io, node, offset, len).await
    }

    /// Answers from memory: an empty table maps everything to the backing file (see
    /// [`Qcow2::l1_empty`]), and a cached L2 slice answers the rest.
    fn map_cached(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<Mapping> {
        Qcow2::map_cached(self, io, node, offset, len)
    }

    fn is_empty(&self) -> bool {
        self.l1_empty.get()
    }

    async fn read_compressed(&self, io: &Io<'_, '_>, node: NodeId, host: u64, csize: u64, skip: u64, out: &mut [u8]) -> Result<()> {
        Qcow2::read_compressed(self, io, node, host, csize, skip, out).await
    }

    /// While written, clusters are allocated and freed: a read must finish before a cluster it
    /// reads is freed (and reused).
    fn tracks_reads(&self) -> bool {
        self.w.writable
    }

    fn allocation_unit(&self) -> u64 {
        if self.extended_l2 {
            self.cluster_size() / 32
        } else {
            self.cluster_size()
        }
    }

    async fn begin_write<'g>(&self, io: &Io<'g, '_>, node: NodeId, kind: ReqKind, offset: u64, len: u64) -> Result<Option<Tracked<'g>>> {
        self.begin(io, node, kind, offset, len).await
    }

    async fn plan_write(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<WritePlan<Self::Pending>> {
        self.plan(io, node, offset, len).await
    }

    async fn commit_write(&self, io: &Io<'_, '_>, node: NodeId, pending: Self::Pending) -> Result<()> {
        self.commit(io, node, pending).await
    }

    async fn plan_range(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, end: u64, op: RangeOp) -> Result<RangeStep> {
        self.plan_range_step(io, node, offset, end, op).await
    }

    async fn flush_caches(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
        Qcow2::flush_caches(self, io, node).await
    }

    async fn close(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
        Qcow2::close(self, io, node).await
    }

    async fn resize(&self, io: &Io<'_, '_>, node: NodeId, new_size: u64) -> Result<()> {
        if new_size < self.size() {
            return self.shrink(io, node, new_size).await;
        }
        self.grow(io, node, new_size).await
    }
}

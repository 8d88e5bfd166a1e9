//! What the check needs to know of the image before it counts anything: the header, the
//! tables it names and their sizes, read from the image file alone (no qcow2 node is opened,
//! so a corrupt or dirty image can be checked and repaired), with the same placement checks an
//! open makes. An image these checks refuse cannot be checked (qemu-img: it cannot be opened).
//! The check reads the snapshot table tolerantly itself (`snaptable`), as QEMU opens
//! an image for a check without it; other users read it as strictly as an open.

use crate::error::{Error, Result};
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::super::extensions;
use super::super::header::{incompat, Header, KNOWN_HEADER_LEN};
use super::super::snapshots;
use super::super::validation::{self, Metadata, Region, Table};

/// The image as the check sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) header: Header,
    /// Cluster size and its log2.
    pub(crate) cs: u64,
    pub(crate) cluster_bits: u32,
    /// Bytes of the image file when the check began.
    pub(crate) file_size: u64,
    /// Refcount entries are `1 << refcount_order` bits wide.
    pub(crate) refcount_order: u32,
    /// Refcount table entries (`refcount_table_clusters * cs / 8`).
    pub(crate) rt_entries: u64,
    /// Refcount entries per refcount block, log2.
    pub(crate) refblock_bits: u32,
    /// L2 entry size in bytes (8, or 16 with extended L2 entries).
    pub(crate) l2_entry: u64,
    pub(crate) extended_l2: bool,
    pub(crate) data_file: bool,
    /// The snapshot table as the check read it (empty until `snaptable::survey` has).
    pub(crate) snaps: SnapTable,
    /// The bitmap directory (offset, bytes, bitmaps), if the bitmaps are consistent.
    pub(crate) bitmaps: Option<(u64, u64, u32)>,
}

impl Layout {
    /// Reads and checks the header, extensions and table placement of the image in `file`,
    /// the snapshot table as strictly as an open reads it.
    pub(crate) async fn read(io: &Io<'_, '_>, file: NodeId) -> Result<Self> {
        Self::read_with(io, file, true).await
    }

    /// [`Layout::read`] without the snapshot table (`snaps` empty): the check reads it
    /// tolerantly (`snaptable::survey`), as QEMU opens an image for a check without it.
    pub(crate) async fn read_for_check(io: &Io<'_, '_>, file: NodeId) -> Result<Self> {
        Self::read_with(io, file, false).await
    }

    async fn read_with(io: &Io<'_, '_>, file: NodeId, snapshots: bool) -> Result<Self> {
        let mut bytes = [0u8; KNOWN_HEADER_LEN];
        let present = child_io::read_upto(io, file, 0, &mut bytes).await?;
        let header = Header::parse(&bytes, present)?;
        let file_size = child_io::size(io, file)?;
        let cs = header.cluster_size();
        let l1 = validation::place(
            Table::L1,
            header.l1_table_offset,
            u64::from(header.l1_size) * 8,
            validation::MAX_L1_BYTES,
            cs,
            file_size,
        )?;
        if header.refcount_table_clusters == 0 {
            return Err(Error::BadImage { what: "no refcount table (refcount_table_clusters is 0): rebuilding one is not supported" });
        }
        let rt_bytes = u64::from(header.refcount_table_clusters) * cs;
        let refcount_table = validation::place(
            Table::RefcountTable,
            header.refcount_table_offset,
            rt_bytes,
            validation::MAX_REFTABLE_BYTES,
            cs,
            file_size,
        )?;
        let ext = extensions::read(io, file, &header).await?;
        let (snaps, count) = if snapshots {
            (
                snapshots::check(io, file, &header).await?,
                header.nb_snapshots,
            )
        } else {
            (Region::new(header.snapshots_offset, 0), 0)
        };
        validation::disjoint(&Metadata {
            header: Region::new(0, cs),
            l1,
            refcount_table,
            snapshots: snaps,
        })?;
        let cluster_bits = header.cluster_bits;
        let refcount_order = header.refcount_order;
        Ok(Layout {
            header,
            cs,
            cluster_bits,
            file_size,
            refcount_order,
            rt_entries: rt_bytes / 8,
            refblock_bits: cluster_bits + 3 - refcount_order,
            l2_entry: if header.extended_l2() { 16 } else { 8 },
            extended_l2: header.extended_l2(),
            data_file: header.incompatible & incompat::DATA_FILE != 0,
            snaps: SnapTable {
                offset: header.snapshots_offset,
                count,
                len: snaps.len,
            },
            bitmaps: ext.bitmap_directory,
        })
    }

    /// Clusters the file holds (a partial last one counts).
    pub(crate) fn file_clusters(&self) -> u64 {
        self.file_size.div_ceil(self.cs)
    }

    /// Largest refcount an entry holds.
    pub(crate) fn refcount_max(&self) -> u64 {
        let bits = 1u32 << self.refcount_order;
        if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// Bytes of a table read at once: 4 KiB, or a cluster if clusters are smaller.
    pub(crate) fn chunk(&self) -> usize {
        (self.cs as usize).min(super::SCRATCH)
    }
}

/// The big-endian u64 at byte `at` of `buf` (0 past its end).
pub(crate) fn be64(buf: &[u8], at: usize) -> u64 {
    match buf.get(at..at + 8) {
        Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => 0,
    }
}

/// Stores `v` big-endian at byte `at` of `buf` (nothing past its end).
pub(crate) fn put_be64(buf: &mut [u8], at: usize, v: u64) {
    if let Some(b) = buf.get_mut(at..at + 8) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// The snapshot table as the check found it (`snaptable::survey` reads it tolerantly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapTable {
    /// Its offset in the file.
    pub(crate) offset: u64,
    /// Entries in force (after a cut under `-r all`).
    pub(crate) count: u32,
    /// Bytes from the first entry to the end of the last one's name (QEMU's `snapshots_size`).
    pub(crate) len: u64,
}

//! Where tables may lie: checks at open (tables aligned, inside the file, clear of the header and
//! of each other, no larger than QEMU allows) and while reading (an L2 table or a data cluster
//! must not lie on the header or a known table). Every failure is a typed error naming the check.

use crate::error::{Error, Result};

/// QEMU's limit on an L1 table (32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's limit on the refcount table (8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// QEMU's limit on internal snapshots.
pub const MAX_SNAPSHOTS: u32 = 65536;
/// QEMU's limit on the snapshot table (64 MiB).
pub const MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;

/// A byte range of the image file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Length (0: nothing).
    pub len: u64,
}

impl Region {
    /// `[start, start + len)`; callers have checked that it does not overflow.
    pub const fn new(start: u64, len: u64) -> Self {
        Self { start, len }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// True if both are non-empty and share a byte.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.len > 0 && other.len > 0 && self.start < other.end() && other.start < self.end()
    }
}

/// The tables an image file has besides L2 tables and refcount blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The header cluster (empty if data lives in an external file, where offset 0 is data).
    pub header: Region,
    /// The active L1 table.
    pub l1: Region,
    /// The refcount table.
    pub refcount_table: Region,
    /// The snapshot table.
    pub snapshots: Region,
}

impl Metadata {
    /// Which table `r` lies on, if any.
    #[inline(always)]
    pub fn hit(&self, r: &Region) -> Option<&'static str> {
        if r.overlaps(&self.header) {
            Some("the header")
        } else if r.overlaps(&self.l1) {
            Some("the L1 table")
        } else if r.overlaps(&self.refcount_table) {
            Some("the refcount table")
        } else if r.overlaps(&self.snapshots) {
            Some("the snapshot table")
        } else {
            None
        }
    }
}

/// Which table a placement check is about (for its error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The active L1 table.
    L1,
    /// The refcount table.
    RefcountTable,
    /// The snapshot table.
    Snapshots,
    /// A snapshot's L1 table.
    SnapshotL1,
}

#[derive(Clone, Copy)]
enum Fault {
    Unaligned,
    TooLarge,
    PastEof,
    OnHeader,
}

fn message(table: Table, fault: Fault) -> &'static str {
    use Fault::*;
    use Table::*;
    match (table, fault) {
        (L1, Unaligned) => "L1 table offset not cluster-aligned",
        (L1, TooLarge) => "L1 table larger than 32 MiB",
        (L1, PastEof) => "L1 table reaches past the end of the file",
        (L1, OnHeader) => "L1 table overlaps the header",
        (RefcountTable, Unaligned) => "refcount table offset not cluster-aligned",
        (RefcountTable, TooLarge) => "refcount table larger than 8 MiB",
        (RefcountTable, PastEof) => "refcount table reaches past the end of the file",
        (RefcountTable, OnHeader) => "refcount table overlaps the header",
        (Snapshots, Unaligned) => "snapshot table offset not cluster-aligned",
        (Snapshots, TooLarge) => "snapshot table too large (more than 65536 snapshots or 64 MiB)",
        (Snapshots, PastEof) => "snapshot table reaches past the end of the file",
        (Snapshots, OnHeader) => "snapshot table overlaps the header",
        (SnapshotL1, Unaligned) => "snapshot L1 table offset not cluster-aligned",
        (SnapshotL1, TooLarge) => "snapshot L1 table larger than 32 MiB",
        (SnapshotL1, PastEof) => "snapshot L1 table reaches past the end of the file",
        (SnapshotL1, OnHeader) => "snapshot L1 table overlaps the header",
    }
}

/// Checks a table of `bytes` bytes at `offset`: cluster-aligned, at most `max` bytes, after the
/// header cluster and inside a file of `file_size` bytes. An empty table only needs alignment (and
/// an offset QEMU's signed arithmetic can hold).
pub fn place(table: Table, offset: u64, bytes: u64, max: u64, cluster_size: u64, file_size: u64) -> Result<Region> {
    let fail = |fault| Err(Error::BadImage { what: message(table, fault) });
    if !offset.is_multiple_of(cluster_size) {
        return fail(Fault::Unaligned);
    }
    if bytes > max {
        return fail(Fault::TooLarge);
    }
    if bytes == 0 {
        // QEMU (`qcow2_validate_table`) refuses an empty table's offset past i64::MAX too.
        return if offset > i64::MAX as u64 { fail(Fault::PastEof) } else { Ok(Region::new(offset, 0)) };
    }
    if offset < cluster_size {
        return fail(Fault::OnHeader);
    }
    match offset.checked_add(bytes) {
        Some(end) if end <= file_size => Ok(Region::new(offset, bytes)),
        _ => fail(Fault::PastEof),
    }
}

/// Fails if two of the tables share a byte.
pub fn disjoint(m: &Metadata) -> Result<()> {
    let bad = |what| Err(Error::BadImage { what });
    if m.l1.overlaps(&m.refcount_table) {
        return bad("L1 table and refcount table overlap");
    }
    if m.l1.overlaps(&m.snapshots) {
        return bad("L1 table and snapshot table overlap");
    }
    if m.refcount_table.overlaps(&m.snapshots) {
        return bad("refcount table and snapshot table overlap");
    }
    Ok(())
}

/// Checks a cluster-sized structure (an L2 table, a refcount block) found at `offset` through an
/// entry at `entry_at`: aligned, inside the file, not on a known table.
pub fn cluster_ref(offset: u64, cluster_size: u64, file_size: u64, meta: &Metadata, entry_at: u64, what: ClusterRef) -> Result<()> {
    let corrupt = |what| Err(Error::Corrupt { what, offset: entry_at });
    if !offset.is_multiple_of(cluster_size) {
        return corrupt(what.unaligned());
    }
    match offset.checked_add(cluster_size) {
        Some(end) if end <= file_size => {}
        _ => return corrupt(what.past_eof()),
    }
    if meta.hit(&Region::new(offset, cluster_size)).is_some() {
        return corrupt(what.on_metadata());
    }
    Ok(())
}

/// What [`cluster_ref`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterRef {
    /// An L2 table named by an L1 entry.
    L2Table,
    /// A refcount block named by a refcount table entry.
    RefcountBlock,
}

impl ClusterRef {
    fn unaligned(self) -> &'static str {
        match self {
            ClusterRef::L2Table => "L1 entry: L2 table offset not cluster-aligned",
            ClusterRef::RefcountBlock => "refcount table entry: block offset not cluster-aligned",
        }
    }

    fn past_eof(self) -> &'static str {
        match self {
            ClusterRef::L2Table => "L1 entry: L2 table past the end of the file",
            ClusterRef::RefcountBlock => "refcount table entry: block past the end of the file",
        }
    }

    fn on_metadata(self) -> &'static str {
        match self {
            ClusterRef::L2Table => "L1 entry: L2 table overlaps the header or a table",
            ClusterRef::RefcountBlock => "refcount table entry: block overlaps the header or a table",
        }
    }
}

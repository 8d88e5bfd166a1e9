//! Where tables may lie: checks at open (tables aligned, inside the file, clear of the header and
//! of each other, no larger than QEMU allows) and while reading (an L2 table or a data cluster
//! must not lie on the header or a known table). Every failure is a typed error naming the check.

use core::cell::Cell;

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

/// An image's [`Metadata`] as it changes (tables move when they grow), with the end of its
/// last table kept beside it: a region starting at or past that end lies on none of them. The
/// data clusters of most images lie past every table, so the check each read makes of its data
/// cluster ([`super::entry_rules::host_cluster`]) is then one comparison instead of a copy of
/// the metadata and four overlap tests (46 of a guest-shaped 4 KiB read's 5,728 instructions,
/// measured with callgrind).
#[derive(Debug)]
pub struct Tables {
    meta: Cell<Metadata>,
    /// The largest `end()` of `meta`'s regions.
    end: Cell<u64>,
}

impl Tables {
    /// Starts with `meta`.
    pub fn new(meta: Metadata) -> Self {
        Self { meta: Cell::new(meta), end: Cell::new(Self::end_of(&meta)) }
    }

    /// The tables as they are now.
    pub fn get(&self) -> Metadata {
        self.meta.get()
    }

    /// Records where the tables are now.
    pub fn set(&self, meta: Metadata) {
        self.meta.set(meta);
        self.end.set(Self::end_of(&meta));
    }

    /// As [`Metadata::hit`].
    #[inline(always)]
    pub fn hit(&self, r: &Region) -> Option<&'static str> {
        if r.start >= self.end.get() {
            return None;
        }
        self.meta.get().hit(r)
    }

    fn end_of(m: &Metadata) -> u64 {
        [m.header, m.l1, m.refcount_table, m.snapshots].iter().map(Region::end).max().unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut past the last table answers as the full check does, also after a table
    /// moves past the old end.
    #[test]
    fn tables_hit_past_the_end_and_after_a_move() {
        let cs = 65536;
        let meta = Metadata {
            header: Region::new(0, cs),
            l1: Region::new(3 * cs, 8),
            refcount_table: Region::new(cs, cs),
            snapshots: Region::default(),
        };
        let tables = Tables::new(meta);
        for at in [0, cs, 2 * cs, 3 * cs, 4 * cs, 100 * cs] {
            assert_eq!(tables.hit(&Region::new(at, cs)), meta.hit(&Region::new(at, cs)), "cluster at {at}");
        }
        assert_eq!(tables.hit(&Region::new(3 * cs, cs)), Some("the L1 table"));
        assert_eq!(tables.hit(&Region::new(100 * cs, cs)), None);
        // The L1 table grows and moves to the end of the file.
        tables.set(Metadata { l1: Region::new(100 * cs, 2 * cs), ..meta });
        assert_eq!(tables.hit(&Region::new(101 * cs, cs)), Some("the L1 table"));
        assert_eq!(tables.hit(&Region::new(3 * cs, cs)), None);
        assert_eq!(tables.hit(&Region::new(102 * cs, cs)), None);
    }
}

//! QEMU's "cached" overlap check (`qcow2_check_metadata_overlap` in the default `cached` mode)
//! for the tables changed in place: a refcount block about to change must not be an active L2
//! table, a snapshot's L1 table or the bitmap directory; an L2 table (or snapshot table) about to
//! change must not be a refcount block or the bitmap directory. A hit marks the image corrupt
//! ([`Qcow2::signal_corruption`]), as QEMU does before it writes the cache entry.
//!
//! The header, the active L1, the refcount table and the snapshot table are checked by
//! [`Qcow2::check_meta_write`] and, where a table is found, by
//! [`super::validation::cluster_ref`]; what needs a scan is here. QEMU scans its in-memory L1
//! and refcount tables on every metadata write; Strata scans what its metadata cache holds of
//! them (reading nothing for the check, as QEMU reads nothing) only for a table not checked since what it was checked against last changed: the last
//! refcount block and two L2 tables are remembered ([`Cleared`]), so a run of writes to the same
//! tables pays one scan. A refcount block stays clear until the L1 table or the snapshot table
//! moves; an L2 table until a refcount block is linked or the refcount table moves.

use core::cell::Cell;

use crate::error::Result;
use crate::io::Io;
use crate::node::NodeId;

use super::super::entry_bits::L1_OFFSET;
use super::super::validation::Region;
use super::super::Qcow2;

/// The offset bits of a refcount table entry.
const REFT_OFFSET: u64 = 0xffff_ffff_ffff_fe00;

/// The refcount block found clear last, and what it was checked under: (block, L1 table offset,
/// snapshot table offset, snapshot count). It stays clear while the rest is unchanged: an L2
/// table linked into the L1 table meanwhile is checked against the refcount blocks when its
/// entries are written ([`Qcow2::check_table_write`]), so L1 entry changes (COPIED flags, a
/// snapshot's reference walk) need no new scan.
type ClearRefblock = (u64, u64, u64, u32);

/// Tables recently found clear of the metadata a scan finds. Kept small: every node slot of a
/// graph holds one (a chain's images are two slots each).
#[derive(Debug, Default)]
pub(crate) struct Cleared {
    refblock: Cell<Option<ClearRefblock>>,
    /// L2 tables (cluster offsets; 0 for none: the header is never one) found clear under
    /// `tables_under`.
    tables: [Cell<u64>; 2],
    /// (refcount-table links, refcount table offset) the `tables` were checked under.
    tables_under: Cell<(u32, u64)>,
    next_table: Cell<u8>,
    /// Bumped whenever a refcount table entry is set.
    links: Cell<u32>,
}

impl Cleared {
    /// A refcount table entry changed: L2 tables are checked again.
    pub(crate) fn linked(&self) {
        self.links.set(self.links.get().wrapping_add(1));
    }

    /// True if the L2 table at `cluster` was found clear under `under`; forgets the tables if
    /// `under` changed.
    fn table_clear(&self, cluster: u64, under: (u32, u64)) -> bool {
        if self.tables_under.get() != under {
            self.tables_under.set(under);
            self.tables.iter().for_each(|t| t.set(0));
            return false;
        }
        self.tables.iter().any(|t| t.get() == cluster)
    }

    fn table_cleared(&self, cluster: u64) {
        let i = usize::from(self.next_table.get()) % self.tables.len();
        if let Some(t) = self.tables.get(i) {
            t.set(cluster);
        }
        self.next_table.set(((i + 1) % self.tables.len()) as u8);
    }
}

impl Qcow2 {
    /// Before the refcount block at `block` (a cluster offset) changes: QEMU's check for a
    /// refcount-block write (everything but refcount blocks).
    pub(crate) async fn check_refblock_write(&self, io: &Io<'_, '_>, file: NodeId, block: u64) -> Result<()> {
        let (snap_at, snaps) = self.snap_table.get();
        let now = (block, self.l1.get().start, snap_at, snaps);
        if self.w.cleared.refblock.get() == Some(now) {
            return Ok(());
        }
        let here = Region::new(block, self.cluster_size());
        let hit = if self.bitmap_directory().overlaps(&here) {
            Some("refcount block write would overwrite the bitmap directory")
        } else if self.l1_names(io, file, block) {
            Some("refcount block write would overwrite an active L2 table")
        } else if self.on_snapshot_l1(io, file, &here).await? {
            Some("refcount block write would overwrite a snapshot's L1 table")
        } else {
            None
        };
        if let Some(what) = hit {
            return Err(self.signal_corruption(io, file, what, block).await);
        }
        self.w.cleared.refblock.set(Some(now));
        Ok(())
    }

    /// Before the table cluster holding byte `at` changes in place (an L2 table, a snapshot's
    /// L1 table): QEMU's check for an L2 write (everything but L2 tables; snapshot L1 tables
    /// are left out, as a snapshot's own L1 writes are to one).
    pub(crate) async fn check_table_write(&self, io: &Io<'_, '_>, file: NodeId, at: u64) -> Result<()> {
        let cluster = at & !(self.cluster_size() - 1);
        let cleared = &self.w.cleared;
        if cleared.table_clear(cluster, (cleared.links.get(), self.meta.get().refcount_table.start)) {
            return Ok(());
        }
        let here = Region::new(cluster, self.cluster_size());
        let hit = if self.bitmap_directory().overlaps(&here) {
            Some("table write would overwrite the bitmap directory")
        } else if self.is_refcount_block(io, file, cluster) {
            Some("table write would overwrite a refcount block")
        } else {
            None
        };
        if let Some(what) = hit {
            return Err(self.signal_corruption(io, file, what, at).await);
        }
        cleared.table_cleared(cluster);
        Ok(())
    }

    /// The bitmap directory's bytes (empty without one).
    fn bitmap_directory(&self) -> Region {
        match self.extensions().bitmap_directory {
            Some((offset, len, _)) => Region::new(offset, len),
            None => Region::default(),
        }
    }

    /// True if an entry of the active L1 table names the cluster at `cluster`.
    fn l1_names(&self, io: &Io<'_, '_>, file: NodeId, cluster: u64) -> bool {
        let l1 = self.l1.get();
        let bytes = u64::from(self.l1_entries.get()) * 8;
        self.any_entry(io, file, Region::new(l1.start, bytes.min(l1.len)), |e| e & L1_OFFSET == cluster)
    }

    /// True if an entry of the refcount table names the cluster at `cluster`.
    fn is_refcount_block(&self, io: &Io<'_, '_>, file: NodeId, cluster: u64) -> bool {
        self.any_entry(io, file, self.meta.get().refcount_table, |e| e & REFT_OFFSET == cluster)
    }

    /// True if `what` holds for a big-endian u64 of `table`, in the slices of it the metadata
    /// cache holds. Slices not in memory are not read: QEMU checks against the tables it keeps
    /// in memory and reads nothing for the check, and neither may Strata (a read here would be
    /// a request QEMU does not make, which blkdebug's rules and the recorded crash tests see).
    /// The tables a write has just used (the L1 slice that led to its L2 table, the refcount
    /// table slice that led to its block) are in the cache.
    fn any_entry(&self, io: &Io<'_, '_>, file: NodeId, table: Region, what: impl Fn(u64) -> bool) -> bool {
        let slice = self.slice_len() as u64;
        let mut at = table.start;
        while at < table.end() {
            let start = at & !(slice - 1);
            let from = (at - start) as usize;
            let to = (table.end().min(start + slice) - start) as usize;
            let found = io.meta.peek(file, start, slice as usize, |s| {
                s.get(from..to).is_some_and(|b| b.chunks_exact(8).any(|w| w.try_into().is_ok_and(|w: [u8; 8]| what(u64::from_be_bytes(w)))))
            });
            if found == Some(true) {
                return true;
            }
            at = start + slice;
        }
        false
    }

    /// True if `region` touches a snapshot's L1 table. A snapshot table that does not read
    /// (its own errors are reported where it is used) ends the search.
    async fn on_snapshot_l1(&self, io: &Io<'_, '_>, file: NodeId, region: &Region) -> Result<bool> {
        let mut walk = self.snapshots();
        while let Ok(Some(s)) = walk.next(io, file).await {
            if Region::new(s.l1_table_offset, u64::from(s.l1_size).saturating_mul(8)).overlaps(region) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

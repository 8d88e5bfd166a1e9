//! Applying (reverting to) an internal snapshot (QEMU's `qcow2_snapshot_goto`): the active L1
//! becomes a copy of the snapshot's, the virtual size the snapshot's.
//!
//! QEMU overwrites the active L1 table in place; Strata writes the copy into new clusters and
//! switches the header's size and L1 fields (adjacent, one sector) in one write, so a power cut
//! shows the old or the new active state whole. Order: one more reference on everything the
//! snapshot reaches (its tables' COPIED bits cleared: they become shared with the new active
//! L1), the copy written, all stable; the header switched; then the old active tree's references
//! dropped and the new active tables' COPIED bits set where counts fell back to one.

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::state::field;
use super::super::validation::{self, Region, Table, MAX_L1_BYTES};
use super::super::Qcow2;
use super::lookup::Lookup;
use super::refcount_walk::begin_op;
use super::SnapshotInfo;

impl Qcow2 {
    /// Reverts qcow2 node `node` (read-write, drained by the caller) to the snapshot whose id,
    /// or failing that name, is `key`. Returns the snapshot applied.
    pub async fn snapshot_apply(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        key: &str,
    ) -> Result<SnapshotInfo> {
        let (file, _lock) = begin_op(self, io, node).await?;
        let (snap, _) = self
            .locate_snapshot(io, file, key, Lookup::IdOrName)
            .await?;
        let cs = self.cluster_size();
        if snap.disk_size > i64::MAX as u64 {
            return Err(Error::BadImage {
                what: "snapshot virtual size above 2^63",
            });
        }
        let needed = self.header.l1_entries_for(snap.disk_size);
        let entries = needed.max(u64::from(snap.l1_size));
        if entries * 8 > MAX_L1_BYTES {
            return Err(Error::BadImage {
                what: "snapshot L1 table larger than 32 MiB",
            });
        }
        let sn_l1 = validation::place(
            Table::SnapshotL1,
            snap.l1_table_offset,
            u64::from(snap.l1_size) * 8,
            MAX_L1_BYTES,
            cs,
            child_io::size(io, file)?,
        )?;
        if self.meta.hit(&sn_l1).is_some() {
            return Err(Error::BadImage {
                what: "snapshot L1 table overlaps the header or a table",
            });
        }
        self.update_tree_refcounts(io, file, sn_l1.start, snap.l1_size, 1, true)
            .await?;
        let bytes = entries * 8;
        let new_l1 = if bytes == 0 {
            0
        } else {
            let (at, _) = self
                .alloc_clusters(io, node, file, bytes.div_ceil(cs), true)
                .await?;
            self.copy_l1(io, file, sn_l1.start, at, snap.l1_size, entries as u32)
                .await?;
            at
        };
        self.flush_caches(io, node).await?;
        // Size, crypt method (0), L1 entries and offset: bytes 24..48 of the header.
        let mut hdr = [0u8; 24];
        hdr[..8].copy_from_slice(&snap.disk_size.to_be_bytes());
        hdr[12..16].copy_from_slice(&(entries as u32).to_be_bytes());
        hdr[16..].copy_from_slice(&new_l1.to_be_bytes());
        child_io::write(io, file, field::SIZE, &hdr).await?;
        flush::flush_leaves(io, file).await?;
        let (old, old_entries) = (self.l1.get(), self.l1_entries.get());
        let region = Region::new(new_l1, bytes);
        self.l1.set(region);
        self.l1_entries.set(entries as u32);
        self.l1_changed();
        let mut meta = self.meta.get();
        meta.l1 = region;
        self.meta.set(meta);
        self.size.set(snap.disk_size);
        io.node(node)?.size.set(self.size());
        self.l1_empty.set(Self::all_zero(io, file, region).await?);
        io.shape_changed();
        // The old active tree and its L1 table lose their references.
        self.update_tree_refcounts(io, file, old.start, old_entries, -1, false)
            .await?;
        self.drop_clusters(io, file, old.start, old.len).await?;
        io.meta.forget_range(file, old.start, old.end());
        self.update_tree_refcounts(io, file, new_l1, entries as u32, 0, true)
            .await?;
        self.l1_changed();
        self.flush_caches(io, node).await?;
        self.flush_caches(io, node).await?;
        Ok(snap)
    }
}

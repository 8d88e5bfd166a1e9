//! Deleting an internal snapshot (QEMU's `qcow2_snapshot_delete`): a new snapshot table without
//! its entry switched in first (a power cut from then on leaks at worst), then one reference
//! dropped from everything its L1 table reaches and from the L1 table itself, and the active
//! tables' COPIED bits set where counts fell to one.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;

use super::super::Qcow2;
use super::lookup::Lookup;
use super::refcount_walk::begin_op;
use super::SnapshotInfo;

impl Qcow2 {
    /// Deletes the snapshot `key` names (`lookup` says how) from qcow2 node `node` (read-write,
    /// drained by the caller). Returns the snapshot deleted.
    pub async fn snapshot_delete(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        key: &str,
        lookup: Lookup,
    ) -> Result<SnapshotInfo> {
        let (file, _lock) = begin_op(self, io, node).await?;
        let (snap, entry) = self.locate_snapshot(io, file, key, lookup).await?;
        let l1 = super::super::validation::Region::new(
            snap.l1_table_offset,
            u64::from(snap.l1_size) * 8,
        );
        if self.meta.hit(&l1).is_some() {
            return Err(Error::BadImage {
                what: "snapshot L1 table overlaps the header or a table",
            });
        }
        let (_, count) = self.snap_table.get();
        self.rewrite_snapshot_table(io, node, file, Some(entry), None, count.saturating_sub(1))
            .await?;
        self.update_tree_refcounts(io, file, l1.start, snap.l1_size, -1, false)
            .await?;
        self.drop_clusters(io, file, l1.start, l1.len).await?;
        io.meta.forget_range(file, l1.start, l1.end());
        let active = self.l1.get();
        self.update_tree_refcounts(io, file, active.start, self.l1_entries.get(), 0, true)
            .await?;
        self.flush_caches(io, node).await?;
        self.flush_caches(io, node).await?;
        Ok(snap)
    }
}

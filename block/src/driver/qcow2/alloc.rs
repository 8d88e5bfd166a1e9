//! Host cluster allocation (QEMU's `qcow2_alloc_clusters`, `alloc_refcount_block`): a search for
//! free clusters through the refcount blocks, refcount changes in the metadata cache, and new
//! refcount blocks placed where they describe themselves.
//!
//! Allocation runs under the node's allocation lock. A refcount increase only touches the cache
//! (class `Refcount`): the write-back writes refcounts, flushes, and only then writes the tables
//! that point at the new clusters (`docs/ARCHITECTURE.md` rule 1). A new refcount block is written and flushed
//! before the refcount table entry naming it changes. Before a cluster is handed out it is
//! checked against the image's metadata — the header, L1, refcount and snapshot tables and every
//! table slice the cache holds (QEMU's "cached" overlap check); a hit marks the image corrupt.
//! Refcount blocks and L2 tables changed in place are checked against the tables a scan finds
//! ([`overlap`]).

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::io::events::Event;
use crate::io::{child_io, flush};

use crate::io::cache::Class;
use super::refcount::{entry, set_entry};
use super::validation::{self, ClusterRef, Region};
use super::Qcow2;

pub(crate) mod overlap;

/// Where a search for free clusters stopped.
enum Search {
    /// Free clusters from this index (this many), all with refcount blocks.
    Found(u64, u64),
    /// This cluster is free but has no refcount block yet.
    NeedsBlock(u64),
    /// The search ran past what the refcount table covers.
    NeedsTable,
}

impl Qcow2 {
    /// Refcount entries per refcount block.
    pub(crate) fn per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.refcount_order
    }

    /// The refcount block for table index `index`: `None` past the table, `Some(0)` if none.
    async fn refcount_block(&self, io: &Io<'_, '_>, file: NodeId, index: u64) -> Result<Option<u64>> {
        let rt = self.meta.get().refcount_table;
        if index >= rt.len / 8 {
            return Ok(None);
        }
        let at = rt.start + index * 8;
        let e = io.meta.read_u64(io, file, at, self.slice_len()).await?;
        if e & 0x1ff != 0 {
            return Err(Error::Corrupt { what: "refcount table entry: reserved bits set", offset: at });
        }
        if e != 0 {
            validation::cluster_ref(e, self.cluster_size(), child_io::size(io, file)?, &self.meta.get(), at, ClusterRef::RefcountBlock)?;
        }
        Ok(Some(e))
    }

    /// The slice of refcount block `block` holding cluster `cluster`'s entry: (slice offset in
    /// the file, entry index inside the slice).
    fn refcount_slot(&self, block: u64, cluster: u64) -> (u64, u64) {
        let in_block = cluster % self.per_block();
        let per_slice = (self.slice_len() as u64 * 8) >> self.refcount_order;
        (block + in_block / per_slice * self.slice_len() as u64, in_block % per_slice)
    }

    /// Looks for free clusters from cluster `from` on, a refcount slice at a time: `count` in a
    /// row if `whole`, else the first run of at most `count` (so holes left by frees are used and
    /// a run never has to cross a refcount block that does not exist yet).
    async fn search(&self, io: &Io<'_, '_>, file: NodeId, from: u64, count: u64, whole: bool) -> Result<Search> {
        let order = u32::from(self.refcount_order);
        let per_slice = (self.slice_len() as u64 * 8) >> order;
        let (mut start, mut c) = (from, from);
        while c < start + count {
            let found_part = c > start && !whole;
            let block = match self.refcount_block(io, file, c / self.per_block()).await? {
                None if found_part => return Ok(Search::Found(start, c - start)),
                None => return Ok(Search::NeedsTable),
                Some(0) if found_part => return Ok(Search::Found(start, c - start)),
                Some(0) => return Ok(Search::NeedsBlock(c)),
                Some(b) => b,
            };
            let (slice, first) = self.refcount_slot(block, c);
            let limit = (per_slice - first).min(start + count - c);
            let used = io
                .meta
                .with_slice(io, file, slice, self.slice_len(), |s| (0..limit).find(|&i| entry(s, order, first + i) != Some(0)))
                .await?;
            match used {
                Some(i) if !whole && c + i > start => return Ok(Search::Found(start, c + i - start)),
                Some(i) => {
                    start = c + i + 1;
                    c = start;
                }
                None => c += limit,
            }
        }
        Ok(Search::Found(start, count))
    }

    /// Allocates host clusters (refcount 1 each, in the cache): `count` contiguous ones if
    /// `whole` (a table), else the first free run of 1..=`count`. Returns the first one's byte
    /// offset and how many; the image file grows to hold them. Caller holds the allocation lock.
    pub(crate) async fn alloc_clusters(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        file: NodeId,
        count: u64,
        whole: bool,
    ) -> Result<(u64, u64)> {
        let cs = self.cluster_size();
        if whole && count >= self.per_block() {
            // Each new refcount block sits inside the range it counts, so no free run spans a
            // whole block's range: refuse rather than search forever.
            return Err(Error::Unsupported("a table larger than one refcount block's reach (use larger clusters or wider refcounts)"));
        }
        loop {
            match self.search(io, file, self.w.free_hint.get(), count, whole).await? {
                Search::NeedsBlock(c) => self.new_refcount_block(io, file, c).await?,
                Search::NeedsTable => self.grow_refcount_table(io, node, file).await?,
                Search::Found(first, count) => {
                    let (start, end) = (first * cs, (first + count) * cs);
                    self.check_new_clusters(io, file, start, end).await?;
                    child_io::grow(io, file, end)?;
                    for c in first..first + count {
                        self.change_refcount(io, file, c, 1).await?;
                    }
                    // (A cluster used before holds nothing in the cache: freeing it forgot it.)
                    if start >= self.w.fresh_from.get() {
                        self.w.fresh_from.set(end);
                    }
                    self.w.free_hint.set(first + count);
                    return Ok((start, count));
                }
            }
        }
    }

    /// Adds `delta` (+1 or -1) to the refcount of host cluster `cluster`; returns the new count.
    pub(crate) async fn change_refcount(&self, io: &Io<'_, '_>, file: NodeId, cluster: u64, delta: i64) -> Result<u64> {
        let index = cluster / self.per_block();
        let block = match self.refcount_block(io, file, index).await? {
            Some(b) if b != 0 => b,
            _ => {
                let what = "refcount of a cluster without a refcount block changed";
                return Err(self.signal_corruption(io, file, what, cluster << self.cluster_bits).await);
            }
        };
        self.check_refblock_write(io, file, block).await?;
        let (slice, i) = self.refcount_slot(block, cluster);
        let order = u32::from(self.refcount_order);
        // refblock_update_part is raised when the slice is written back (io::cache).
        let changed = io
            .meta
            .with_slice_mut(io, file, slice, self.slice_len(), Class::Refcount, |s| {
                let old = entry(s, order, i)?;
                let new = if delta < 0 { old.checked_sub(delta.unsigned_abs())? } else { old.checked_add(delta as u64)? };
                set_entry(s, order, i, new)?;
                Some(new)
            })
            .await?;
        match changed {
            Some(n) => Ok(n),
            None if delta < 0 => Err(self.signal_corruption(io, file, "refcount dropped below zero", cluster << self.cluster_bits).await),
            None => Err(Error::Unsupported("refcount overflow (more references than the refcount width holds)")),
        }
    }

    /// Writes a refcount block at cluster `c` (which it covers, counting itself), flushes it, and
    /// links it from the refcount table (in the cache).
    async fn new_refcount_block(&self, io: &Io<'_, '_>, file: NodeId, c: u64) -> Result<()> {
        let cs = self.cluster_size();
        let host = c * cs;
        self.check_new_clusters(io, file, host, host + cs).await?;
        self.check_refblock_write(io, file, host).await?;
        child_io::grow(io, file, host + cs)?;
        let fresh = host >= self.w.fresh_from.get();
        let slice_len = self.slice_len();
        self.event_at(io, file, Event::RefblockAllocWrite).await?;
        let (self_slice, self_index) = self.refcount_slot(host, c);
        // A bounce buffer, not an array: a local array would live in every request's future.
        let mut bounce = io.bounce.take_for_copy(1).await?;
        let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
        let mut at = host;
        while at < host + cs {
            let piece = buf.get_mut(..slice_len).ok_or(Error::NoSpace { what: "bounce buffers smaller than a metadata slice" })?;
            piece.fill(0);
            if at == self_slice {
                set_entry(piece, u32::from(self.refcount_order), self_index, 1).ok_or(Error::BadGraph("refcount entry outside its slice"))?;
            } else if fresh {
                at += slice_len as u64;
                continue;
            }
            child_io::write(io, file, at, piece).await?;
            at += slice_len as u64;
        }
        drop(bounce);
        io.meta.forget_range(file, host, host + cs);
        if fresh {
            self.w.fresh_from.set(host + cs);
        }
        flush::flush_leaves(io, file).await?;
        self.event_at(io, file, Event::RefblockAllocHookup).await?;
        let rt = self.meta.get().refcount_table;
        let entry_at = rt.start + c / self.per_block() * 8;
        self.check_meta_write(io, file, entry_at, Class::Refcount).await?;
        self.w.cleared.linked();
        io.meta.write_u64(io, file, entry_at, slice_len, Class::Refcount, host).await
    }

    /// Reports `event` for the qcow2 node whose file is `file`.
    pub(crate) async fn event_at(&self, io: &Io<'_, '_>, file: NodeId, event: Event) -> Result<()> {
        if !io.has_event_hook() {
            return Ok(());
        }
        match io.parents(file).find(|(_, c)| c.role == crate::node::Role::File) {
            Some((node, _)) => io.event(node, event).await,
            None => Ok(()),
        }
    }

    /// The "cached" overlap check for clusters about to be allocated: they must not lie on the
    /// header, a table, or anything the metadata cache holds for this image.
    async fn check_new_clusters(&self, io: &Io<'_, '_>, file: NodeId, start: u64, end: u64) -> Result<()> {
        let region = Region::new(start, end - start);
        // Clusters past everything written since the open cannot hold a table the cache knows
        // of (every table lies below that line), so the cache is searched only below it.
        let below_fresh = start < self.w.fresh_from.get();
        if self.meta.hit(&region).is_some() || (below_fresh && io.meta.holds(file, start, end, self.slice_len() as u64)) {
            return Err(self.signal_corruption(io, file, "allocation would overwrite metadata (refcounts are wrong)", start).await);
        }
        Ok(())
    }

    /// The overlap check for a metadata slice about to change: table slices (L1, L2) and refcount
    /// slices must lie on their own kind of structure, never on the header or the snapshot table;
    /// a table slice outside the L1 table (an L2 table's) not on a refcount block either
    /// ([`Qcow2::check_table_write`]).
    pub(crate) async fn check_meta_write(&self, io: &Io<'_, '_>, file: NodeId, at: u64, class: Class) -> Result<()> {
        let m = self.meta.get();
        let r = Region::new(at, 8);
        let bad = r.overlaps(&m.header)
            || r.overlaps(&m.snapshots)
            || (class == Class::Table && r.overlaps(&m.refcount_table))
            || (class == Class::Refcount && r.overlaps(&m.l1));
        if bad {
            return Err(self.signal_corruption(io, file, "metadata write would overwrite other metadata", at).await);
        }
        if class == Class::Table && !r.overlaps(&m.l1) {
            self.check_table_write(io, file, at).await?;
        }
        Ok(())
    }
}

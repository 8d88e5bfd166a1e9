//! Growing a read-write qcow2 image: the virtual size (moving the L1 table to a bigger place
//! when it must grow, QEMU's `qcow2_grow_l1_table`) and the refcount table (QEMU's
//! `qcow2_refcount_area`: a new, larger table and the refcount blocks that count it, placed
//! together just past what the old table covers).
//!
//! Both follow the same order: new structures written and flushed while nothing points at them,
//! then the header switched to them in one write of adjacent fields (inside one sector, so it
//! lands whole), flushed, and only then the old structures queued for freeing.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::io::events::Event;
use crate::io::{child_io, flush};

use super::refcount::set_entry;
use super::state::{field, PendingFree};
use super::validation::{Region, MAX_L1_BYTES, MAX_REFTABLE_BYTES};
use super::Qcow2;

impl Qcow2 {
    /// Grows the virtual size to `new_size` bytes (a multiple of 512). Shrinking is refused.
    /// The caller has drained the node.
    pub(crate) async fn grow(&self, io: &Io<'_, '_>, node: NodeId, new_size: u64) -> Result<()> {
        self.check_writable()?;
        if new_size < self.size() {
            return Err(Error::Unsupported("shrinking a qcow2 image"));
        }
        if !new_size.is_multiple_of(512) || new_size > i64::MAX as u64 {
            return Err(Error::BadOption { key: "size", why: "must be a multiple of 512 below 2^63" });
        }
        let file = Self::file(io, node)?;
        self.mark_dirty(io, file).await?;
        let _lock = self.alloc_lock().await;
        let needed = self.header().l1_entries_for(new_size);
        if needed > u64::from(self.l1_entries.get()) {
            self.move_l1(io, node, file, needed).await?;
        }
        self.write_header_u64(io, file, field::SIZE, new_size).await?;
        flush::flush_leaves(io, file).await?;
        self.size.set(new_size);
        io.node(node)?.size.set(self.size());
        io.shape_changed();
        Ok(())
    }

    /// Copies the L1 table to a new place with room for `entries` and switches the header to it.
    async fn move_l1(&self, io: &Io<'_, '_>, node: NodeId, file: NodeId, entries: u64) -> Result<()> {
        let cs = self.cluster_size();
        let bytes = entries * 8;
        if bytes > MAX_L1_BYTES {
            return Err(Error::Unsupported("an L1 table above 32 MiB (virtual size too large for this cluster size)"));
        }
        let clusters = bytes.div_ceil(cs);
        io.event(node, Event::L1GrowAllocTable).await?;
        let fresh = self.w.fresh_from.get();
        let (new, _) = self.alloc_clusters(io, node, file, clusters, true).await?;
        // Dirty L1 slices (and the refcounts of the new table) reach the disk first.
        io.meta.write_back(io, file).await?;
        let old = self.l1.get();
        io.event(node, Event::L1GrowWriteTable).await?;
        if new < fresh {
            for c in 0..clusters {
                self.zero_cluster(io, file, new + c * cs).await?;
            }
        }
        self.copy_bytes(io, file, old.start, new, old.len).await?;
        flush::flush_leaves(io, file).await?;
        let mut hdr = [0u8; 12];
        hdr[..4].copy_from_slice(&(entries as u32).to_be_bytes());
        hdr[4..].copy_from_slice(&new.to_be_bytes());
        io.event(node, Event::L1GrowActivateTable).await?;
        child_io::write(io, file, field::L1_SIZE, &hdr).await?;
        flush::flush_leaves(io, file).await?;
        let region = Region::new(new, bytes);
        self.l1.set(region);
        self.l1_changed();
        self.l1_entries.set(entries as u32);
        let mut meta = self.meta.get();
        meta.l1 = region;
        self.meta.set(meta);
        io.meta.forget_range(file, old.start, old.end());
        if old.len > 0 {
            self.free_later(io, node, PendingFree { host: old.start, len: old.len.div_ceil(cs) * cs, discard: false }).await?;
        }
        Ok(())
    }

    /// Replaces a full refcount table by one at least twice as large, with new refcount blocks
    /// for the clusters past the old table's reach, laid out from the first of those clusters:
    /// the blocks, then the table, all counted by the blocks. Caller holds the allocation lock.
    pub(crate) async fn grow_refcount_table(&self, io: &Io<'_, '_>, node: NodeId, file: NodeId) -> Result<()> {
        let cs = self.cluster_size();
        let per_block = self.per_block();
        io.event(node, Event::ReftableGrow).await?;
        let old = self.meta.get().refcount_table;
        let old_entries = old.len / 8;
        let area = old_entries * per_block;
        let mut entries = (old_entries * 2).max(old_entries + 1);
        let (mut blocks, mut table);
        loop {
            table = (entries * 8).div_ceil(cs);
            blocks = (table + 1).div_ceil(per_block);
            while (table + blocks).div_ceil(per_block) > blocks {
                blocks += 1;
            }
            if old_entries + blocks <= entries {
                break;
            }
            entries = old_entries + blocks;
        }
        if entries * 8 > MAX_REFTABLE_BYTES {
            return Err(Error::NoSpace { what: "refcount table (QEMU's 8 MiB limit)" });
        }
        let end = (area + blocks + table).checked_mul(cs).ok_or(Error::NoSpace { what: "image file offsets" })?;
        let start = area * cs;
        let r = Region::new(start, end - start);
        if self.meta.hit(&r).is_some() {
            return Err(self.signal_corruption(io, file, "refcount table growth would overwrite metadata", start).await);
        }
        child_io::grow(io, file, end)?;
        // Everything dirty (old table slices included) reaches the disk before the copy.
        io.meta.write_back(io, file).await?;
        // The blocks: each counts the area clusters in its range.
        let order = u32::from(self.refcount_order);
        let slice_len = self.slice_len() as u64;
        let mut bounce = io.bounce.take_for_copy(1).await?;
        let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
        io.event(node, Event::RefblockAllocWriteBlocks).await?;
        for b in 0..blocks {
            let block_at = (area + b) * cs;
            let first = (old_entries + b) * per_block;
            let mut at = 0;
            while at < cs {
                let piece = buf.get_mut(..slice_len as usize).ok_or(Error::NoSpace { what: "bounce buffers smaller than a metadata slice" })?;
                piece.fill(0);
                let per_slice = (slice_len * 8) >> order;
                let first_here = first + at / slice_len * per_slice;
                for c in first_here..first_here + per_slice {
                    if c >= area && c < area + blocks + table {
                        set_entry(piece, order, c - first_here, 1).ok_or(Error::BadGraph("refcount entry outside its slice"))?;
                    }
                }
                child_io::write(io, file, block_at + at, piece).await?;
                at += slice_len;
            }
        }
        drop(bounce);
        // The table: the old entries, then the new blocks.
        let table_at = (area + blocks) * cs;
        io.event(node, Event::RefblockAllocWriteTable).await?;
        for c in 0..table {
            self.zero_cluster(io, file, table_at + c * cs).await?;
        }
        self.copy_bytes(io, file, old.start, table_at, old.len).await?;
        for b in 0..blocks {
            child_io::write(io, file, table_at + (old_entries + b) * 8, &((area + b) * cs).to_be_bytes()).await?;
        }
        flush::flush_leaves(io, file).await?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&table_at.to_be_bytes());
        hdr[8..].copy_from_slice(&(table as u32).to_be_bytes());
        io.event(node, Event::RefblockAllocSwitchTable).await?;
        child_io::write(io, file, field::REFCOUNT_TABLE, &hdr).await?;
        flush::flush_leaves(io, file).await?;
        let mut meta = self.meta.get();
        meta.refcount_table = Region::new(table_at, table * cs);
        self.meta.set(meta);
        io.meta.forget_range(file, old.start, old.end());
        if self.w.fresh_from.get() < end {
            self.w.fresh_from.set(end);
        }
        self.free_later(io, node, PendingFree { host: old.start, len: old.len.div_ceil(cs) * cs, discard: false }).await
    }

    /// Copies `len` bytes of the file from `from` to `to` through a bounce buffer.
    pub(crate) async fn copy_bytes(&self, io: &Io<'_, '_>, file: NodeId, from: u64, to: u64, len: u64) -> Result<()> {
        let mut bounce = io.bounce.take_for_copy(1).await?;
        let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
        let mut at = 0;
        while at < len {
            let n = ((len - at) as usize).min(buf.len());
            child_io::read(io, file, from + at, &mut buf[..n]).await?;
            child_io::write(io, file, to + at, &buf[..n]).await?;
            at += n as u64;
        }
        Ok(())
    }
}

//! Shrinking a read-write qcow2 image (QEMU's `qcow2_co_truncate` to a smaller size:
//! `qcow2_cluster_discard` of everything past the new end with a full discard, then
//! `qcow2_shrink_l1_table`, then the header's size).
//!
//! Order, as QEMU's: the L2 entries past the new end are cleared (unallocated) in the cache,
//! the L1 entries of tables wholly past it are cleared, everything is written back and made
//! stable, and only then are the clusters they referenced freed (pending frees, applied after
//! the flush: `docs/ARCHITECTURE.md` rule 3); the header's size is written last. A crash in
//! between leaves the old size with the tail reading as unallocated, and at worst leaked
//! clusters, never a cluster referenced with a refcount too low.
//!
//! A table shared with an internal snapshot (its L1 entry without the COPIED flag) is not
//! changed: a table wholly past the end only loses this L1's reference; the one holding the
//! new end is copied first ([`Qcow2::l2_for_write`]). The L1 table keeps its size, as QEMU's.
//! Persistent bitmaps are not resized here, so an image with them is refused.

use crate::error::{Error, Result};
use crate::io::cache::Class;
use crate::io::{flush, Io};
use crate::node::NodeId;

use super::state::{field, PendingFree};
use super::tables::{decode_l1, decode_l2, l2_words, set_l2_words, Entry, GuestOffset, COPIED, L1_OFFSET, L2_OFFSET};
use super::Qcow2;

impl Qcow2 {
    /// Shrinks the virtual size to `new_size` bytes (a multiple of 512, below the current
    /// size), dropping every cluster past it. The caller has drained the node.
    pub(crate) async fn shrink(&self, io: &Io<'_, '_>, node: NodeId, new_size: u64) -> Result<()> {
        self.check_writable()?;
        if new_size >= self.size() || !new_size.is_multiple_of(512) {
            return Err(Error::BadOption { key: "size", why: "a shrink needs a multiple of 512 below the current size" });
        }
        if self.extensions().bitmap_directory.is_some() {
            return Err(Error::Unsupported("shrinking an image with persistent bitmaps"));
        }
        if self.snap_table.get().1 > 0 && self.header().version < 3 {
            return Err(Error::Unsupported("shrinking a version 2 image with internal snapshots"));
        }
        let file = Self::file(io, node)?;
        self.mark_dirty(io, file).await?;
        let cs = self.cluster_size();
        let per_table = self.l2_entries() * cs;
        let keep_tables = self.header().l1_entries_for(new_size);
        let first = new_size.next_multiple_of(cs);
        let old = self.size();
        // The table holding the new end keeps its first entries: clear the rest (copying the
        // table first if a snapshot shares it).
        let slice_len = self.slice_len();
        let partial = first < old && (first / per_table) < keep_tables && !first.is_multiple_of(per_table);
        let l1_of = |guest: u64| self.l1.get().start + guest / per_table * 8;
        if partial && decode_l1(io.meta.read_u64(io, file, l1_of(first), slice_len).await?, l1_of(first))?.is_some() {
            let table = self.l2_for_write(io, node, file, first).await?;
            let stop = ((first / per_table + 1) * per_table).min(old.next_multiple_of(cs));
            self.clear_entries(io, node, file, table, first, stop).await?;
        }
        // Tables wholly past the end: their entries (when this L1 owns them) and themselves.
        let l1_count = u64::from(self.l1_entries.get());
        for index in keep_tables..l1_count {
            let l1_at = self.l1.get().start + index * 8;
            let entry = io.meta.read_u64(io, file, l1_at, slice_len).await?;
            let Some(table) = decode_l1(entry, l1_at)? else { continue };
            if entry & COPIED != 0 {
                let start = index * per_table;
                self.clear_entries(io, node, file, table.0, start, start + per_table).await?;
            }
            self.check_meta_write(io, file, l1_at, Class::Table).await?;
            self.l1_changed();
            io.meta.write_u64(io, file, l1_at, slice_len, Class::Table, 0).await?;
            self.l1_changed();
            self.free_later(io, node, PendingFree { host: entry & L1_OFFSET, len: cs, discard: true }).await?;
        }
        // Stable, then the frees applied and their refcounts written (as a clean close does).
        self.flush_caches(io, node).await?;
        self.flush_caches(io, node).await?;
        self.write_header_u64(io, file, field::SIZE, new_size).await?;
        flush::flush_leaves(io, file).await?;
        self.size.set(new_size);
        io.node(node)?.size.set(self.size());
        io.shape_changed();
        Ok(())
    }

    /// Clears the entries of L2 table `table` (owned by this L1 alone) for guest clusters
    /// `[from, to)`, freeing what they referenced once the change is stable.
    async fn clear_entries(&self, io: &Io<'_, '_>, node: NodeId, file: NodeId, table: u64, from: u64, to: u64) -> Result<()> {
        let cs = self.cluster_size();
        let esize = self.l2_entry_size();
        let slice_len = self.slice_len() as u64;
        let extended = esize == 16;
        let mut c = from;
        while c < to {
            let at = table + ((c >> self.cluster_bits) % self.l2_entries()) * esize;
            let slice = at / slice_len * slice_len;
            let k = (at - slice) as usize;
            let (e, bitmap) = io.meta.with_slice(io, file, slice, slice_len as usize, |s| l2_words(s, k, extended)).await?;
            if e != 0 || bitmap != 0 {
                let free = match decode_l2(self, e, bitmap, GuestOffset(c), at)? {
                    Entry::Normal { host, .. } => Some((host.0, cs)),
                    Entry::Zero if e & L2_OFFSET != 0 => Some((e & L2_OFFSET, cs)),
                    Entry::Compressed { host, csize } => Some((host.0, csize)),
                    _ => None,
                };
                self.check_meta_write(io, file, at, Class::Table).await?;
                io.meta
                    .with_slice_mut(io, file, slice, slice_len as usize, Class::Table, |s| set_l2_words(s, k, extended, 0, 0))
                    .await?
                    .ok_or(Error::BadGraph("L2 entry across a slice"))?;
                match free {
                    // An external data file keeps its bytes; nothing is counted there.
                    Some(_) if self.data_file => {}
                    Some((host, len)) => self.free_later(io, node, PendingFree { host, len, discard: true }).await?,
                    None => {}
                }
            }
            c += cs;
        }
        Ok(())
    }
}

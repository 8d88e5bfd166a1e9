//! A walk over one L1 table's tree changing refcounts (QEMU's `qcow2_update_snapshot_refcount`):
//! every L2 table it names and every host cluster those tables reach get `addend` (+1, -1, or 0
//! to only look), compressed clusters once per host cluster their bytes touch; with
//! `fix_copied` the walked tables' OFLAG_COPIED bits are set where the count is exactly one and
//! cleared elsewhere (only ever asked for the active table, or for tables about to become it).
//!
//! Everything goes through the metadata cache: L1 and L2 slices are read there, flag changes
//! make their slices dirty (class `Table`) and refcount changes theirs (class `Refcount`), so
//! the write-back orders them (refcounts first). A cluster whose count drops to zero is
//! forgotten by the cache and may be allocated again. The caller holds the allocation lock and
//! has drained the node: nothing else changes these tables meanwhile.

use crate::error::{Error, Result};
use crate::io::cache::Class;
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::super::tables::{decode_l1, COMPRESSED, COPIED, L1_OFFSET, L2_OFFSET};
use super::super::validation::{self, ClusterRef};
use super::super::Qcow2;

/// Entries of one table slice, at most (a 4 KiB slice of 8-byte entries).
const SLICE_ENTRIES: usize = crate::io::cache::SLICE / 8;

/// Which entries of a slice get their COPIED bit set or cleared (one bit per 8-byte word).
#[derive(Default)]
struct FlagChanges {
    set: [u64; SLICE_ENTRIES / 64],
    clear: [u64; SLICE_ENTRIES / 64],
    any: bool,
}

impl FlagChanges {
    fn note(&mut self, word: usize, entry: u64, want: bool) {
        let (i, bit) = (word / 64, 1u64 << (word % 64));
        if want && entry & COPIED == 0 {
            if let Some(s) = self.set.get_mut(i) {
                *s |= bit;
                self.any = true;
            }
        } else if !want && entry & COPIED != 0 {
            if let Some(c) = self.clear.get_mut(i) {
                *c |= bit;
                self.any = true;
            }
        }
    }

    /// Applies the changes to a slice of big-endian words.
    fn apply(&self, s: &mut [u8]) {
        for (w, chunk) in s.chunks_exact_mut(8).enumerate() {
            let (i, bit) = (w / 64, 1u64 << (w % 64));
            let set = self.set.get(i).is_some_and(|m| m & bit != 0);
            let clear = self.clear.get(i).is_some_and(|m| m & bit != 0);
            if set || clear {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                let v = u64::from_be_bytes(b);
                let v = if set { v | COPIED } else { v & !COPIED };
                chunk.copy_from_slice(&v.to_be_bytes());
            }
        }
    }
}

impl Qcow2 {
    /// Adds `addend` to the refcount of every cluster the L1 table of `l1_entries` entries at
    /// `l1_start` reaches (its L2 tables and their clusters, not the L1 table itself), and with
    /// `fix_copied` makes the tables' COPIED bits match the new counts.
    pub(crate) async fn update_tree_refcounts(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        l1_start: u64,
        l1_entries: u32,
        addend: i64,
        fix_copied: bool,
    ) -> Result<()> {
        let slice_len = self.slice_len();
        let cs = self.cluster_size();
        for i in 0..u64::from(l1_entries) {
            let at = l1_start + i * 8;
            let entry = io.meta.read_u64(io, file, at, slice_len).await?;
            let Some(l2) = decode_l1(entry, at)? else {
                continue;
            };
            validation::cluster_ref(
                l2.0,
                cs,
                io.node(file)?.size(),
                &self.meta.get(),
                at,
                ClusterRef::L2Table,
            )?;
            let mut slice = 0;
            while slice < cs {
                self.update_l2_slice(io, file, l2.0 + slice, addend, fix_copied)
                    .await?;
                slice += slice_len as u64;
            }
            // The table's own count changes after its entries were walked: a table freed here
            // is forgotten by the cache, so it is not read again.
            let count = self
                .add_ref(io, file, l2.0 >> self.cluster_bits, addend)
                .await?;
            if fix_copied {
                let want = count == 1;
                if want != (entry & COPIED != 0) {
                    self.check_meta_write(io, file, at, Class::Table).await?;
                    let new = if want {
                        entry | COPIED
                    } else {
                        entry & !COPIED
                    };
                    io.meta
                        .write_u64(
                            io,
                            file,
                            at,
                            slice_len,
                            Class::Table,
                            new & (L1_OFFSET | COPIED),
                        )
                        .await?;
                    self.l1_changed();
                }
            }
        }
        Ok(())
    }

    /// The entries of one L2 slice (at `slice_at` of the file): refcounts changed, COPIED bits
    /// fixed if asked.
    async fn update_l2_slice(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        slice_at: u64,
        addend: i64,
        fix_copied: bool,
    ) -> Result<()> {
        let slice_len = self.slice_len();
        let mut words = [0u64; SLICE_ENTRIES];
        io.meta
            .with_slice(io, file, slice_at, slice_len, |s| {
                for (w, chunk) in words.iter_mut().zip(s.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    *w = u64::from_be_bytes(b);
                }
            })
            .await?;
        let step = if self.extended_l2 { 2 } else { 1 };
        let n = slice_len / 8;
        let mut flags = FlagChanges::default();
        let cs = self.cluster_size();
        for w in (0..n).step_by(step) {
            let entry = words.get(w).copied().unwrap_or(0);
            let at = slice_at + w as u64 * 8;
            if entry & COMPRESSED != 0 {
                let (host, csize) = self.compressed_extent(entry);
                if csize == 0 {
                    continue;
                }
                let (first, last) = (
                    host >> self.cluster_bits,
                    (host + csize - 1) >> self.cluster_bits,
                );
                for c in first..=last {
                    self.add_ref(io, file, c, addend).await?;
                }
                continue;
            }
            let host = entry & L2_OFFSET;
            if host == 0 {
                continue;
            }
            if !host.is_multiple_of(cs) {
                return Err(self
                    .signal_corruption(
                        io,
                        file,
                        "L2 entry: data cluster offset not cluster-aligned",
                        at,
                    )
                    .await);
            }
            let count = self
                .add_ref(io, file, host >> self.cluster_bits, addend)
                .await?;
            if fix_copied {
                flags.note(w, entry, count == 1);
            }
        }
        if flags.any {
            self.check_meta_write(io, file, slice_at, Class::Table)
                .await?;
            io.meta
                .with_slice_mut(io, file, slice_at, slice_len, Class::Table, |s| {
                    flags.apply(s)
                })
                .await?;
        }
        Ok(())
    }

    /// A compressed L2 entry's first host byte and length (QEMU's
    /// `qcow2_parse_compressed_l2_entry`).
    pub(crate) fn compressed_extent(&self, entry: u64) -> (u64, u64) {
        let bits = u32::from(self.cluster_bits) - 8;
        let shift = 62 - bits;
        let host = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & ((1u64 << bits) - 1)) + 1;
        (host, (sectors * 512).saturating_sub(host & 511))
    }

    /// Adds `addend` to cluster `c`'s refcount (0: only reads it); returns the new count. A
    /// cluster left unreferenced is discarded in the file, forgotten by the cache and searched
    /// for first.
    pub(crate) async fn add_ref(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        c: u64,
        addend: i64,
    ) -> Result<u64> {
        let cs = self.cluster_size();
        if addend == 0 {
            return self.refcount(io, file, c * cs).await;
        }
        // The last reference goes: discarded in the file first, as QEMU does for snapshot
        // frees (`pass-discard-snapshot`, on by default). Only references no stable structure
        // holds any more are dropped, and the discard completes before the count is 0 (so
        // before an allocation could take the cluster). Advisory: a failure changes nothing.
        if addend < 0 && self.refcount(io, file, c * cs).await? == 1 {
            let _ = child_io::discard(io, file, c * cs, cs).await;
        }
        let count = self.change_refcount(io, file, c, addend).await?;
        if count == 0 {
            io.meta.forget_range(file, c * cs, (c + 1) * cs);
            if c < self.w.free_hint.get() {
                self.w.free_hint.set(c);
            }
        }
        Ok(count)
    }

    /// Drops one reference from each cluster of `len` bytes at `host` (a table no longer used).
    pub(crate) async fn drop_clusters(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        host: u64,
        len: u64,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (first, last) = (
            host >> self.cluster_bits,
            (host + len - 1) >> self.cluster_bits,
        );
        for c in first..=last {
            self.add_ref(io, file, c, -1).await?;
        }
        Ok(())
    }
}

/// What every snapshot operation does first: refuses what QEMU refuses, marks a lazy-refcount
/// image dirty, writes the caches back (twice, as each operation did before this was shared;
/// whether once is enough is not settled), and takes the allocation lock for the whole
/// operation. Returns the image file and the lock.
pub(crate) async fn begin_op<'q>(q: &'q Qcow2, io: &Io<'_, '_>, node: NodeId) -> Result<(NodeId, super::super::state::AllocLock<'q>)> {
    check_can_snapshot(q)?;
    let file = Qcow2::file(io, node)?;
    q.mark_dirty(io, file).await?;
    q.flush_caches(io, node).await?;
    q.flush_caches(io, node).await?;
    Ok((file, q.alloc_lock().await))
}

/// Refuses what QEMU refuses for every snapshot operation.
fn check_can_snapshot(q: &Qcow2) -> Result<()> {
    if q.data_file {
        return Err(Error::Unsupported(
            "internal snapshots in an image with an external data file",
        ));
    }
    if q.snapshot.is_some() {
        return Err(Error::Unsupported(
            "snapshot operations on a node that has a snapshot open",
        ));
    }
    q.check_writable()
}

//! The lookup most reads of a warm image make, written out on its own: a request inside one
//! cluster of an image with standard L2 entries and no external data file, whose L1 entry is
//! the remembered one and whose L2 slice is cached. A plain data entry is judged here by the
//! same rules [`super::tables`] applies (no compressed, zero or reserved bits, an aligned host
//! cluster that starts inside the file and lies on no table); any other entry goes to the
//! general scan, with the word already read. The answers are the general lookup's (the unit
//! test compares the two on every kind of entry); only the instructions differ. The general
//! path's generality (data files, subcluster bitmaps, runs across clusters) made the lookup of a
//! guest-shaped 4 KiB read (`examples/io_cost`, callgrind) about 314 instructions; this one
//! takes about 255 (5065 in all against raw's 4810).

use crate::driver::Mapping;
use crate::io::Io;
use crate::node::{NodeId, Role};

use super::entry_rules;
use super::tables::{COMPRESSED, COPIED, L2_OFFSET, L2_RESERVED, ZERO};
use super::Qcow2;

impl Qcow2 {
    /// [`Qcow2::map_cached`] for `len` bytes at `offset` that lie inside one cluster of a plain
    /// image (the caller checked both); `None` if the answer is not in memory.
    #[inline]
    pub(super) fn map_cached_plain(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<Mapping> {
        let file = io.node(node).ok()?.child(Role::File)?;
        let cluster_bits = u32::from(self.cluster_bits);
        let l2_bits = self.l2_bits();
        let l1_index = offset >> (cluster_bits + l2_bits);
        if l1_index >= u64::from(self.l1_entries.get()) || self.l1_empty.get() {
            return Some(Mapping::Unallocated { len, kept: None });
        }
        let l2 = self.remembered_l2(self.l1.get().start + l1_index * 8)?;
        let l2_index = (offset >> cluster_bits) & ((1 << l2_bits) - 1);
        let (slice_start, skip, entry_at) = self.l2_slice(l2, l2_index);
        let word = io.meta.peek(file, slice_start, self.slice_len(), |s| {
            s.get(skip..skip + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
        })??;
        if word == 0 {
            // Unallocated (what an overlay's lookups mostly find): read from the backing file.
            return Some(Mapping::Unallocated { len, kept: None });
        }
        let eof = io.node(file).ok()?.size();
        let cluster_mask = (1u64 << cluster_bits) - 1;
        let host = word & L2_OFFSET;
        let at = host + (offset & cluster_mask);
        let plain_data = word & (COMPRESSED | L2_RESERVED | ZERO) == 0 && host != 0 && host & cluster_mask == 0;
        if plain_data && at < eof && entry_rules::host_cluster(host, self, entry_at).is_ok() {
            let writable = word & COPIED != 0 && self.snapshot.is_none();
            return Some(Mapping::Data { role: Role::File, offset: at, len: len.min(eof - at), writable });
        }
        // Every other entry, and every broken rule, as the general lookup judges them.
        self.judge_one(word, entry_at, offset, len, eof)
    }
}

#[cfg(test)]
mod tests;

//! Emptying an image: every cluster of the active L2 tables becomes unallocated, so the image
//! reads through to its backing file again (QEMU's `qcow2_make_empty` when it cannot rebuild
//! the image from scratch: `qcow2_cluster_discard` over the whole disk with `full_discard`).
//! What `img commit` does to the committed layer unless `-d`.
//!
//! The L2 tables stay (an entry may be set again later); the clusters the entries pointed at
//! are freed once the table changes are stable and discarded in the file (QEMU passes these
//! discards down: `QCOW2_DISCARD_SNAPSHOT`); in an external data file they are discarded at
//! once ([`super::data_file`]). A table shared with an internal snapshot is copied first, as a
//! write would copy it, so the snapshot keeps its clusters.

use crate::error::{Error, Result};
use crate::io::cache::Class;
use crate::io::Io;
use crate::node::NodeId;

use super::state::PendingFree;
use super::tables::{decode_l1, decode_l2, l2_words, set_l2_words, Entry, GuestOffset, L2_OFFSET};
use super::Qcow2;

/// Most entries of one table slice handled at once (a 4 KiB slice holds 512 entries).
const SLICE_ENTRIES: usize = 512;

impl Qcow2 {
    /// Makes every cluster of qcow2 node `node` unallocated (read-write, drained by the caller:
    /// no request in flight), then writes the change back and makes it stable.
    pub async fn make_empty(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
        self.check_writable()?;
        if self.snapshot.is_some() {
            return Err(Error::ReadOnly);
        }
        let file = Self::file(io, node)?;
        self.mark_dirty(io, file).await?;
        let cs = self.cluster_size();
        let span = self.l2_entries() * cs;
        let slice_len = self.slice_len();
        let esize = self.l2_entry_size() as usize;
        let per_slice = (slice_len / esize).min(SLICE_ENTRIES);
        let l1_entries = u64::from(self.l1_entries.get()).min(self.size().div_ceil(span));
        for l1_index in 0..l1_entries {
            let l1_at = self.l1.get().start + l1_index * 8;
            if decode_l1(io.meta.read_u64(io, file, l1_at, slice_len).await?, l1_at)?.is_none() {
                continue;
            }
            let first_guest = l1_index * span;
            let l2 = self.l2_for_write(io, node, file, first_guest).await?;
            let mut i = 0u64;
            while i < self.l2_entries() {
                let guest = first_guest + i * cs;
                if guest >= self.size() {
                    break;
                }
                let slice = l2 + i * esize as u64;
                // Decode the slice's entries first (refusing a broken one before anything
                // changes), then clear them in the cache, then queue the frees.
                // Entries past the disk's end are left as they are.
                let count = per_slice.min(((self.size() - guest).div_ceil(cs)) as usize);
                let mut frees: heapless::Vec<PendingFree, SLICE_ENTRIES> = heapless::Vec::new();
                let mut decoded: Result<()> = Ok(());
                io.meta
                    .with_slice(io, file, slice, slice_len, |s| {
                        for k in 0..count {
                            let g = guest + k as u64 * cs;
                            let (e, bitmap) = l2_words(s, k * esize, esize == 16);
                            let free = match decode_l2(self, e, bitmap, GuestOffset(g), slice + (k * esize) as u64) {
                                Ok(Entry::Normal { host, .. }) => Some(PendingFree { host: host.0, len: cs, discard: true }),
                                Ok(Entry::Zero) if e & L2_OFFSET != 0 => Some(PendingFree { host: e & L2_OFFSET, len: cs, discard: true }),
                                Ok(Entry::Compressed { host, csize }) => Some(PendingFree { host: host.0, len: csize, discard: true }),
                                Ok(_) => None,
                                Err(err) => {
                                    decoded = Err(err);
                                    break;
                                }
                            };
                            if let Some(f) = free {
                                let _ = frees.push(f); // at most one per entry
                            }
                        }
                    })
                    .await?;
                decoded?;
                self.check_meta_write(io, file, slice, Class::Table).await?;
                io.meta
                    .with_slice_mut(io, file, slice, slice_len, Class::Table, |s| {
                        for k in 0..count {
                            let _ = set_l2_words(s, k * esize, esize == 16, 0, 0);
                        }
                    })
                    .await?;
                for f in &frees {
                    if self.data_file {
                        self.discard_data(io, node, f.host, f.len).await?;
                    } else {
                        self.free_later(io, node, *f).await?;
                    }
                }
                i += per_slice as u64;
            }
        }
        // Twice: the first write-back applies the frees, which dirties refcounts.
        self.flush_caches(io, node).await?;
        self.flush_caches(io, node).await
    }
}

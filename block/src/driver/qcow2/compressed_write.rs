//! Compressed cluster writes (QEMU's `qcow2_co_pwritev_compressed_task`,
//! `qcow2_alloc_compressed_cluster_offset` and `qcow2_alloc_bytes`): the caller compresses one
//! guest cluster (deflate or zstd, as the image's `compression_type` says; `block/` has no
//! compressor) and hands the payload to [`Qcow2::write_compressed`], which stores it.
//!
//! QEMU's rules, kept here:
//! - only an unallocated cluster (or a zero cluster without a host cluster) takes compressed
//!   data; anything else is refused (QEMU: `-EIO`). A payload must be shorter than a cluster:
//!   a cluster that does not compress smaller is the caller's to write uncompressed;
//! - payloads are packed byte after byte into host clusters they share
//!   ([`super::state::WriteState::compressed_tail`], QEMU's `free_byte_offset`); a payload that
//!   does not fit in what is left continues into a newly allocated cluster when that one is
//!   contiguous, else starts there;
//! - every host cluster a payload touches gets one more reference (so a host cluster shared by
//!   `n` payloads has refcount `n`, what `qemu-img check` counts); a cluster whose refcount is
//!   at the width's maximum is not packed into further (1-bit refcounts: one payload a cluster);
//! - the descriptor stores the host byte offset and the 512-byte sectors the payload spans,
//!   less one; an extended L2 entry's bitmap is 0.
//!
//! Ordering is the allocating write's: refcounts change in the cache first (written back before
//! any table), the payload is written, then the L2 entry changes in the cache (written back
//! after a flush, rule 2). Images with an external data file take no compressed clusters.

use crate::error::{Error, Result};
use crate::io::cache::Class;
use crate::io::tracked::ReqKind;
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::tables::{l2_words, set_l2_words, COMPRESSED, L2_OFFSET};
use super::Qcow2;

impl Qcow2 {
    /// Stores `payload`, the compressed bytes of the guest cluster at `guest` (cluster-aligned),
    /// as a compressed cluster. `payload` is 1 to `cluster_size - 1` bytes. Refused
    /// ([`Error::Unsupported`]) where QEMU refuses: an allocated cluster, an external data
    /// file; a read-only or corrupt node fails as any write does.
    pub async fn write_compressed(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        guest: u64,
        payload: &[u8],
    ) -> Result<()> {
        let cs = self.cluster_size();
        let len = payload.len() as u64;
        if self.data_file {
            return Err(Error::Unsupported(
                "compressed writes to an image with an external data file",
            ));
        }
        if !guest.is_multiple_of(cs) {
            return Err(Error::Unsupported(
                "a compressed write covers one whole cluster",
            ));
        }
        if guest >= self.size() {
            return Err(Error::OutOfRange {
                offset: guest,
                len: cs,
                size: self.size(),
            });
        }
        if len == 0 || len >= cs {
            return Err(Error::Unsupported(
                "a compressed payload must be smaller than a cluster",
            ));
        }
        let _tracked = self.begin(io, node, ReqKind::Write, guest, cs).await?;
        let file = Self::file(io, node)?;
        let l2 = self.l2_for_write(io, node, file, guest).await?;
        let esize = self.l2_entry_size();
        let entry_at = l2 + ((guest >> self.cluster_bits) % self.l2_entries()) * esize;
        let slice_len = self.slice_len() as u64;
        let slice = entry_at / slice_len * slice_len;
        let skip = (entry_at - slice) as usize;
        let ext = self.extended_l2;
        let (old, _) = io
            .meta
            .with_slice(io, file, slice, slice_len as usize, |s| {
                l2_words(s, skip, ext)
            })
            .await?;
        if old & (COMPRESSED | L2_OFFSET) != 0 {
            return Err(Error::Unsupported(
                "compressed writes go only to unallocated clusters",
            ));
        }
        let host = {
            let _lock = self.alloc_lock().await;
            self.alloc_bytes(io, node, file, len).await?
        };
        child_io::write(io, file, host, payload).await?;
        let shift = 62 - (u32::from(self.cluster_bits) - 8);
        let sectors = ((host + len - 1) >> 9) - (host >> 9);
        if host >> shift != 0 {
            return Err(Error::Unsupported(
                "compressed cluster offset beyond what the descriptor holds",
            ));
        }
        let descriptor = COMPRESSED | (sectors << shift) | host;
        self.check_meta_write(io, file, entry_at, Class::Table)
            .await?;
        io.meta
            .with_slice_mut(io, file, slice, slice_len as usize, Class::Table, |s| {
                set_l2_words(s, skip, ext, descriptor, 0)
            })
            .await?
            .ok_or(Error::BadGraph("L2 entry across a slice"))
    }

    /// `len` bytes (less than a cluster) of host space for a compressed payload, packed after
    /// the previous one where it fits (QEMU's `qcow2_alloc_bytes`); every cluster the bytes
    /// touch counts one more reference. Caller holds the allocation lock.
    async fn alloc_bytes(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        file: NodeId,
        len: u64,
    ) -> Result<u64> {
        let cs = self.cluster_size();
        let max = if self.refcount_order >= 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.refcount_order)) - 1
        };
        let mut tail = self.w.compressed_tail.get();
        if tail != 0 {
            let count = self.refcount(io, file, tail).await?;
            if count == 0 || count >= max {
                tail = 0;
            }
        }
        let room = if tail == 0 { 0 } else { cs - tail % cs };
        let start = if tail != 0 && room >= len {
            self.change_refcount(io, file, tail >> self.cluster_bits, 1)
                .await?;
            tail
        } else {
            let (new, _) = self.alloc_clusters(io, node, file, 1, true).await?;
            if tail != 0 && tail.next_multiple_of(cs) == new {
                // Contiguous: the payload starts in the old cluster and ends in the new one.
                self.change_refcount(io, file, tail >> self.cluster_bits, 1)
                    .await?;
                tail
            } else {
                new
            }
        };
        let end = start + len;
        self.w
            .compressed_tail
            .set(if end.is_multiple_of(cs) { 0 } else { end });
        Ok(start)
    }
}

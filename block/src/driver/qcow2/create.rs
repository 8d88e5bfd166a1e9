//! Creating an empty qcow2 v3 image on a file node (`qemu-img create -f qcow2`).
//!
//! The layout is `qemu-img create`'s: the header cluster (header, extensions, backing file
//! name), the refcount table at cluster 1, the first refcount block at cluster 2, the L1 table
//! from cluster 3, and — only when the L1 table reaches past what the first refcount block
//! covers — further refcount blocks right after it, in the order QEMU allocates them
//! ([`Blocks`]). Every used cluster is one of these, so the
//! used clusters are exactly `0..used` and each has refcount 1. Like QEMU, the file ends at the
//! last L1 entry (or at the end of the refcount blocks). Where QEMU would grow its refcount
//! table mid-creation (tiny clusters, huge disks) the table is sized up front instead: a
//! different but equally valid layout.
//!
//! Stale bytes on a reused device do not matter: the header cluster, the refcount table and
//! blocks and the L1 table are written in full (zeros where empty), and everything past them is
//! free by its refcount. The header goes last, after a flush, so a cut-short creation leaves no
//! valid image behind. Writes go through a small on-stack buffer; clusters (up to 2 MiB) are
//! never held in memory.

use crate::error::Result;
use crate::io::Io;
use crate::node::NodeId;
use crate::io::{child_io, flush};

pub use super::header::Compression;

mod layout;

pub use layout::{header_bytes, set_refcount, Blocks, Layout};
pub(crate) use layout::{FEATURES, FEATURE_ENTRY};

/// Bytes written at once (the on-stack buffer).
const CHUNK: usize = 4096;

/// What to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions<'a> {
    /// Virtual size in bytes (rounded up to whole 512-byte sectors, as QEMU does).
    pub size: u64,
    /// log2 of the cluster size, 9..=21 (default 16: 64 KiB).
    pub cluster_bits: u32,
    /// 128-bit L2 entries with subcluster bitmaps (clusters of at least 16 KiB).
    pub extended_l2: bool,
    /// The lazy-refcounts compatible feature.
    pub lazy_refcounts: bool,
    /// log2 of the refcount width in bits, 0..=6 (default 4: 16 bits).
    pub refcount_order: u32,
    /// Backing file name, as stored (at most 1023 bytes).
    pub backing: Option<&'a str>,
    /// Backing file format (at most 15 bytes; needs `backing`).
    pub backing_fmt: Option<&'a str>,
    /// How compressed clusters are compressed (`compression_type`; zstd sets the
    /// incompatible feature bit, as QEMU does).
    pub compression: Compression,
}

impl<'a> CreateOptions<'a> {
    /// qemu-img's defaults for a disk of `size` bytes: 64 KiB clusters, 16-bit refcounts, no
    /// backing file, no extended L2, no lazy refcounts.
    pub const fn new(size: u64) -> Self {
        Self { size, cluster_bits: 16, extended_l2: false, lazy_refcounts: false, refcount_order: 4, backing: None, backing_fmt: None, compression: Compression::Zlib }
    }
}

impl Default for CreateOptions<'_> {
    fn default() -> Self {
        Self::new(0)
    }
}

/// Writes a fresh, empty qcow2 v3 image described by `opts` onto `file` (a leaf, or a raw
/// window over one), growing it first if it is a growable leaf; flushes when done.
pub async fn create(io: &Io<'_, '_>, file: NodeId, opts: &CreateOptions<'_>) -> Result<()> {
    let layout = Layout::new(opts)?;
    let mut buf = [0u8; CHUNK];
    // Check the header fits before touching the device.
    header_bytes(&layout, opts, &mut buf)?;
    let size = child_io::grow(io, file, layout.file_size)?;
    let cs = layout.cluster_size();
    // The header cluster first: stale magic is gone before anything else is written.
    write_zeros(io, file, 0, cs, &mut buf).await?;
    // The refcount table: block offsets, then zeros.
    let table_bytes = u64::from(layout.refcount_table_clusters) * cs;
    let mut at = 0;
    while at < table_bytes {
        let n = (table_bytes - at).min(CHUNK as u64) as usize;
        let piece = &mut buf[..n];
        piece.fill(0);
        let first = at / 8;
        for (index, cluster) in layout.blocks() {
            if let Some(entry) = index.checked_sub(first).and_then(|i| usize::try_from(i * 8).ok()).and_then(|i| piece.get_mut(i..i + 8)) {
                entry.copy_from_slice(&(cluster << layout.cluster_bits).to_be_bytes());
            }
        }
        child_io::write(io, file, layout.refcount_table_offset + at, piece).await?;
        at += n as u64;
    }
    // The refcount blocks: 1 for every used cluster.
    let order = layout.refcount_order;
    for (block, cluster) in layout.blocks() {
        let base = block * layout.per_block();
        let mut at = 0;
        while at < cs {
            let n = (cs - at).min(CHUNK as u64) as usize;
            let piece = &mut buf[..n];
            piece.fill(0);
            let first = base + ((at * 8) >> order);
            let in_piece = ((n as u64) * 8) >> order;
            for i in 0..layout.used_clusters.saturating_sub(first).min(in_piece) {
                set_refcount(piece, order, i, 1);
            }
            child_io::write(io, file, (cluster << layout.cluster_bits) + at, piece).await?;
            at += n as u64;
        }
    }
    // The L1 table, empty; its last cluster zeroed in full where the file already holds it.
    if layout.l1_entries > 0 {
        let bytes = u64::from(layout.l1_entries) * 8;
        let full = bytes.next_multiple_of(cs);
        let len = if layout.l1_offset + full <= size { full } else { bytes };
        write_zeros(io, file, layout.l1_offset, len, &mut buf).await?;
    }
    flush::flush_leaves(io, file).await?;
    let used = header_bytes(&layout, opts, &mut buf)?;
    let len = (used.next_multiple_of(512) as u64).min(cs) as usize;
    child_io::write(io, file, 0, &buf[..len]).await?;
    flush::flush_leaves(io, file).await
}

/// Writes `len` zero bytes at `offset` of `node`, a buffer at a time.
async fn write_zeros(io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64, buf: &mut [u8; CHUNK]) -> Result<()> {
    buf.fill(0);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u64) as usize;
        child_io::write(io, node, offset + at, &buf[..n]).await?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Zero clusters made into what version 2 can express (QEMU's `qcow2_expand_zero_clusters`,
//! `block/qcow2-cluster.c`), on the image file alone, every L1 table (the active one, then each
//! snapshot's) in turn:
//! - a zero cluster with no host cluster, in an image without a backing file: unallocated (the
//!   entry cleared; it reads as zeros either way);
//! - one with no host cluster over a backing file: a new cluster of zeros (appended to the
//!   file, its refcount the L2 table's, as QEMU gives a shared table's clusters);
//! - a preallocated zero cluster: its cluster written with zeros, the flag dropped — unless
//!   the cluster has more references than the L2 table naming it (a snapshot's other table
//!   holds data there): then it is treated as a zero cluster without a host cluster, and its
//!   refcount drops by the table's once the new entry is stable. QEMU writes the zeros in place
//!   there, changing what the snapshot reads (`qemu-img convert -l` shows it); Strata keeps
//!   every snapshot's contents.
//!
//! Crash order: a new cluster's refcount and every cluster's zeros are flushed before the L2
//! chunk naming them is written, so each cut shows each entry as zero flag or zeroed data (a
//! cut after the refcount and before the entry leaks the cluster). Compressed entries and
//! ordinary ones are left alone; extended L2 images never get here (version 2 cannot hold them).

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::check::layout::{be64, put_be64, Layout};
use super::super::check::stored::{Lookup, Stored};
use super::super::entry_bits::{COMPRESSED, COPIED, L1_OFFSET, L2_OFFSET, ZERO};
use super::super::snapshots::Walk;

/// Bytes of the L1 piece read at once.
const L1_PIECE: usize = 512;

/// Most entries in an L2 chunk (4 KiB of 8-byte entries).
const MAX_DROPS: usize = 512;

/// Clusters whose refcount drops by the L2 table's once its chunk is written.
struct Drops {
    clusters: [u64; MAX_DROPS],
    len: usize,
}

/// The allocator: clusters appended past the end of the file.
struct Tail {
    next: u64,
}

/// Expands the zero clusters of every L1 table of the image in `file`. `backed`: the image has
/// a backing file. `l2` is a chunk-sized scratch buffer; `stored` reads and sets refcounts.
pub(crate) async fn expand(io: &Io<'_, '_>, file: NodeId, lay: &Layout, backed: bool, stored: &mut Stored<'_>, l2: &mut [u8]) -> Result<()> {
    let mut tail = Tail { next: lay.file_clusters() };
    let h = &lay.header;
    expand_l1(io, file, lay, h.l1_table_offset, h.l1_size, backed, stored, l2, &mut tail).await?;
    let mut walk = Walk::new(h);
    while let Some(s) = walk.next(io, file).await? {
        expand_l1(io, file, lay, s.l1_table_offset, s.l1_size, backed, stored, l2, &mut tail).await?;
    }
    flush::flush_leaves(io, file).await
}

/// The stored refcount of cluster `k`.
async fn refcount(io: &Io<'_, '_>, file: NodeId, lay: &Layout, stored: &mut Stored<'_>, k: u64) -> Result<u64> {
    match stored.get(io, file, lay, k).await? {
        Lookup::Count(n) => Ok(n),
        Lookup::Unreadable => Err(Error::Corrupt { what: "refcount table entry: refcount block offset not cluster-aligned", offset: lay.header.refcount_table_offset }),
    }
}

#[allow(clippy::too_many_arguments)] // reason: one table of many, the allocator and two buffers
async fn expand_l1(io: &Io<'_, '_>, file: NodeId, lay: &Layout, l1: u64, entries: u32, backed: bool, stored: &mut Stored<'_>, l2: &mut [u8], tail: &mut Tail) -> Result<()> {
    let chunk = lay.chunk().min(l2.len());
    let mut piece = [0u8; L1_PIECE];
    let bytes = u64::from(entries) * 8;
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(L1_PIECE as u64) as usize;
        child_io::read(io, file, l1 + at, &mut piece[..n]).await?;
        for i in 0..n / 8 {
            let l2_offset = be64(&piece, i * 8) & L1_OFFSET;
            if l2_offset == 0 {
                continue;
            }
            if l2_offset & (lay.cs - 1) != 0 {
                return Err(Error::Corrupt { what: "L1 entry: L2 table offset not cluster-aligned", offset: l1 + at + i as u64 * 8 });
            }
            let l2_refcount = refcount(io, file, lay, stored, l2_offset >> lay.cluster_bits).await?;
            let mut pos = 0;
            while pos < lay.cs {
                let buf = &mut l2[..chunk];
                child_io::read(io, file, l2_offset + pos, buf).await?;
                let mut drop = Drops { clusters: [0; MAX_DROPS], len: 0 };
                if expand_chunk(io, file, lay, buf, l2_refcount, backed, stored, tail, &mut drop).await? {
                    // Refcounts and zeros stable before the entries that rely on them.
                    flush::flush_leaves(io, file).await?;
                    child_io::write(io, file, l2_offset + pos, &l2[..chunk]).await?;
                }
                if drop.len > 0 {
                    // References dropped only once the entries that dropped them are stable.
                    flush::flush_leaves(io, file).await?;
                    for &k in &drop.clusters[..drop.len] {
                        let n = refcount(io, file, lay, stored, k).await?;
                        stored.set(io, file, lay, k, n.saturating_sub(l2_refcount.max(1))).await?;
                    }
                    stored.write_back(io, file, lay).await?;
                }
                pos += chunk as u64;
            }
        }
        at += n as u64;
    }
    Ok(())
}

/// Rewrites the zero entries of one L2 chunk; true if any changed.
#[allow(clippy::too_many_arguments)] // reason: the chunk, its table's refcount, the allocator
async fn expand_chunk(io: &Io<'_, '_>, file: NodeId, lay: &Layout, buf: &mut [u8], l2_refcount: u64, backed: bool, stored: &mut Stored<'_>, tail: &mut Tail, drop: &mut Drops) -> Result<bool> {
    let mut changed = false;
    for j in 0..buf.len() / 8 {
        let e = be64(buf, j * 8);
        if e & COMPRESSED != 0 || e & ZERO == 0 {
            continue;
        }
        let mut offset = e & L2_OFFSET;
        if offset & (lay.cs - 1) != 0 {
            return Err(Error::Corrupt { what: "L2 entry: preallocated zero cluster offset not cluster-aligned", offset });
        }
        let mut shared = false;
        if offset != 0 {
            let n = refcount(io, file, lay, stored, offset >> lay.cluster_bits).await?;
            if n > l2_refcount.max(1) {
                // Others hold data in it: this table lets go of it instead.
                let slot = drop.clusters.get_mut(drop.len).ok_or(Error::NoSpace { what: "zero expansion: references to drop" })?;
                *slot = offset >> lay.cluster_bits;
                drop.len += 1;
                offset = 0;
            } else {
                shared = n != 1;
            }
        }
        if offset == 0 {
            if !backed {
                put_be64(buf, j * 8, 0);
                changed = true;
                continue;
            }
            offset = allocate(io, file, lay, stored, tail, l2_refcount.max(1)).await?;
            shared = l2_refcount > 1;
        }
        child_io::write_zeroes(io, file, offset, lay.cs).await?;
        put_be64(buf, j * 8, if shared { offset } else { offset | COPIED });
        changed = true;
    }
    if changed {
        stored.write_back(io, file, lay).await?;
    }
    Ok(changed)
}

/// A free cluster past the end of the file with refcount `n` (set in the stored refcounts,
/// written back by the caller before the entry naming it).
async fn allocate(io: &Io<'_, '_>, file: NodeId, lay: &Layout, stored: &mut Stored<'_>, tail: &mut Tail, n: u64) -> Result<u64> {
    loop {
        let k = tail.next;
        tail.next += 1;
        if refcount(io, file, lay, stored, k).await? != 0 {
            continue;
        }
        child_io::grow(io, file, (k + 1) << lay.cluster_bits)?;
        if !stored.set(io, file, lay, k, n).await? {
            return Err(Error::Unsupported("compat=0.10: zero clusters to expand past the last refcount block (a new refcount block is not made)"));
        }
        return Ok(k << lay.cluster_bits);
    }
}

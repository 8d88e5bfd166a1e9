//! A new refcount structure built from the recount (QEMU's `rebuild_refcount_structure`, run
//! by `-r all` when refcount blocks are broken or a referenced cluster has refcount 0), in the
//! check's window of memory.
//!
//! The new refcount blocks and table go past the end of everything referenced (QEMU fills
//! holes first; past the last reference nothing the old structure describes is touched, and
//! the counts of every window below are the recount's as it stands). That is inside the file
//! when the file is longer (a guest's disk with its headroom, which cannot grow). Their own clusters are
//! counted in the blocks: the number of blocks and table clusters is the fixed point of
//! "cover the old end plus the new structure". One refcount block is written for every range
//! of clusters up to the new end, window by window as each window is recounted; then the
//! table; a flush; then the header's `refcount_table_offset` and `refcount_table_clusters` in
//! one 12-byte write, and a flush. A power cut before that write leaves the image as it was
//! (the old structure in force, the file perhaps longer), so a second `check -r all` repairs
//! it; after it, the new structure is complete and the old one is leaked, which the check's
//! leak repair then frees (as QEMU's follow-up compare does).

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::validation;
use super::layout::{put_be64, Layout};
use super::walk::Pass;
use super::window::Window;
use super::{CheckResult, Finding};

/// The header's `refcount_table_offset` (8 bytes) followed by `refcount_table_clusters` (4).
const REFTABLE_FIELDS: u64 = 48;

/// Where the new structure goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// First cluster of the new structure: its refcount blocks, then its table.
    pub(crate) start: u64,
    /// Refcount blocks (one per range of clusters up to the new end).
    pub(crate) blocks: u64,
    /// Refcount table clusters.
    pub(crate) table_clusters: u64,
}

impl Plan {
    /// The structure for an image whose clusters below `start` may be in use, with
    /// `1 << refblock_bits` entries per block and `cs`-byte clusters: the smallest numbers of
    /// blocks and table clusters that cover `start` plus themselves.
    pub(crate) fn new(start: u64, refblock_bits: u32, cs: u64) -> Result<Plan> {
        let too_big = Error::NoSpace {
            what: "refcount table of the rebuilt structure (QEMU's limit: 8 MiB)",
        };
        let (mut blocks, mut table) = (0u64, 1u64);
        // Each round covers at least one more block's range; a few rounds settle it.
        for _ in 0..64 {
            let end = start.checked_add(blocks + table).ok_or(too_big)?;
            let b = end.div_ceil(1u64 << refblock_bits);
            let t = (b * 8).div_ceil(cs).max(1);
            if (b, t) == (blocks, table) {
                if t * cs > validation::MAX_REFTABLE_BYTES || t > u64::from(u32::MAX) {
                    return Err(too_big);
                }
                return Ok(Plan {
                    start,
                    blocks,
                    table_clusters: table,
                });
            }
            (blocks, table) = (b, t);
        }
        Err(too_big)
    }

    /// One past the last cluster of the new structure.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.blocks + self.table_clusters
    }

    /// The first cluster of the table.
    pub(crate) fn table(&self) -> u64 {
        self.start + self.blocks
    }
}

/// Where the counts of a new refcount structure come from, one window at a time.
pub(crate) trait Fill {
    /// Sets the counts of `win`'s clusters (the window starts zeroed; the new structure's own
    /// clusters are set to 1 after this). `a` and `b` are scratch buffers of a chunk each.
    async fn fill(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        win: &mut Window<'_>,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<()>;
}

/// The recount of the check's reference walk (one walk per window below the new structure).
struct Recount<'l> {
    lay: &'l Layout,
    start: u64,
    passes: u32,
}

impl Fill for Recount<'_> {
    async fn fill(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        win: &mut Window<'_>,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<()> {
        if win.start >= self.start {
            return Ok(());
        }
        let mut res = CheckResult::default();
        let mut sink = |_: &Finding| {};
        let mut pass = Pass {
            lay: self.lay,
            win,
            res: &mut res,
            sink: &mut sink,
            global: false,
            local: false,
            clusters_end: 0,
            broken_refblocks: false,
            fix_errors: false,
            grown: 0,
        };
        pass.run(io, file, a, b).await?;
        self.passes += 1;
        Ok(())
    }
}

/// Writes a new refcount structure for the image in `file` past cluster `start` (the end of
/// the file and of every reference) and switches the header to it. `mem` holds the window;
/// `a` and `b` are the walk's scratch buffers. Returns the reference walks made.
pub(crate) async fn rebuild(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    start: u64,
    mem: &mut [u8],
    a: &mut [u8],
    b: &mut [u8],
) -> Result<u32> {
    let plan = Plan::new(start, lay.refblock_bits, lay.cs)?;
    let mut recount = Recount {
        lay,
        start,
        passes: 0,
    };
    write_structure(
        io,
        file,
        &plan,
        lay.refcount_order,
        lay.cs,
        &mut recount,
        mem,
        a,
        b,
    )
    .await?;
    let mut fields = [0u8; 12];
    put_be64(&mut fields, 0, plan.table() * lay.cs);
    fields[8..].copy_from_slice(&(plan.table_clusters as u32).to_be_bytes());
    child_io::write(io, file, REFTABLE_FIELDS, &fields).await?;
    flush::flush_leaves(io, file).await?;
    Ok(recount.passes)
}

/// Writes the refcount blocks and table of `plan` with entries of `1 << order` bits, the
/// counts window by window from `fill` (the plan's own clusters counted 1), and flushes. The
/// header is the caller's to switch. `mem` holds the window; `a` and `b` are scratch buffers
/// of a chunk (at most [`super::SCRATCH`] bytes, or a cluster if clusters are smaller).
#[allow(clippy::too_many_arguments)] // reason: the plan, its geometry, the source, three buffers
pub(crate) async fn write_structure<F: Fill>(
    io: &Io<'_, '_>,
    file: NodeId,
    plan: &Plan,
    order: u32,
    cs: u64,
    fill: &mut F,
    mem: &mut [u8],
    a: &mut [u8],
    b: &mut [u8],
) -> Result<()> {
    let refblock_bits = cs.trailing_zeros() + 3 - order;
    let per_block = 1u64 << refblock_bits;
    // Windows tile the blocks: whole blocks, or a power of two within one.
    let cap = Window::capacity(mem.len(), order);
    let len = if cap >= per_block {
        cap / per_block * per_block
    } else if cap == 0 {
        0
    } else {
        1u64 << (63 - cap.leading_zeros())
    };
    if len == 0 {
        return Err(Error::NoSpace {
            what: "check budget (a window for the rebuild)",
        });
    }
    child_io::grow(io, file, plan.end() * cs)?;
    let covered = plan.blocks * per_block;
    let mut at = 0;
    while at < covered {
        let mut win = Window::new(mem, order, at, len);
        fill.fill(io, file, &mut win, a, b).await?;
        for k in plan.start.max(at)..plan.end().min(at + len) {
            win.set(k, 1);
        }
        // The window's bytes are the entries of its blocks (or of a part of one), in order.
        let bytes = win.bytes();
        let end = (at + len).min(covered);
        let mut k = at;
        while k < end {
            let n = (per_block - k % per_block).min(end - k);
            let from = (((k - at) << order) / 8) as usize;
            let to = (((k - at + n) << order) / 8) as usize;
            let block = plan.start + k / per_block;
            let within = ((k % per_block) << order) / 8;
            let piece = bytes.get(from..to).ok_or(Error::NoSpace {
                what: "check budget (a window for the rebuild)",
            })?;
            child_io::write(io, file, block * cs + within, piece).await?;
            k += n;
        }
        at += len;
    }
    // The table, a chunk at a time.
    let chunk = (cs as usize).min(super::SCRATCH).min(a.len()) as u64;
    let table_bytes = plan.table_clusters * cs;
    let mut pos = 0;
    while pos < table_bytes {
        let n = (table_bytes - pos).min(chunk) as usize;
        for i in 0..n / 8 {
            let index = pos / 8 + i as u64;
            let entry = if index < plan.blocks {
                (plan.start + index) * cs
            } else {
                0
            };
            put_be64(a, i * 8, entry);
        }
        child_io::write(io, file, plan.table() * cs + pos, &a[..n]).await?;
        pos += n as u64;
    }
    flush::flush_leaves(io, file).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Plan;

    #[test]
    fn the_structure_covers_itself() {
        for &(start, bits, cs) in &[
            (0u64, 15u32, 65536u64),
            (40, 15, 65536),
            (32767, 15, 65536),
            (32766, 15, 65536),
            (1000, 6, 512),
            (1 << 20, 6, 512),
        ] {
            let p = Plan::new(start, bits, cs).unwrap();
            let per = 1u64 << bits;
            assert!(p.blocks * per >= p.end(), "{p:?}");
            assert!(p.table_clusters * cs / 8 >= p.blocks, "{p:?}");
            // Minimal: one block fewer would not cover the structure.
            assert!((p.blocks - 1) * per < p.end(), "{p:?}");
        }
    }
}

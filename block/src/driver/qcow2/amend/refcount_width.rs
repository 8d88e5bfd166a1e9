//! Changing the refcount width of a qcow2 image (QEMU's `qcow2_change_refcount_order`,
//! `block/qcow2-refcount.c`), on the image file alone (no qcow2 node open), heap-free.
//!
//! QEMU walks the old refcount table three times: to allocate the new refcount blocks and table
//! in free clusters (counted in the old structure), to write the new blocks, then it writes the
//! new table, switches the header, and frees the old structure. Strata makes the same switch
//! with the check's structure writer ([`super::super::check::rebuild::write_structure`]), which
//! writes a structure window by window of a caller-given budget:
//!
//! 1. one walk over the old structure: every stored refcount must fit the new width (else
//!    QEMU's refusal, before anything is written), and the last cluster in use is found;
//! 2. the new blocks and table go past that cluster and past the end of the file: clusters
//!    the old structure counts as free, so until the header names them they are unused tail;
//!    each window of new counts is the stored counts copied, the new structure's own clusters
//!    1, and the old structure's refcount table and blocks 0 (they are garbage the moment the
//!    header stops naming them);
//! 3. a flush; the header's refcount table offset, table clusters and refcount order in one
//!    write of its first 100 bytes; a flush.
//!
//! A cut before the header write leaves the old image (its file longer); after it, the new
//! one, complete and with nothing leaked. QEMU frees the old structure after the switch
//! instead (a cut in between leaks it).

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::check::layout::{be64, Layout};
use super::super::check::rebuild::{write_structure, Fill, Plan};
use super::super::check::stored::{Lookup, Stored};
use super::super::check::window::Window;
use super::super::check::{repair_if_dirty, SCRATCH};
use super::super::header::incompat;

/// Refcount table entry bits that are the block's offset.
const RT_OFFSET: u64 = !0x1ff;
/// Header bytes rewritten by the switch: through `refcount_order` (bytes 96..100).
const SWITCH_BYTES: usize = 100;

/// What a width change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WidthChange {
    /// The image has the new width (or had it already).
    Changed,
    /// Refused, nothing written: the cluster at byte `offset` has a refcount the new width
    /// cannot hold (QEMU: "Cannot decrease refcount entry width to N bits: Cluster at offset
    /// %#x has a refcount of R").
    TooNarrow {
        /// File offset of the first such cluster.
        offset: u64,
        /// Its refcount.
        refcount: u64,
    },
}

/// Changes the refcount width of the version 3 qcow2 image in `file` to `1 << order` bits,
/// in `budget` bytes of memory (at least [`super::super::check::MIN_BUDGET`]). A dirty image
/// is repaired first (as a read-write open does); a corrupt one, or one whose stored
/// refcounts cannot be read, is refused.
pub async fn change_refcount_width(
    io: &Io<'_, '_>,
    file: NodeId,
    order: u32,
    budget: &mut [u8],
) -> Result<WidthChange> {
    if order > 6 {
        return Err(Error::Unsupported("refcount widths above 64 bits"));
    }
    repair_if_dirty(io, file).await?;
    let old = Layout::read(io, file).await?;
    if old.header.version < 3 {
        return Err(Error::Unsupported(
            "refcount widths other than 16 bits need compat=1.1",
        ));
    }
    if old.header.incompatible & (incompat::CORRUPT | incompat::DIRTY) != 0 {
        return Err(Error::BadImage {
            what: "image is marked corrupt",
        });
    }
    if old.refcount_order == order {
        return Ok(WidthChange::Changed);
    }
    if budget.len() < super::super::check::MIN_BUDGET {
        return Err(Error::NoSpace {
            what: "amend budget (at least 16 KiB)",
        });
    }
    let (a, rest) = budget.split_at_mut(SCRATCH);
    let (b, rest) = rest.split_at_mut(SCRATCH);
    let (c, win) = rest.split_at_mut(SCRATCH);

    // 1. Every stored count fits, and where the last one in use is.
    let mut stored = Stored::new(c);
    let used_end = match survey(io, file, &old, order, &mut stored).await? {
        Survey::Fits { used_end } => used_end,
        Survey::TooNarrow { cluster, refcount } => {
            return Ok(WidthChange::TooNarrow {
                offset: cluster << old.cluster_bits,
                refcount,
            })
        }
    };

    // 2. The new structure past everything in use and past the end of the file.
    let start = used_end.max(old.file_clusters());
    let refblock_bits = old.cluster_bits + 3 - order;
    let plan = Plan::new(start, refblock_bits, old.cs)?;
    stored.reset();
    let mut copy = Copy {
        old: &old,
        stored,
    };
    write_structure(io, file, &plan, order, old.cs, &mut copy, win, a, b).await?;

    // 3. The switch: table offset, table clusters and width in one write.
    let mut head = [0u8; SWITCH_BYTES];
    child_io::read(io, file, 0, &mut head).await?;
    head[48..56].copy_from_slice(&(plan.table() * old.cs).to_be_bytes());
    head[56..60].copy_from_slice(&(plan.table_clusters as u32).to_be_bytes());
    head[96..100].copy_from_slice(&order.to_be_bytes());
    child_io::write(io, file, 0, &head).await?;
    flush::flush_leaves(io, file).await?;
    Ok(WidthChange::Changed)
}

/// What the walk over the old structure found.
enum Survey {
    /// Every count fits; clusters `used_end..` have refcount 0.
    Fits { used_end: u64 },
    /// The first cluster whose count does not fit.
    TooNarrow { cluster: u64, refcount: u64 },
}

/// QEMU's first `walk_over_reftable`: every entry of every refcount block, in cluster order.
async fn survey(
    io: &Io<'_, '_>,
    file: NodeId,
    old: &Layout,
    order: u32,
    stored: &mut Stored<'_>,
) -> Result<Survey> {
    let bits = 1u64 << order;
    let per_block = 1u64 << old.refblock_bits;
    let mut used_end = 0;
    let mut entry = [0u8; 8];
    for index in 0..old.rt_entries {
        child_io::read_upto(
            io,
            file,
            old.header.refcount_table_offset + index * 8,
            &mut entry,
        )
        .await?;
        if be64(&entry, 0) & RT_OFFSET == 0 {
            continue;
        }
        for k in index * per_block..(index + 1) * per_block {
            let n = match stored.get(io, file, old, k).await? {
                Lookup::Count(n) => n,
                Lookup::Unreadable => {
                    return Err(Error::Corrupt {
                        what: "refcount table entry: refcount block offset not cluster-aligned",
                        offset: old.header.refcount_table_offset + index * 8,
                    })
                }
            };
            if n == 0 {
                continue;
            }
            if bits < 64 && n >> bits != 0 {
                return Ok(Survey::TooNarrow {
                    cluster: k,
                    refcount: n,
                });
            }
            used_end = k + 1;
        }
    }
    Ok(Survey::Fits { used_end })
}

/// The stored counts copied into the new width, the old structure's clusters freed.
struct Copy<'l, 'b> {
    old: &'l Layout,
    stored: Stored<'b>,
}

impl Fill for Copy<'_, '_> {
    async fn fill(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        win: &mut Window<'_>,
        a: &mut [u8],
        _b: &mut [u8],
    ) -> Result<()> {
        let old = self.old;
        let covered = old.rt_entries << old.refblock_bits;
        for k in win.start..win.end().min(covered) {
            if let Lookup::Count(n) = self.stored.get(io, file, old, k).await? {
                win.set(k, n);
            }
        }
        // The old table and blocks count nothing once the header no longer names them.
        let table = old.header.refcount_table_offset >> old.cluster_bits;
        for k in table..table + u64::from(old.header.refcount_table_clusters) {
            win.set(k, 0);
        }
        let chunk = old.chunk();
        let table_bytes = old.rt_entries * 8;
        let mut pos = 0;
        while pos < table_bytes {
            let n = (table_bytes - pos).min(chunk as u64) as usize;
            let piece = a.get_mut(..n).ok_or(Error::NoSpace {
                what: "amend budget",
            })?;
            child_io::read_upto(io, file, old.header.refcount_table_offset + pos, piece).await?;
            for i in 0..n / 8 {
                let block = be64(piece, i * 8) & RT_OFFSET;
                if block != 0 {
                    win.set(block >> old.cluster_bits, 0);
                }
            }
            pos += n as u64;
        }
        Ok(())
    }
}

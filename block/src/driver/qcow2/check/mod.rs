//! `qemu-img check` for qcow2, heap-free (QEMU's `qcow2_check_refcounts` and
//! `check_oflag_copied`, `block/qcow2-refcount.c`; bitmaps as `qcow2_check_bitmaps_refcounts`).
//!
//! The refcount of every host cluster is recomputed from every reference ([`walk`]) and
//! compared with the stored one ([`compare`]); then the COPIED flags are checked against the
//! stored refcounts ([`copied`]). Memory is the caller's: a budget of bytes, of which three
//! 4 KiB scratch buffers read tables and the rest is a [`window`] of recomputed refcounts at
//! the image's refcount width. When the file has more clusters than the window holds, the
//! whole reference walk is repeated once per window (`CheckResult::passes`); messages that do
//! not depend on the window are reported in the first pass only, so the report is the same for
//! any budget (only the order of per-cluster lines can differ).
//!
//! Repair follows QEMU's modes ([`Mode`]: `-r leaks`, `-r all`): leaked refcounts lowered,
//! too-low ones raised, both to the recomputed count, so no entry is ever written below its
//! references (a power cut leaves leaks at worst); refcounts are flushed before COPIED flags
//! are fixed, and the dirty and corrupt bits are cleared last, only on a clean result. Where
//! QEMU rebuilds the refcount structure: a referenced cluster with stored refcount 0 is raised
//! in place when a refcount block holds its entry; broken refcount blocks (unaligned, outside
//! the file, shared) or a missing block are refused ([`Finding::RebuildUnsupported`]). The
//! snapshot table is not repaired. Like qemu-img, a caller re-checks after a repair to report
//! the image as it now is.
//!
//! Problems go to a caller's [`Sink`] as [`Finding`]s, whose `Display` is QEMU's message.

mod compare;
mod copied;
mod finding;
mod layout;
mod stored;
mod walk;
mod window;

pub use finding::Finding;

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::header::incompat;
use compare::Seen;
use layout::Layout;
use stored::Stored;
use walk::Pass;
use window::Window;

/// Bytes of each scratch buffer (a table chunk).
pub const SCRATCH: usize = 4096;
/// The smallest budget: three scratch buffers and a window of at least 512 clusters.
pub const MIN_BUDGET: usize = 3 * SCRATCH + 4096;

/// What a check may repair (QEMU's `BdrvCheckMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// Lower leaked refcounts (`BDRV_FIX_LEAKS`).
    pub fix_leaks: bool,
    /// Raise too-low refcounts, fix COPIED flags (`BDRV_FIX_ERRORS`).
    pub fix_errors: bool,
}

impl Mode {
    /// Check only.
    pub const CHECK: Mode = Mode {
        fix_leaks: false,
        fix_errors: false,
    };
    /// `-r leaks`.
    pub const LEAKS: Mode = Mode {
        fix_leaks: true,
        fix_errors: false,
    };
    /// `-r all`.
    pub const ALL: Mode = Mode {
        fix_leaks: true,
        fix_errors: true,
    };

    /// True if anything may be written.
    pub fn repairs(&self) -> bool {
        self.fix_leaks || self.fix_errors
    }
}

/// QEMU's `BlockFragInfo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragInfo {
    /// Clusters of the virtual disk.
    pub total_clusters: u64,
    /// Clusters the active L2 tables map (compressed ones included).
    pub allocated_clusters: u64,
    /// Allocated clusters not following their predecessor in the same L2 table on the host.
    pub fragmented_clusters: u64,
    /// Compressed clusters.
    pub compressed_clusters: u64,
}

/// QEMU's `BdrvCheckResult`, plus the passes the budget needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckResult {
    /// Problems that can corrupt data (refcounts too low, bad entries, COPIED flags).
    pub corruptions: u64,
    /// Clusters whose refcount is higher than their references.
    pub leaks: u64,
    /// Problems the check met itself (unreadable refcounts).
    pub check_errors: u64,
    /// Corruptions repaired.
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    pub leaks_fixed: u64,
    /// One past the last cluster in use (stored or referenced).
    pub image_end_offset: u64,
    /// Allocation figures of the active tables.
    pub frag: FragInfo,
    /// Reference walks made (one per window, twice as many with a repair).
    pub passes: u32,
}

impl CheckResult {
    fn add_counts(&mut self, o: &CheckResult) {
        self.corruptions += o.corruptions;
        self.leaks += o.leaks;
        self.check_errors += o.check_errors;
        self.corruptions_fixed += o.corruptions_fixed;
        self.leaks_fixed += o.leaks_fixed;
    }
}

/// Where findings go.
pub trait Sink {
    /// One finding, in the order QEMU would print it (per window, see the module doc).
    fn finding(&mut self, f: &Finding);
}

impl<F: FnMut(&Finding)> Sink for F {
    fn finding(&mut self, f: &Finding) {
        self(f)
    }
}

/// Clusters a window in `budget` bytes holds for an image with `refcount_bits`-bit refcounts
/// (0 if the budget is below [`MIN_BUDGET`]).
pub fn window_clusters(budget: usize, refcount_bits: u32) -> u64 {
    if budget < MIN_BUDGET || refcount_bits == 0 {
        return 0;
    }
    Window::capacity(budget - 3 * SCRATCH, refcount_bits.trailing_zeros())
}

/// Checks the qcow2 image in `file` (the node holding the image bytes: a leaf, or a window
/// over one) and repairs what `mode` allows, in `budget` bytes. `Err` when the check cannot
/// complete (the image cannot be parsed, an I/O error, a repair that needs a refcount
/// rebuild): qemu-img's "Check failed".
pub async fn check(
    io: &Io<'_, '_>,
    file: NodeId,
    mode: Mode,
    budget: &mut [u8],
    sink: &mut dyn Sink,
) -> Result<CheckResult> {
    let lay = Layout::read(io, file).await?;
    if budget.len() < MIN_BUDGET {
        return Err(Error::NoSpace {
            what: "check budget (at least 16 KiB)",
        });
    }
    let (a, rest) = budget.split_at_mut(SCRATCH);
    let (b, rest) = rest.split_at_mut(SCRATCH);
    let (c, mem) = rest.split_at_mut(SCRATCH);
    let cap = Window::capacity(mem.len(), lay.refcount_order);
    let total = lay.file_clusters() + 1;
    let mut stored = Stored::new(c);
    let mut walk_res = CheckResult::default();
    let mut cmp_res = CheckResult::default();
    let mut seen = Seen::default();
    let mut broken = false;
    let mut passes = 0u32;

    // Check: walk and compare, window by window, reporting.
    let mut start = 0;
    while start < total {
        let len = cap.min(total - start);
        let mut win = Window::new(mem, lay.refcount_order, start, len);
        let clusters_end;
        {
            let mut pass = Pass {
                lay: &lay,
                win: &mut win,
                res: &mut walk_res,
                sink: &mut *sink,
                global: start == 0,
                local: true,
                clusters_end: 0,
                broken_refblocks: false,
                fix_prealloc: mode.fix_errors,
            };
            pass.run(io, file, a, b).await?;
            clusters_end = pass.clusters_end;
            broken |= pass.broken_refblocks;
        }
        let clusters = lay.file_clusters().max(clusters_end);
        compare::compare(
            io,
            file,
            &lay,
            &win,
            clusters,
            &mut stored,
            Mode::CHECK,
            false,
            &mut cmp_res,
            &mut *sink,
            &mut seen,
        )
        .await?;
        passes += 1;
        start += len;
    }
    let mut res = CheckResult::default();
    res.add_counts(&walk_res);
    res.add_counts(&cmp_res);

    if mode.repairs() {
        let rebuild = broken || seen.zero_refcount;
        if rebuild && !mode.fix_errors {
            sink.finding(&Finding::NeedRebuild);
            return Err(Error::Corrupt {
                what: "the refcount structure needs a rebuild (-r all)",
                offset: 0,
            });
        }
        if broken {
            sink.finding(&Finding::RebuildUnsupported);
            return Err(Error::Unsupported(
                "rebuilding a broken refcount structure (qemu-img check -r all does)",
            ));
        }
        if res.leaks != 0 || res.corruptions != 0 {
            // Repair: the same walk again, silent, and a compare that writes.
            let mut quiet = CheckResult::default();
            cmp_res = CheckResult::default();
            seen = Seen::default();
            let mut start = 0;
            while start < total {
                let len = cap.min(total - start);
                let mut win = Window::new(mem, lay.refcount_order, start, len);
                let clusters_end;
                {
                    let mut pass = Pass {
                        lay: &lay,
                        win: &mut win,
                        res: &mut quiet,
                        sink: &mut *sink,
                        global: false,
                        local: false,
                        clusters_end: 0,
                        broken_refblocks: false,
                        fix_prealloc: false,
                    };
                    pass.run(io, file, a, b).await?;
                    clusters_end = pass.clusters_end;
                }
                let clusters = lay.file_clusters().max(clusters_end);
                let done = compare::compare(
                    io,
                    file,
                    &lay,
                    &win,
                    clusters,
                    &mut stored,
                    mode,
                    true,
                    &mut cmp_res,
                    &mut *sink,
                    &mut seen,
                )
                .await?;
                if !done {
                    stored.write_back(io, file, &lay).await?;
                    flush::flush_leaves(io, file).await?;
                    sink.finding(&Finding::RebuildUnsupported);
                    return Err(Error::Unsupported("rebuilding the refcount structure (a referenced cluster has no refcount block)"));
                }
                passes += 1;
                start += len;
            }
            stored.write_back(io, file, &lay).await?;
            // Refcounts are stable before any COPIED flag is set to rely on them.
            flush::flush_leaves(io, file).await?;
            res = CheckResult::default();
            res.add_counts(&walk_res);
            res.add_counts(&cmp_res);
        }
    }

    copied::check_copied(
        io,
        file,
        &lay,
        &mut stored,
        mode,
        &mut res,
        &mut *sink,
        a,
        b,
    )
    .await?;
    if mode.repairs() {
        flush::flush_leaves(io, file).await?;
        let bits = lay.header.incompatible;
        let clean = bits & !(incompat::DIRTY | incompat::CORRUPT);
        if res.check_errors == 0 && res.corruptions == 0 && lay.header.version >= 3 && clean != bits
        {
            child_io::write(io, file, INCOMPATIBLE_FIELD, &clean.to_be_bytes()).await?;
            flush::flush_leaves(io, file).await?;
        }
    }
    res.image_end_offset = (seen.highest + 1) * lay.cs;
    res.frag = walk_res.frag;
    res.frag.total_clusters = (lay.header.size & !511).div_ceil(lay.cs);
    res.passes = passes;
    Ok(res)
}

/// The header's incompatible-features field.
const INCOMPATIBLE_FIELD: u64 = 72;

/// Repairs a dirty image (lazy refcounts not written back) before a read-write open uses it,
/// as QEMU's `qcow2_do_open` does: a check fixing errors and leaks, in one bounce buffer (so a
/// large image takes many passes: 26624 clusters each with 64 KiB buffers and 16-bit
/// refcounts), which clears the dirty bit. Refused if it leaves corruptions.
pub(crate) async fn repair_dirty(io: &Io<'_, '_>, file: NodeId) -> Result<()> {
    let mut bounce = io.bounce.take_for_copy(1).await?;
    let budget = bounce.get(0).ok_or(Error::NoSpace {
        what: "bounce buffers",
    })?;
    let mut sink = |_: &Finding| {};
    let r = check(io, file, Mode::ALL, budget, &mut sink).await?;
    if r.check_errors != 0 || r.corruptions != 0 {
        return Err(Error::BadImage {
            what: "dirty image: repairing its refcounts left corruptions (qemu-img check -r all)",
        });
    }
    Ok(())
}

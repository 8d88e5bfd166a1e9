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
//! QEMU rebuilds the refcount structure (broken refcount blocks: unaligned, shared; or a
//! referenced cluster with stored refcount 0), `-r all` does too ([`rebuild`]); a refcount
//! block past the end of the file is first covered by growing the file, as QEMU does. The
//! snapshot table is read tolerantly first and, under `-r all`, cut or rewritten last
//! ([`snaptable`], QEMU's `qcow2_check_read_snapshot_table` and
//! `qcow2_check_fix_snapshot_table`). Like qemu-img, a caller re-checks after a repair to
//! report the image as it now is.
//!
//! Problems go to a caller's [`Sink`] as [`Finding`]s, whose `Display` is QEMU's message.

mod compare;
mod copied;
mod finding;
pub(crate) mod layout;
pub(crate) mod rebuild;
pub(crate) mod snaptable;
pub(crate) mod stored;
mod walk;
pub(crate) mod window;

pub use finding::{Finding, Label};

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::header::{incompat, Header, KNOWN_HEADER_LEN};
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

/// How one sweep over every window walks and compares.
#[derive(Clone, Copy)]
struct SweepMode {
    /// The walk reports what it finds (and counts it); false: it counts only clusters.
    walk_reports: bool,
    /// The walk's findings are counted but not printed (the recount after a rebuild).
    walk_silent: bool,
    /// The walk repairs what `-r all` repairs in its first pass.
    walk_fixes: bool,
    /// What the compare repairs.
    compare: Mode,
}

/// What a sweep found.
#[derive(Default)]
struct Swept {
    walk: CheckResult,
    cmp: CheckResult,
    seen: Seen,
    /// A refcount block is broken (a rebuild is needed).
    broken: bool,
    /// One past the highest cluster referenced.
    clusters_end: u64,
    passes: u32,
}

/// The caller's memory, cut up.
struct Memory<'m> {
    a: &'m mut [u8],
    b: &'m mut [u8],
    win: &'m mut [u8],
}

/// The reference walk and the compare, window by window over the whole file (QEMU's
/// `calculate_refcounts` then `compare_refcounts`). `lay.file_size` follows the file if the
/// walk grows it.
async fn sweep(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &mut Layout,
    m: &mut Memory<'_>,
    stored: &mut Stored<'_>,
    how: SweepMode,
    sink: &mut dyn Sink,
) -> Result<Swept> {
    let cap = Window::capacity(m.win.len(), lay.refcount_order);
    let mut out = Swept::default();
    let mut start = 0;
    while start < lay.file_clusters() + 1 {
        let len = cap.min(lay.file_clusters() + 1 - start);
        let mut win = Window::new(m.win, lay.refcount_order, start, len);
        let clusters_end;
        let grown;
        {
            let mut silent = |_: &Finding| {};
            let walk_sink: &mut dyn Sink = if how.walk_silent {
                &mut silent
            } else {
                &mut *sink
            };
            let mut pass = Pass {
                lay,
                win: &mut win,
                res: &mut out.walk,
                sink: walk_sink,
                global: how.walk_reports && start == 0,
                local: how.walk_reports,
                clusters_end: 0,
                broken_refblocks: false,
                fix_errors: how.walk_fixes,
                grown: 0,
            };
            pass.run(io, file, m.a, m.b).await?;
            clusters_end = pass.clusters_end;
            grown = pass.grown;
            out.broken |= pass.broken_refblocks;
        }
        lay.file_size = lay.file_size.max(grown);
        out.clusters_end = out.clusters_end.max(clusters_end);
        let clusters = lay.file_clusters().max(clusters_end);
        let done = compare::compare(
            io,
            file,
            lay,
            &win,
            clusters,
            stored,
            how.compare,
            &mut out.cmp,
            &mut *sink,
            &mut out.seen,
        )
        .await?;
        if !done {
            return Err(Error::Corrupt {
                what: "a refcount repair found no refcount block for its cluster",
                offset: 0,
            });
        }
        out.passes += 1;
        start += len;
    }
    if how.compare.repairs() {
        stored.write_back(io, file, lay).await?;
    }
    Ok(out)
}

/// Checks the qcow2 image in `file` (the node holding the image bytes: a leaf, or a window
/// over one) and repairs what `mode` allows, in `budget` bytes. `Err` when the check cannot
/// complete (the image cannot be parsed, an I/O error, a repair that needs `-r all`):
/// qemu-img's "Check failed".
pub async fn check(
    io: &Io<'_, '_>,
    file: NodeId,
    mode: Mode,
    budget: &mut [u8],
    sink: &mut dyn Sink,
) -> Result<CheckResult> {
    let mut lay = Layout::read_for_check(io, file).await?;
    if budget.len() < MIN_BUDGET {
        return Err(Error::NoSpace {
            what: "check budget (at least 16 KiB)",
        });
    }
    let (a, rest) = budget.split_at_mut(SCRATCH);
    let (b, rest) = rest.split_at_mut(SCRATCH);
    let (c, win) = rest.split_at_mut(SCRATCH);
    let mut m = Memory { a, b, win };
    let mut stored = Stored::new(c);

    // The snapshot table first (its problems counted apart, as QEMU's `snapshot_res`).
    let mut snap_res = CheckResult::default();
    let snaps = snaptable::survey(
        io,
        file,
        &lay.header,
        mode.fix_errors,
        &mut *sink,
        &mut snap_res,
    )
    .await?;
    lay.snaps = snaps;
    lay.header.nb_snapshots = snaps.count;

    // Check: walk and compare, reporting (and growing the file over a refcount block past its
    // end under -r all, as QEMU).
    let how = SweepMode {
        walk_reports: true,
        walk_silent: false,
        walk_fixes: mode.fix_errors,
        compare: Mode::CHECK,
    };
    let first = sweep(io, file, &mut lay, &mut m, &mut stored, how, &mut *sink).await?;
    let mut passes = first.passes;
    let mut seen = first.seen;
    let mut res = CheckResult::default();
    res.add_counts(&first.walk);
    res.add_counts(&first.cmp);

    let rebuild = first.broken || first.seen.zero_refcount;
    if rebuild && mode.fix_errors {
        // QEMU's rebuild: a new structure from the recount, then the recount again with the
        // old structure's clusters freed as leaks.
        sink.finding(&Finding::Rebuilding);
        // Past everything referenced, not past the end of the file: a guest's disk is the
        // image plus its headroom and cannot grow, and what lies past the last reference is
        // free (leaked at worst), so the new structure may go there.
        let start = first.clusters_end;
        passes += rebuild::rebuild(io, file, &lay, start, m.win, m.a, m.b).await?;
        lay = Layout::read_for_check(io, file).await?;
        lay.snaps = snaps;
        stored.reset();
        let how = SweepMode {
            walk_reports: true,
            walk_silent: true,
            walk_fixes: false,
            compare: Mode::LEAKS,
        };
        let again = sweep(io, file, &mut lay, &mut m, &mut stored, how, &mut *sink).await?;
        flush::flush_leaves(io, file).await?;
        passes += again.passes;
        if again.seen.zero_refcount || again.broken {
            sink.finding(&Finding::RebuiltStillBroken);
        }
        seen = again.seen;
        let old = res;
        res.corruptions = again.walk.corruptions + again.cmp.corruptions;
        res.leaks = again.walk.leaks;
        res.corruptions_fixed += old.corruptions.saturating_sub(res.corruptions);
        res.leaks_fixed += old.leaks.saturating_sub(res.leaks);
        // Leaks the rebuild's leak repair could not free.
        res.leaks += again.cmp.leaks;
    } else if mode.repairs() {
        if rebuild {
            sink.finding(&Finding::NeedRebuild);
            return Err(Error::Corrupt {
                what: "the refcount structure needs a rebuild (-r all)",
                offset: 0,
            });
        }
        if res.leaks != 0 || res.corruptions != 0 {
            // Repair: the same walk again, silent, and a compare that writes.
            let how = SweepMode {
                walk_reports: false,
                walk_silent: true,
                walk_fixes: false,
                compare: mode,
            };
            let fixed = sweep(io, file, &mut lay, &mut m, &mut stored, how, &mut *sink).await?;
            // Refcounts are stable before any COPIED flag is set to rely on them.
            flush::flush_leaves(io, file).await?;
            passes += fixed.passes;
            seen = fixed.seen;
            res = CheckResult::default();
            res.add_counts(&first.walk);
            res.add_counts(&fixed.cmp);
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
        m.a,
        m.b,
    )
    .await?;
    let first_table = lay.snaps;
    // The snapshot table rewritten once the refcounts are right (QEMU's
    // `qcow2_check_fix_snapshot_table`): its new clusters are allocated from them.
    if mode.fix_errors && snap_res.corruptions != 0 {
        match snaptable::rewrite(io, file, &lay, &lay.snaps, &mut stored, m.a, &mut *sink).await {
            Ok(t) => lay.snaps = t,
            Err(e) => {
                // QEMU's strerror: EFBIG for a table over its limit, EIO otherwise.
                let reason = match e {
                    Error::NoSpace { .. } => "File too large",
                    _ => "Input/output error",
                };
                sink.finding(&Finding::SnapshotTableUpdateFailed { reason });
                return Err(e);
            }
        }
        snap_res.corruptions_fixed += snap_res.corruptions;
        snap_res.corruptions = 0;
    }
    res.add_counts(&snap_res);
    if mode.fix_leaks {
        compare::discard_free_table(io, file, &lay, &first_table, &mut stored).await?;
    }
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
    res.frag = first.walk.frag;
    res.frag.total_clusters = (lay.header.size & !511).div_ceil(lay.cs);
    res.passes = passes;
    Ok(res)
}

/// The header's incompatible-features field.
const INCOMPATIBLE_FIELD: u64 = 72;

/// Repairs the image in `file` if it is dirty (and neither corrupt nor with an external data
/// file), before a read-write open reads its tables: the repair may rebuild the refcount
/// structure, moving its table and growing the file.
pub(crate) async fn repair_if_dirty(io: &Io<'_, '_>, file: NodeId) -> Result<()> {
    let mut bytes = [0u8; KNOWN_HEADER_LEN];
    let present = child_io::read_upto(io, file, 0, &mut bytes).await?;
    let header = Header::parse(&bytes, present)?;
    let bits = header.incompatible;
    if bits & (incompat::DIRTY | incompat::CORRUPT) == incompat::DIRTY
        && bits & incompat::DATA_FILE == 0
    {
        // QEMU reads the snapshot table strictly at open, before it repairs: a broken table
        // is refused, not repaired, here.
        super::snapshots::check(io, file, &header).await?;
        repair_dirty(io, file).await?;
    }
    Ok(())
}

/// Repairs a dirty image (lazy refcounts not written back) before a read-write open uses it,
/// as QEMU's `qcow2_do_open` does: a check fixing errors and leaks, in one bounce buffer (so a
/// large image takes many passes: 26624 clusters each with 64 KiB buffers and 16-bit
/// refcounts), which clears the dirty bit. Refused if it leaves corruptions.
async fn repair_dirty(io: &Io<'_, '_>, file: NodeId) -> Result<()> {
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

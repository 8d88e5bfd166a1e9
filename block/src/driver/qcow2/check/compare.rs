//! Stored refcounts against the recomputed ones, one window at a time (QEMU's
//! `compare_refcounts`): leaks (stored > computed), errors (stored < computed), and with a fix
//! mode the stored entry set to the computed count. Every entry a repair writes is then at
//! least the number of references to its cluster, so a power cut between any two writes leaves
//! at worst leaks (QEMU's order: one pass in cluster order).
//!
//! A leak repair that frees a cluster (its refcount lowered to 0) discards it in the file, as
//! QEMU's `update_refcount(..., QCOW2_DISCARD_ALWAYS)` does, so it reads back as zeros where the
//! file can punch holes. Adjacent freed clusters go down as one request; a failed discard is
//! ignored, as QEMU ignores it (the cluster is free either way: nothing references it).

use crate::error::Result;
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::layout::Layout;
use super::stored::{Lookup, Stored};
use super::window::Window;
use super::{CheckResult, Finding, Mode, Sink};

/// What a compare learnt besides the counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seen {
    /// The highest cluster with a stored or computed refcount.
    pub(crate) highest: u64,
    /// A referenced cluster has stored refcount 0 (QEMU rebuilds the refcount structure).
    pub(crate) zero_refcount: bool,
}

/// Compares clusters of `win` below `clusters`; repairs what `fix` allows (a stored zero is
/// never raised in place: it needs a rebuild, as in QEMU). Returns false if a repair needs a
/// refcount block that does not exist.
#[allow(clippy::too_many_arguments)] // reason: the check's state, as QEMU passes it
pub(crate) async fn compare(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    win: &Window<'_>,
    clusters: u64,
    stored: &mut Stored<'_>,
    fix: Mode,
    res: &mut CheckResult,
    sink: &mut dyn Sink,
    seen: &mut Seen,
) -> Result<bool> {
    // Freed clusters not yet discarded: [start, end).
    let mut freed = Freed { start: 0, end: 0 };
    for k in win.start..win.end().min(clusters) {
        let r1 = match stored.get(io, file, lay, k).await? {
            Lookup::Count(n) => n,
            Lookup::Unreadable => {
                sink.finding(&Finding::CantGetRefcount { cluster: k });
                res.check_errors += 1;
                continue;
            }
        };
        let r2 = win.get(k);
        if r1 > 0 || r2 > 0 {
            seen.highest = k;
        }
        if r1 == r2 {
            continue;
        }
        #[derive(PartialEq)]
        enum Fixed {
            No,
            Leak,
            Error,
        }
        let mut fixed = Fixed::No;
        if r1 == 0 {
            seen.zero_refcount = true;
        } else if r1 > r2 && fix.fix_leaks {
            fixed = Fixed::Leak;
        } else if r1 < r2 && fix.fix_errors {
            fixed = Fixed::Error;
        }
        sink.finding(&Finding::Mismatch {
            cluster: k,
            stored: r1,
            computed: r2,
            repairing: fixed != Fixed::No,
        });
        if fixed != Fixed::No {
            if !stored.set(io, file, lay, k, r2).await? {
                freed.discard(io, file, lay).await;
                return Ok(false);
            }
            match fixed {
                Fixed::Leak => res.leaks_fixed += 1,
                _ => res.corruptions_fixed += 1,
            }
            if fixed == Fixed::Leak && r2 == 0 {
                if freed.end != k {
                    freed.discard(io, file, lay).await;
                    freed.start = k;
                }
                freed.end = k + 1;
            }
            continue;
        }
        if r1 < r2 {
            res.corruptions += 1;
        } else {
            res.leaks += 1;
        }
    }
    freed.discard(io, file, lay).await;
    Ok(true)
}

/// A run of adjacent clusters a leak repair freed, discarded as one request.
struct Freed {
    start: u64,
    end: u64,
}

impl Freed {
    /// Discards the run (if any) and empties it; a failure is ignored (advisory, as in QEMU).
    /// The part past the end of the file is left out (the last cluster may be partial), and
    /// so are the snapshot table's clusters: the check reads the table again later (QEMU keeps
    /// it in memory), so freed ones are discarded at the end ([`discard_free_table`]).
    async fn discard(&mut self, io: &Io<'_, '_>, file: NodeId, lay: &Layout) {
        let start = self.start.saturating_mul(lay.cs);
        let end = self.end.saturating_mul(lay.cs).min(lay.file_size);
        let (t0, t1) = table_clusters(lay);
        let (t0, t1) = (t0.saturating_mul(lay.cs), t1.saturating_mul(lay.cs));
        for (a, b) in [(start, end.min(t0)), (start.max(t1), end)] {
            if b > a {
                let _ = child_io::discard(io, file, a, b - a).await;
            }
        }
        self.start = self.end;
    }
}

/// The clusters `[first, end)` the snapshot table in `lay` lies in (empty if it has none).
fn table_clusters(lay: &Layout) -> (u64, u64) {
    let t = &lay.snaps;
    if t.len == 0 {
        return (0, 0);
    }
    let first = t.offset / lay.cs;
    (
        first,
        t.offset.saturating_add(t.len).div_ceil(lay.cs).max(first),
    )
}

/// Discards the clusters of the snapshot table `old` (as the check first read it) that are
/// now free (stored refcount 0) and inside the file: the leak repair's discards it held back
/// while the table was still read. Failures are ignored.
pub(crate) async fn discard_free_table(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    old: &super::layout::SnapTable,
    stored: &mut Stored<'_>,
) -> Result<()> {
    let mut at_old = *lay;
    at_old.snaps = *old;
    let (first, end) = table_clusters(&at_old);
    let end = end.min(lay.file_size.div_ceil(lay.cs));
    let mut freed = Freed { start: 0, end: 0 };
    // The held-back clusters, no longer excluded.
    at_old.snaps.len = 0;
    for k in first..end {
        if stored.get(io, file, lay, k).await? == Lookup::Count(0) {
            if freed.end != k {
                freed.discard(io, file, &at_old).await;
                freed.start = k;
            }
            freed.end = k + 1;
        }
    }
    freed.discard(io, file, &at_old).await;
    Ok(())
}

//! Stored refcounts against the recomputed ones, one window at a time (QEMU's
//! `compare_refcounts`): leaks (stored > computed), errors (stored < computed), and with a fix
//! mode the stored entry set to the computed count. Every entry a repair writes is then at
//! least the number of references to its cluster, so a power cut between any two writes leaves
//! at worst leaks (QEMU's order: one pass in cluster order).

use crate::error::Result;
use crate::io::Io;
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
                return Ok(false);
            }
            match fixed {
                Fixed::Leak => res.leaks_fixed += 1,
                _ => res.corruptions_fixed += 1,
            }
            continue;
        }
        if r1 < r2 {
            res.corruptions += 1;
        } else {
            res.leaks += 1;
        }
    }
    Ok(true)
}

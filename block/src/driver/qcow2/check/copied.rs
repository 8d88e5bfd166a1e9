//! The COPIED flags of the active L1 and L2 entries against the stored refcounts (QEMU's
//! `check_oflag_copied`), run after the refcounts are repaired. A repair writes the L1 entry,
//! and each 4 KiB chunk of an L2 table with changed entries.

use crate::error::{Error, Result};
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::super::entry_bits::{COMPRESSED, COPIED, L1_OFFSET, L2_OFFSET, ZERO};
use super::layout::{be64, put_be64, Layout};
use super::snaptable;
use super::stored::{Lookup, Stored};
use super::{CheckResult, Finding, Mode, Sink};

/// Checks (and with `fix` repairs) every COPIED flag of the active tables.
#[allow(clippy::too_many_arguments)] // reason: the check's state, as QEMU passes it
pub(crate) async fn check_copied(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    stored: &mut Stored<'_>,
    fix: Mode,
    res: &mut CheckResult,
    sink: &mut dyn Sink,
    a: &mut [u8],
    b: &mut [u8],
) -> Result<()> {
    // Under -r leaks only when the refcounts are now known to be right.
    let repair = fix.fix_errors
        || (fix.fix_leaks && res.check_errors == 0 && res.corruptions == 0 && res.leaks == 0);
    let h = &lay.header;
    let bytes = u64::from(h.l1_size) * 8;
    let chunk = lay.chunk() as u64;
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(chunk) as usize;
        child_io::read_upto(io, file, h.l1_table_offset + at, &mut a[..n]).await?;
        for i in 0..n / 8 {
            let l1_entry = be64(a, i * 8);
            let l2 = l1_entry & L1_OFFSET;
            if l2 == 0 {
                continue;
            }
            let Lookup::Count(refcount) = stored.get(io, file, lay, l2 >> lay.cluster_bits).await?
            else {
                continue;
            };
            if (refcount == 1) != (l1_entry & COPIED != 0) {
                let l1_index = at / 8 + i as u64;
                res.corruptions += 1;
                sink.finding(&Finding::CopiedL2 {
                    l1_index,
                    l1_entry,
                    refcount,
                    repairing: repair,
                });
                if repair {
                    let fixed = if refcount == 1 {
                        l1_entry | COPIED
                    } else {
                        l1_entry & !COPIED
                    };
                    put_be64(a, i * 8, fixed);
                    child_io::write(
                        io,
                        file,
                        h.l1_table_offset + l1_index * 8,
                        &fixed.to_be_bytes(),
                    )
                    .await?;
                    res.corruptions -= 1;
                    res.corruptions_fixed += 1;
                }
            }
            l2_copied(io, file, lay, l2, stored, repair, res, sink, b).await?;
        }
        at += n as u64;
    }
    Ok(())
}

/// The COPIED flags of one L2 table's data clusters.
#[allow(clippy::too_many_arguments)] // reason: the check's state, as QEMU passes it
async fn l2_copied(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    l2: u64,
    stored: &mut Stored<'_>,
    repair: bool,
    res: &mut CheckResult,
    sink: &mut dyn Sink,
    b: &mut [u8],
) -> Result<()> {
    let (cs, es) = (lay.cs, lay.l2_entry);
    let chunk = lay.chunk() as u64;
    // QEMU's overlap check before it writes the table back (it can fail only where the
    // snapshot table is garbage: an "L1 table" read from it lies on this L2 table).
    let refused = if repair {
        snaptable::overlap(io, file, lay, l2, cs).await?
    } else {
        None
    };
    let mut refused_dirty = 0u64;
    let mut at = 0;
    while at < cs {
        let n = (cs - at).min(chunk) as usize;
        child_io::read_upto(io, file, l2 + at, &mut b[..n]).await?;
        let mut dirty = 0u64;
        for j in 0..n as u64 / es {
            let e = be64(b, (j * es) as usize);
            let host = e & L2_OFFSET;
            if e & COMPRESSED != 0 || (e & ZERO != 0 && !lay.extended_l2 && host == 0) {
                continue;
            }
            let allocated = host != 0 || (lay.data_file && e & COPIED != 0);
            if !allocated {
                continue;
            }
            let refcount = if lay.data_file {
                1
            } else {
                match stored.get(io, file, lay, host >> lay.cluster_bits).await? {
                    Lookup::Count(r) => r,
                    Lookup::Unreadable => continue,
                }
            };
            if (refcount == 1) != (e & COPIED != 0) {
                res.corruptions += 1;
                sink.finding(&Finding::CopiedData {
                    l2_entry: e,
                    refcount,
                    repairing: repair,
                });
                if repair {
                    put_be64(
                        b,
                        (j * es) as usize,
                        if refcount == 1 {
                            e | COPIED
                        } else {
                            e & !COPIED
                        },
                    );
                    dirty += 1;
                }
            }
        }
        if dirty > 0 && refused.is_some() {
            refused_dirty += dirty;
        } else if dirty > 0 {
            child_io::write(io, file, l2 + at, &b[..n]).await?;
            res.corruptions -= dirty;
            res.corruptions_fixed += dirty;
        }
        at += n as u64;
    }
    if let (Some(what), true) = (refused, refused_dirty > 0) {
        snaptable::mark_corrupt(io, file, lay, what, &mut *sink).await?;
        sink.finding(&Finding::L2WriteRefused);
        res.check_errors += 1;
        return Err(Error::Corrupt {
            what: "a COPIED repair would overwrite metadata",
            offset: l2,
        });
    }
    Ok(())
}

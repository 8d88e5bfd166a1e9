//! Write-zeroes and discard on a read-write qcow2 node, with QEMU's semantics
//! (`qcow2_co_pwrite_zeroes`/`qcow2_subcluster_zeroize`, `qcow2_co_pdiscard`/`discard_in_l2_slice`):
//!
//! - **write-zeroes**, version 3: whole clusters (with extended L2, whole subclusters) get the
//!   zero flag (zero bits); with `unmap` their host clusters are freed, without it an allocation
//!   is kept (a preallocated zero cluster); compressed clusters are always freed. Partial units
//!   at the edges that do not read as zeros already are written as zeros. Version 2 has no zero
//!   flag: zeros are written as data.
//! - **discard** (advisory): only whole clusters; each becomes a zero cluster (version 3; with
//!   extended L2 all-zero subclusters) or unallocated (version 2 without a backing file; with
//!   one, nothing happens: it would show the backing file's stale data); an unallocated cluster
//!   without a backing file stays as it is. Freed clusters are discarded in the file too once
//!   their table change is stable.
//!
//! Both hold one serialising tracked request over whole clusters for their range.

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Role};
use crate::io::tracked::{ReqKind, Tracked};
use crate::io::RangeOp;

use super::cache::Class;
use super::state::PendingFree;
use super::tables::{decode_l1, decode_l2, l2_words, set_l2_words, Entry, GuestOffset, L2_OFFSET, ZERO};
use super::Qcow2;

/// Zero bits for all 32 subclusters, no allocated ones.
const ALL_ZEROES: u64 = 0xffff_ffff << 32;

/// How one entry changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Reads as zeros over subclusters `mask` (all of them without subclusters).
    Zero { unmap: bool, mask: u64 },
    /// Discarded (whole cluster).
    Discard,
}

/// An entry's new value, or that zeros must be written as data instead.
enum Outcome {
    Set { entry: u64, bitmap: u64, free: Option<PendingFree> },
    AsData,
}

impl Qcow2 {
    /// Write-zeroes or discard over `[offset, offset + len)` of node `node`.
    pub(crate) async fn range_op<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, offset: u64, len: u64, op: RangeOp) -> Result<()> {
        self.check_writable()?;
        let file = Self::file(graph, node)?;
        self.mark_dirty(graph, file).await?;
        let kind = if op == RangeOp::Discard { ReqKind::Discard } else { ReqKind::Write };
        let tracked = graph.format_tracker.begin(node, kind, offset, len).await;
        tracked.serialise(self.cluster_size());
        tracked.wait_serialising().await;
        let end = offset + len;
        let cs = self.cluster_size();
        match op {
            // Version 2 has no zero flag: a discarded cluster would show the backing file's
            // stale data, so QEMU does nothing (-ENOTSUP, and discards are advisory).
            RangeOp::Discard if self.header().version < 3 && graph.node(node)?.child(Role::Backing).is_some() => Ok(()),
            RangeOp::Discard => {
                let (start, stop) = self.whole_units(offset, end, cs);
                let mut c = start;
                while c < stop {
                    self.change_cluster(graph, node, file, c, Change::Discard, &tracked).await?;
                    c += cs;
                }
                Ok(())
            }
            RangeOp::WriteZeroes { .. } if self.header().version < 3 => self.zeros_as_data(graph, node, file, offset, end, &tracked).await,
            RangeOp::WriteZeroes { unmap } => {
                let unit = if self.extended_l2 { cs / 32 } else { cs };
                let (start, stop) = self.whole_units(offset, end, unit);
                if start >= stop {
                    return self.zeros_as_data(graph, node, file, offset, end, &tracked).await;
                }
                self.zeros_as_data(graph, node, file, offset, start, &tracked).await?;
                let mut c = start & !(cs - 1);
                while c < stop {
                    let (lo, hi) = (start.max(c), stop.min(c + cs));
                    let mask = if self.extended_l2 {
                        let (s0, s1) = ((lo - c) / unit, (hi - c) / unit);
                        ((1u64 << s1) - 1) & !((1u64 << s0) - 1)
                    } else {
                        0
                    };
                    self.change_cluster(graph, node, file, c, Change::Zero { unmap, mask }, &tracked).await?;
                    c += cs;
                }
                self.zeros_as_data(graph, node, file, stop.min(end), end, &tracked).await
            }
        }
    }

    /// The whole `unit`s inside `[offset, end)`; a range reaching the end of the image covers
    /// its last, partial unit too (as QEMU).
    fn whole_units(&self, offset: u64, end: u64, unit: u64) -> (u64, u64) {
        let start = offset.next_multiple_of(unit);
        let stop = if end >= self.size() { end.next_multiple_of(unit) } else { end / unit * unit };
        (start, stop.max(start))
    }

    /// Writes zeros as data over `[from, to)` where it does not read as zeros already.
    async fn zeros_as_data<const N: usize, const T: usize>(
        &self,
        graph: &Graph<'_, N, T>,
        node: NodeId,
        file: NodeId,
        from: u64,
        to: u64,
        tracked: &Tracked<'_, T>,
    ) -> Result<()> {
        static ZEROS: [u8; 4096] = [0; 4096];
        let to = to.min(self.size());
        if from >= to || self.reads_zero(graph, node, from, to).await? {
            return Ok(());
        }
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(ZEROS.len());
            self.write_tracked(graph, node, file, at, &ZEROS[..n], tracked).await?;
            at += n as u64;
        }
        Ok(())
    }

    /// Applies `change` to the entry of guest cluster `c`.
    async fn change_cluster<const N: usize, const T: usize>(
        &self,
        graph: &Graph<'_, N, T>,
        node: NodeId,
        file: NodeId,
        c: u64,
        change: Change,
        tracked: &Tracked<'_, T>,
    ) -> Result<()> {
        let cs = self.cluster_size();
        let has_backing = graph.node(node)?.child(Role::Backing).is_some();
        let l1_index = (c >> self.cluster_bits) / self.l2_entries();
        if l1_index >= u64::from(self.l1_entries.get()) {
            return Ok(());
        }
        let slice_len = self.slice_len();
        let l1_at = self.l1.get().start + l1_index * 8;
        let l1 = graph.meta.read_u64(graph, file, l1_at, slice_len).await?;
        if decode_l1(l1, l1_at)?.is_none() && !has_backing {
            return Ok(()); // no table, nothing below: reads as zeros, nothing to free
        }
        let l2 = self.l2_for_write(graph, node, file, c).await?;
        let esize = self.l2_entry_size();
        let at = l2 + ((c >> self.cluster_bits) % self.l2_entries()) * esize;
        let slice = at / slice_len as u64 * slice_len as u64;
        let k = (at - slice) as usize;
        let (e, bitmap) = graph
            .meta
            .with_slice(graph, file, slice, slice_len, |s| l2_words(s, k, esize == 16))
            .await?;
        let (entry, new_bitmap, free) = match self.changed(e, bitmap, GuestOffset(c), at, change, has_backing)? {
            Outcome::AsData => {
                let Change::Zero { mask, .. } = change else { return Ok(()) };
                let sc = cs / 32;
                let (lo, hi) = (c + u64::from(mask.trailing_zeros()) * sc, c + (64 - u64::from(mask.leading_zeros())) * sc);
                return self.zeros_as_data(graph, node, file, lo, hi, tracked).await;
            }
            Outcome::Set { entry, bitmap: b, free } => (entry, b, free),
        };
        if entry == e && new_bitmap == bitmap {
            return Ok(());
        }
        self.check_meta_write(graph, file, at, Class::Table).await?;
        graph
            .meta
            .with_slice_mut(graph, file, slice, slice_len, Class::Table, |s| set_l2_words(s, k, esize == 16, entry, new_bitmap))
            .await?
            .ok_or(Error::BadGraph("L2 entry across a slice"))?;
        if let Some(f) = free {
            self.free_later(graph, node, f).await?;
        }
        Ok(())
    }

    /// The new entry for `change` applied to entry `e` (with `bitmap`) of guest cluster `guest`.
    fn changed(&self, e: u64, bitmap: u64, guest: GuestOffset, at: u64, change: Change, has_backing: bool) -> Result<Outcome> {
        let cs = self.cluster_size();
        let old = decode_l2(self, e, bitmap, guest, at)?;
        let host = match old {
            Entry::Normal { host, .. } => Some(PendingFree { host: host.0, len: cs, discard: false }),
            Entry::Zero if e & L2_OFFSET != 0 => Some(PendingFree { host: e & L2_OFFSET, len: cs, discard: false }),
            Entry::Compressed { host, csize } => Some(PendingFree { host: host.0, len: csize, discard: false }),
            _ => None,
        };
        let compressed = matches!(old, Entry::Compressed { .. });
        let set = |entry, bitmap, free| Ok(Outcome::Set { entry, bitmap, free });
        match change {
            Change::Discard => {
                if matches!(old, Entry::Unallocated { .. }) && !has_backing {
                    return set(e, bitmap, None);
                }
                let free = host.map(|f| PendingFree { discard: true, ..f });
                if self.extended_l2 {
                    set(0, ALL_ZEROES, free)
                } else if self.header().version >= 3 {
                    set(ZERO, 0, free)
                } else {
                    set(0, 0, free)
                }
            }
            Change::Zero { unmap, .. } if !self.extended_l2 => {
                if unmap || compressed {
                    set(ZERO, 0, host.map(|f| PendingFree { discard: true, ..f }))
                } else {
                    set(e | ZERO, 0, None)
                }
            }
            Change::Zero { unmap, mask } => {
                if mask == 0xffff_ffff {
                    if unmap || compressed {
                        return set(0, ALL_ZEROES, host.map(|f| PendingFree { discard: true, ..f }));
                    }
                    return set(e, ALL_ZEROES, None);
                }
                if compressed {
                    return Ok(Outcome::AsData);
                }
                set(e, (bitmap | (mask << 32)) & !mask, None)
            }
        }
    }
}

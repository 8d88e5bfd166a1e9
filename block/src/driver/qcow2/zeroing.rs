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
//! With an external data file nothing is freed: a dropped data cluster is discarded in the data
//! file, and with `data_file_raw` write-zeroes writes its zeros there too (`data_file.rs`).
//!
//! Both run under one serialising tracked request over whole clusters of their range
//! ([`Qcow2::begin`]); the io layer drives the steps and writes zeros as data where a step asks.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{NodeId, Role};
use crate::driver::RangeStep;
use crate::io::RangeOp;

use crate::io::cache::Class;
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
    /// The next step of write-zeroes or discard over `[pos, end)` of node `node`, under the
    /// serialising request of [`Qcow2::begin`]. Steps are stateless: the whole units of
    /// `[pos, end)` are the same whether `pos` is where the operation started or a unit
    /// boundary it reached.
    pub(crate) async fn plan_range_step(&self, io: &Io<'_, '_>, node: NodeId, pos: u64, end: u64, op: RangeOp) -> Result<RangeStep> {
        let file = Self::file(io, node)?;
        let cs = self.cluster_size();
        let done = |to: u64| Ok(RangeStep::Done { len: to.min(end) - pos });
        let as_data = |to: u64| Ok(RangeStep::AsData { len: to.min(end) - pos });
        match op {
            // Version 2 has no zero flag: a discarded cluster would show the backing file's
            // stale data, so QEMU does nothing (-ENOTSUP, and discards are advisory).
            RangeOp::Discard if self.header().version < 3 && io.node(node)?.child(Role::Backing).is_some() => done(end),
            RangeOp::Discard => {
                let (start, stop) = self.whole_units(pos, end, cs);
                if pos < start || pos >= stop {
                    return done(if pos < start { start } else { end });
                }
                // The cluster will read as zeros: so must a raw data file, even where the device
                // below ignores discards (`data_file.rs`).
                self.zero_raw_data(io, node, pos, (pos + cs).min(end) - pos).await?;
                self.change_cluster(io, node, file, pos, Change::Discard).await?;
                done(pos + cs)
            }
            RangeOp::WriteZeroes { .. } if self.header().version < 3 => as_data(end),
            RangeOp::WriteZeroes { unmap } => {
                let unit = if self.extended_l2 { cs / 32 } else { cs };
                let (start, stop) = self.whole_units(pos, end, unit);
                if pos < start || pos >= stop {
                    return as_data(if pos < start { start } else { end });
                }
                let c = pos & !(cs - 1);
                let hi = stop.min(c + cs);
                let mask = if self.extended_l2 {
                    let (s0, s1) = ((pos - c) / unit, (hi - c) / unit);
                    ((1u64 << s1) - 1) & !((1u64 << s0) - 1)
                } else {
                    0
                };
                // A raw data file reads as the guest disk: the zeros go there first.
                self.zero_raw_data(io, node, pos, hi - pos).await?;
                match self.change_cluster(io, node, file, c, Change::Zero { unmap, mask }).await? {
                    Some((lo, hi)) if lo == pos => as_data(hi),
                    Some(_) => Err(Error::BadGraph("zeroing as data away from the position")),
                    None => done(hi),
                }
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

    /// Applies `change` to the entry of guest cluster `c`; `Some((lo, hi))` if guest
    /// `[lo, hi)` must be written as zeros instead (part of a compressed cluster).
    async fn change_cluster(&self, io: &Io<'_, '_>, node: NodeId, file: NodeId, c: u64, change: Change) -> Result<Option<(u64, u64)>> {
        let cs = self.cluster_size();
        let has_backing = io.node(node)?.child(Role::Backing).is_some();
        let l1_index = (c >> self.cluster_bits) / self.l2_entries();
        if l1_index >= u64::from(self.l1_entries.get()) {
            return Ok(None);
        }
        let slice_len = self.slice_len();
        let l1_at = self.l1.get().start + l1_index * 8;
        let l1 = io.meta.read_u64(io, file, l1_at, slice_len).await?;
        // No table and nothing below: the cluster reads as zeros and has nothing to free. A
        // discard leaves it so; write-zeroes makes a table for its zero flag, as QEMU's
        // zero_in_l2_slice (get_cluster_table) does, so `qemu-img map` shows it present as zeros.
        if decode_l1(l1, l1_at)?.is_none() && !has_backing && change == Change::Discard {
            return Ok(None);
        }
        let l2 = self.l2_for_write(io, node, file, c).await?;
        let esize = self.l2_entry_size();
        let at = l2 + ((c >> self.cluster_bits) % self.l2_entries()) * esize;
        let slice = at / slice_len as u64 * slice_len as u64;
        let k = (at - slice) as usize;
        let (e, bitmap) = io.meta.with_slice(io, file, slice, slice_len, |s| l2_words(s, k, esize == 16)).await?;
        let (entry, new_bitmap, free) = match self.changed(e, bitmap, GuestOffset(c), at, change, has_backing)? {
            Outcome::AsData => {
                let Change::Zero { mask, .. } = change else { return Ok(None) };
                let sc = cs / 32;
                return Ok(Some((c + u64::from(mask.trailing_zeros()) * sc, c + (64 - u64::from(mask.leading_zeros())) * sc)));
            }
            Outcome::Set { entry, bitmap: b, free } => (entry, b, free),
        };
        if entry == e && new_bitmap == bitmap {
            return Ok(None);
        }
        self.check_meta_write(io, file, at, Class::Table).await?;
        io.meta
            .with_slice_mut(io, file, slice, slice_len, Class::Table, |s| set_l2_words(s, k, esize == 16, entry, new_bitmap))
            .await?
            .ok_or(Error::BadGraph("L2 entry across a slice"))?;
        match free {
            // Nothing to free in a data file; the data is discarded there now (`data_file.rs`).
            Some(f) if self.data_file && f.discard => self.discard_data(io, node, f.host, f.len).await?,
            Some(_) if self.data_file => {}
            Some(f) => self.free_later(io, node, f).await?,
            None => {}
        }
        Ok(None)
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

//! Guest writes, planned and committed (QEMU's `qcow2_co_pwritev_part`,
//! `qcow2_alloc_host_offset`, `qcow2_alloc_cluster_link_l2`); [`crate::path`] executes them.
//!
//! A write holds one serialising tracked request at the qcow2 node over the whole clusters of its
//! range ([`Qcow2::begin`]), so overlapping requests run in issue order and none interleaves with
//! an allocation (a later reader waits for the commit). Where the mapping is `writable` (the node
//! owns the cluster alone) the plan is an in-place write. Anywhere else, per run of clusters:
//! - **plan** ([`Qcow2::plan`]): the L2 table (allocated, or copied from one shared with a
//!   snapshot) and the entries; clusters that need a new host cluster are grouped and allocated
//!   contiguously; the uncovered parts of the first and last cluster become copy-on-write spans
//!   whose source is what the node reads there now (backing chain, its own compressed or shared
//!   cluster) or zeros; with extended L2 only the partly written subclusters are copied;
//! - **execute** (not here): the io layer reads the sources and writes head, data and tail;
//! - **commit** ([`Qcow2::commit`]): the L2 entries change in the cache (written back after a
//!   flush, rule 2 in `docs/ARCHITECTURE.md`), and clusters no longer referenced go on the
//!   pending-free list.
//!
//! A write that fails or is dropped after allocating leaks the clusters it took (as QEMU's);
//! nothing points at them.

use crate::driver::{Allocation, Cow, Mapping, WritePlan};
use crate::error::{Error, Result};
use crate::io::cache::Class;
use crate::io::events::Event;
use crate::io::tracked::{ReqKind, Tracked};
use crate::io::{child_io, Io};
use crate::node::{NodeId, Role};

use super::state::PendingFree;
use super::tables::{decode_l1, decode_l2, l2_words, set_l2_words, Entry, GuestOffset, COPIED, L1_OFFSET, L2_OFFSET};
use super::validation::{self, ClusterRef};
use super::Qcow2;

/// Most clusters one allocation step takes at once (the plan lives in the request's future,
/// so it stays small: 16 clusters is 1 MiB of 64 KiB clusters per step).
const MAX_GROUP: usize = 16;

/// What a cluster about to be written needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// A new host cluster; `old` is what the entry held.
    Fresh(Old),
    /// The node owns this host cluster already (a preallocated zero cluster, subclusters not
    /// yet allocated, or a cluster the file ends inside): write into it.
    Owned { host: u64, zero: bool },
}

/// The old contents of an entry that gets a new host cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Old {
    /// Unallocated (reads through to the backing file); with subclusters, `bitmap` keeps its
    /// zero bits.
    Unallocated { bitmap: u64 },
    /// Reads as zeros; `host` is a preallocated cluster the node does not own alone.
    Zero { host: Option<u64> },
    /// A data cluster shared with a snapshot.
    Shared { host: u64 },
    /// Compressed data.
    Compressed { host: u64, csize: u64 },
}

/// An allocating write between its plan and its commit: where its entries are and what it
/// covers. Small on purpose (it is moved with the plan): the commit reads the entries again —
/// nothing changes them meanwhile, the write serialises over their clusters — and derives the
/// new ones exactly as the plan did.
#[derive(Debug)]
pub struct Pending {
    /// Guest offset of the first cluster.
    first: u64,
    /// Host offset of the first cluster.
    host: u64,
    /// Clusters.
    count: usize,
    /// The L2 slice and the first entry's byte in it.
    slice: u64,
    skip: usize,
    /// Where the first entry lies in the file.
    entry_at: u64,
    /// The guest bytes written: `[pos, stop)`.
    pos: u64,
    stop: u64,
}

impl Qcow2 {
    /// The file child of qcow2 node `node`.
    pub(crate) fn file(io: &Io<'_, '_>, node: NodeId) -> Result<NodeId> {
        io.node(node)?.child(Role::File).ok_or(Error::BadGraph("qcow2 node without a file child"))
    }

    /// Starts a write or range operation: the image marked dirty if it uses lazy refcounts, and
    /// a tracked request serialising over the whole clusters of the range — from the start, so
    /// overlapping writes run in the order they were issued, whole, as if one after another.
    pub(crate) async fn begin<'g>(&self, io: &Io<'g, '_>, node: NodeId, kind: ReqKind, offset: u64, len: u64) -> Result<Option<Tracked<'g>>> {
        self.check_writable()?;
        let file = Self::file(io, node)?;
        self.mark_dirty(io, file).await?;
        let tracked = io.format_tracker.begin(node, kind, offset, len).await;
        tracked.serialise(self.cluster_size());
        tracked.wait_serialising().await;
        Ok(Some(tracked))
    }

    /// How to write the next at most `len` bytes at guest `pos` (under [`Qcow2::begin`]).
    pub(crate) async fn plan(&self, io: &Io<'_, '_>, node: NodeId, pos: u64, len: u64) -> Result<WritePlan<Pending>> {
        if let Mapping::Data { role, offset: host, len: n, writable: true } = self.map(io, node, pos, len).await? {
            let n = n.min(len);
            return Ok(WritePlan::Child { role, offset: host, len: n, grow_to: host + n });
        }
        let file = Self::file(io, node)?;
        self.plan_allocation(io, node, file, pos, len).await
    }

    /// Plans the start of a write of `len` bytes at `pos` where it needs allocation: at least
    /// one cluster, at most [`MAX_GROUP`] contiguous ones.
    async fn plan_allocation(&self, io: &Io<'_, '_>, node: NodeId, file: NodeId, pos: u64, len: u64) -> Result<WritePlan<Pending>> {
        let cs = self.cluster_size();
        let first = pos & !(cs - 1);
        let end = pos + len;
        let l2 = self.l2_for_write(io, node, file, pos).await?;
        // The entries from `first` on, within one cache slice of the table.
        let esize = self.l2_entry_size();
        let slice_len = self.slice_len() as u64;
        let entry_at = l2 + ((pos >> self.cluster_bits) % self.l2_entries()) * esize;
        let slice = entry_at / slice_len * slice_len;
        let wanted = ((end - first).div_ceil(cs)).min((slice + slice_len - entry_at) / esize).min(MAX_GROUP as u64) as usize;
        let mut old = [(0u64, 0u64); MAX_GROUP];
        let skip = (entry_at - slice) as usize;
        io.meta
            .with_slice(io, file, slice, slice_len as usize, |s| {
                for (i, e) in old.iter_mut().enumerate().take(wanted) {
                    *e = l2_words(s, skip + i * esize as usize, self.extended_l2);
                }
            })
            .await?;
        let mut needs = [Need::Fresh(Old::Zero { host: None }); MAX_GROUP];
        for i in 0..wanted {
            let (e, bitmap) = old[i];
            needs[i] = self.need(e, bitmap, GuestOffset(first + i as u64 * cs), entry_at + i as u64 * esize)?;
        }
        // A run of fresh clusters, or one owned cluster.
        let mut count = match needs[0] {
            Need::Owned { .. } => 1,
            Need::Fresh(_) => needs[..wanted].iter().take_while(|n| matches!(n, Need::Fresh(_))).count(),
        };
        let (host, fresh) = match needs[0] {
            Need::Owned { host, .. } => (host, false),
            // In the data file, at the guest offset: no host cluster to take (`data_file.rs`).
            Need::Fresh(_) if self.data_file => self.data_file_clusters(io, node, first)?,
            Need::Fresh(_) => {
                io.event(node, Event::ClusterAlloc).await?;
                let _lock = self.alloc_lock().await;
                let fresh = self.w.fresh_from.get();
                let (host, got) = self.alloc_clusters(io, node, file, count as u64, false).await?;
                count = got as usize;
                (host, host >= fresh)
            }
        };
        let stop = end.min(first + count as u64 * cs);
        let (mut head, mut tail) = (None, None);
        for i in 0..count {
            let gi = first + i as u64 * cs;
            let (lo, hi) = (pos.max(gi), stop.min(gi + cs));
            let (cow_lo, cow_hi, _) = self.cow_span(needs[i], old[i].1, gi, lo, hi);
            let zeros = matches!(needs[i], Need::Owned { zero: true, .. } | Need::Fresh(Old::Zero { .. }));
            let host_i = host + i as u64 * cs;
            let span = |from: u64, to: u64| (from < to).then_some(Cow { guest: from, host: host_i + (from - gi), len: to - from, zeros });
            // Only the first cluster starts before the data and only the last ends after it.
            match (span(cow_lo, lo), i) {
                (Some(c), 0) => head = Some(c),
                (Some(_), _) => return Err(Error::BadGraph("copy-on-write inside a write")),
                (None, _) => {}
            }
            match (span(hi, cow_hi), i + 1 == count) {
                (Some(c), true) => tail = Some(c),
                (Some(_), false) => return Err(Error::BadGraph("copy-on-write inside a write")),
                (None, _) => {}
            }
        }
        let data_host = host + (pos - first);
        let allocation = Allocation {
            role: if self.data_file { Role::DataFile } else { Role::File },
            guest: pos,
            len: stop - pos,
            host: data_host,
            head,
            tail,
            fresh,
            grow_to: host + count as u64 * cs,
        };
        Ok(WritePlan::Allocate(allocation, Pending { first, host, count, slice, skip, entry_at, pos, stop }))
    }

    /// Makes an executed allocation visible: the L2 entries point at the new clusters, and the
    /// clusters they pointed at before are freed once that is stable.
    pub(crate) async fn commit(&self, io: &Io<'_, '_>, node: NodeId, p: Pending) -> Result<()> {
        let file = Self::file(io, node)?;
        let cs = self.cluster_size();
        let esize = self.l2_entry_size();
        // l2_update is raised when the slice is written back (io::cache), as QEMU's cache does.
        self.check_meta_write(io, file, p.entry_at, Class::Table).await?;
        let ext = self.extended_l2;
        let mut frees: heapless::Vec<PendingFree, MAX_GROUP> = heapless::Vec::new();
        io.meta
            .with_slice_mut(io, file, p.slice, self.slice_len(), Class::Table, |s| -> Result<()> {
                for i in 0..p.count.min(MAX_GROUP) {
                    let at = p.skip + i * esize as usize;
                    let (e, bitmap) = l2_words(s, at, ext);
                    let gi = p.first + i as u64 * cs;
                    let need = self.need(e, bitmap, GuestOffset(gi), p.entry_at + i as u64 * esize)?;
                    let (_, _, new_bitmap) = self.cow_span(need, bitmap, gi, p.pos.max(gi), p.stop.min(gi + cs));
                    let new = (p.host + i as u64 * cs) | COPIED;
                    set_l2_words(s, at, ext, new, new_bitmap).ok_or(Error::BadGraph("L2 entry across a slice"))?;
                    if let Some(f) = self.freed_by(need) {
                        let _ = frees.push(f); // at most one per entry
                    }
                }
                Ok(())
            })
            .await??;
        for free in &frees {
            self.free_later(io, node, *free).await?;
        }
        Ok(())
    }

    /// What the cluster described by `entry` (and `bitmap`) at guest `guest` needs for a write.
    fn need(&self, entry: u64, bitmap: u64, guest: GuestOffset, at: u64) -> Result<Need> {
        let host_bits = entry & L2_OFFSET;
        Ok(match decode_l2(self, entry, bitmap, guest, at)? {
            Entry::Unallocated { bitmap } => Need::Fresh(Old::Unallocated { bitmap }),
            Entry::Zero if host_bits != 0 && entry & COPIED != 0 => Need::Owned { host: host_bits, zero: true },
            Entry::Zero => Need::Fresh(Old::Zero { host: (host_bits != 0).then_some(host_bits) }),
            Entry::Normal { host, copied: true, .. } => Need::Owned { host: host.0, zero: false },
            Entry::Normal { host, copied: false, .. } => Need::Fresh(Old::Shared { host: host.0 }),
            Entry::Compressed { host, csize } => Need::Fresh(Old::Compressed { host: host.0, csize }),
        })
    }

    /// For a cluster at guest `gi` written over `[lo, hi)`: the range to fill around it
    /// (`[cow_lo, lo)` and `[hi, cow_hi)`) and the new subcluster bitmap (extended L2).
    fn cow_span(&self, need: Need, old_bitmap: u64, gi: u64, lo: u64, hi: u64) -> (u64, u64, u64) {
        let cs = self.cluster_size();
        if !self.extended_l2 {
            return match need {
                // An owned data cluster the file ends inside: the rest of it is already there.
                Need::Owned { zero: false, .. } => (lo, hi, 0),
                _ => (gi, gi + cs, 0),
            };
        }
        let sc = cs / 32;
        let (s0, s1) = ((lo - gi) / sc, (hi - 1 - gi) / sc);
        let touched = ((1u64 << (s1 + 1)) - 1) & !((1u64 << s0) - 1);
        let sub_lo = gi + s0 * sc;
        let sub_hi = gi + (s1 + 1) * sc;
        match need {
            Need::Fresh(Old::Unallocated { bitmap }) => (sub_lo, sub_hi, touched | ((bitmap >> 32) & !touched) << 32),
            Need::Owned { zero: false, .. } => {
                // Allocated subclusters at the edges hold data already: no copy there.
                let alloc = old_bitmap & 0xffff_ffff;
                let a = if alloc & (1 << s0) != 0 { lo } else { sub_lo };
                let b = if alloc & (1 << s1) != 0 { hi } else { sub_hi };
                (a, b, (alloc | touched) | (((old_bitmap >> 32) & !touched) << 32))
            }
            // Zero, shared or compressed: the new cluster holds everything.
            _ => (gi, gi + cs, 0xffff_ffff),
        }
    }

    /// The host cluster an entry stops referencing when it gets a new one (none in a data
    /// file: the new cluster is the old one, at the guest offset).
    fn freed_by(&self, need: Need) -> Option<PendingFree> {
        if self.data_file {
            return None;
        }
        let cs = self.cluster_size();
        match need {
            Need::Fresh(Old::Shared { host }) | Need::Fresh(Old::Zero { host: Some(host) }) => Some(PendingFree { host, len: cs, discard: false }),
            Need::Fresh(Old::Compressed { host, csize }) => Some(PendingFree { host, len: csize, discard: false }),
            _ => None,
        }
    }

    /// The L2 table covering guest `pos`, owned by this node alone: allocated (zeroed) if the L1
    /// entry is empty, copied if it is shared with a snapshot (QEMU's `get_cluster_table` with
    /// `l2_allocate`). The L1 entry changes in the cache, written after the table is stable.
    pub(crate) async fn l2_for_write(&self, io: &Io<'_, '_>, node: NodeId, file: NodeId, pos: u64) -> Result<u64> {
        let cs = self.cluster_size();
        let l1_index = (pos >> self.cluster_bits) / self.l2_entries();
        if l1_index >= u64::from(self.l1_entries.get()) {
            return Err(Error::OutOfRange { offset: pos, len: 0, size: self.size() });
        }
        let slice_len = self.slice_len();
        let l1_at = self.l1.get().start + l1_index * 8;
        let read_entry = || io.meta.read_u64(io, file, l1_at, slice_len);
        let entry = read_entry().await?;
        if entry & COPIED != 0 && decode_l1(entry, l1_at)?.is_some() {
            return Ok(entry & L1_OFFSET);
        }
        let _lock = self.alloc_lock().await;
        // Another request may have done it while this one waited for the lock.
        let entry = read_entry().await?;
        let old = decode_l1(entry, l1_at)?;
        if let Some(t) = old {
            validation::cluster_ref(t.0, cs, child_io::size(io, file)?, &self.meta.get(), l1_at, ClusterRef::L2Table)?;
            if entry & COPIED != 0 {
                return Ok(t.0);
            }
        }
        let fresh = self.w.fresh_from.get();
        let (table, _) = self.alloc_clusters(io, node, file, 1, true).await?;
        if old.is_some() {
            io.event(node, Event::L2AllocCowRead).await?;
        }
        io.event(node, Event::L2AllocWrite).await?;
        match old {
            Some(shared) => self.copy_bytes(io, file, shared.0, table, cs).await?,
            None if table < fresh => self.zero_cluster(io, file, table).await?,
            None => {}
        }
        io.event(node, Event::L1Update).await?;
        self.check_meta_write(io, file, l1_at, Class::Table).await?;
        // Before the entry exists: a lookup from now on reads the table.
        if self.l1_empty.replace(false) {
            io.shape_changed();
        }
        // Before and after: a lookup that read the entry while the write waited for its slice
        // may have seen the old value; it must not be remembered either way.
        self.l1_changed();
        io.meta.write_u64(io, file, l1_at, slice_len, Class::Table, table | COPIED).await?;
        self.l1_changed();
        if let Some(shared) = old {
            self.free_later(io, node, PendingFree { host: shared.0, len: cs, discard: false }).await?;
        }
        Ok(table)
    }

    /// Makes host cluster `at` read as zeros (a write-zeroes the device can offload).
    pub(crate) async fn zero_cluster(&self, io: &Io<'_, '_>, file: NodeId, at: u64) -> Result<()> {
        child_io::write_zeroes(io, file, at, self.cluster_size()).await
    }
}

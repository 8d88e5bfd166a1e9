//! Guest writes, as plan → execute → commit (QEMU's `qcow2_co_pwritev_part`,
//! `qcow2_alloc_host_offset`, `perform_cow`, `qcow2_alloc_cluster_link_l2`).
//!
//! A write holds one serialising tracked request at the qcow2 node over the whole clusters of its
//! range, so overlapping requests run in issue order and none interleaves with an allocation (a
//! later reader waits for the commit). Where the mapping is `writable` (the node owns the
//! cluster alone) the data goes in place. Anywhere else, per run of clusters:
//! - **plan**: the L2 table (allocated, or copied from one shared with a snapshot) and the entries;
//!   clusters that need a new host cluster are grouped and allocated contiguously;
//! - **execute**: copy-on-write of the parts of the first and last cluster the write does not
//!   cover, from what the node reads there now (backing chain, its own compressed or shared
//!   cluster, zeros) through one bounce buffer, and the guest data; with extended L2 only the
//!   partly written subclusters are copied;
//! - **commit**: the L2 entries change in the cache (written back after a flush, DESIGN.md rule
//!   2), and clusters no longer referenced go on the pending-free list.
//!
//! A write that fails or is dropped after allocating leaks the clusters it took (as QEMU's);
//! nothing points at them.

use crate::driver::Mapping;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Role};
use crate::io::events::Event;
use crate::io::tracked::{ReqKind, Tracked};
use crate::io::{child_io, walk};

use super::cache::Class;
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

impl Qcow2 {
    /// The file child of qcow2 node `node`.
    pub(crate) fn file<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, node: NodeId) -> Result<NodeId> {
        graph.node(node)?.child(Role::File).ok_or(Error::BadGraph("qcow2 node without a file child"))
    }

    /// Writes `buf` at guest `offset` of node `node`.
    pub(crate) async fn write<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        let file = Self::file(graph, node)?;
        self.mark_dirty(graph, file).await?;
        let tracked = graph.format_tracker.begin(node, ReqKind::Write, offset, buf.len() as u64).await;
        // Serialising from the start, over whole clusters: overlapping writes run in the order
        // they were issued, whole, as if one after another — also when one of them allocates
        // halfway through (a write that became serialising only then would interleave with a
        // later one that had started meanwhile).
        tracked.serialise(self.cluster_size());
        tracked.wait_serialising().await;
        self.write_tracked(graph, node, file, offset, buf, &tracked).await
    }

    /// [`Qcow2::write`] under the caller's tracked request (write-zeroes falls back to it).
    pub(crate) async fn write_tracked<const N: usize, const T: usize>(
        &self,
        graph: &Graph<'_, N, T>,
        node: NodeId,
        file: NodeId,
        offset: u64,
        buf: &[u8],
        tracked: &Tracked<'_, T>,
    ) -> Result<()> {
        let mut serialised = tracked.is_serialising();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let rest = &buf[done..];
            if let Mapping::Data { offset: host, len, writable: true, .. } = self.map(graph, node, pos, rest.len() as u64).await? {
                let n = len.min(rest.len() as u64) as usize;
                child_io::grow(graph, file, host + n as u64)?;
                child_io::write(graph, file, host, &rest[..n]).await?;
                done += n;
                continue;
            }
            if !serialised {
                tracked.serialise(self.cluster_size());
                tracked.wait_serialising().await;
                serialised = true;
                continue; // what it maps to may have changed while waiting
            }
            done += self.allocating_write(graph, node, file, pos, rest).await?;
        }
        Ok(())
    }

    /// Writes the start of `data` at `pos` where it needs allocation; returns the bytes done (at
    /// least one). The caller's tracked request serialises the clusters.
    async fn allocating_write<const N: usize, const T: usize>(
        &self,
        graph: &Graph<'_, N, T>,
        node: NodeId,
        file: NodeId,
        pos: u64,
        data: &[u8],
    ) -> Result<usize> {
        let cs = self.cluster_size();
        let first = pos & !(cs - 1);
        let end = pos + data.len() as u64;
        let l2 = self.l2_for_write(graph, node, file, pos).await?;
        // The entries from `first` on, within one cache slice of the table.
        let esize = self.l2_entry_size();
        let slice_len = self.slice_len() as u64;
        let entry_at = l2 + ((pos >> self.cluster_bits) % self.l2_entries()) * esize;
        let slice = entry_at / slice_len * slice_len;
        let wanted = ((end - first).div_ceil(cs)).min((slice + slice_len - entry_at) / esize).min(MAX_GROUP as u64) as usize;
        let mut raw = [(0u64, 0u64); MAX_GROUP];
        let skip = (entry_at - slice) as usize;
        graph
            .meta
            .with_slice(graph, file, slice, slice_len as usize, |s| {
                for (i, e) in raw.iter_mut().enumerate().take(wanted) {
                    *e = l2_words(s, skip + i * esize as usize, self.extended_l2);
                }
            })
            .await?;
        let mut needs = [Need::Fresh(Old::Zero { host: None }); MAX_GROUP];
        for i in 0..wanted {
            let (e, bitmap) = raw[i];
            needs[i] = self.need(e, bitmap, GuestOffset(first + i as u64 * cs), entry_at + i as u64 * esize)?;
        }
        // A run of fresh clusters, or one owned cluster.
        let mut count = match needs[0] {
            Need::Owned { .. } => 1,
            Need::Fresh(_) => needs[..wanted].iter().take_while(|n| matches!(n, Need::Fresh(_))).count(),
        };
        let (host, fresh) = match needs[0] {
            Need::Owned { host, .. } => {
                child_io::grow(graph, file, host + cs)?;
                (host, false)
            }
            Need::Fresh(_) => {
                graph.event(node, Event::ClusterAlloc)?;
                let _lock = self.alloc_lock().await;
                let fresh = self.w.fresh_from.get();
                let (host, got) = self.alloc_clusters(graph, node, file, count as u64, false).await?;
                count = got as usize;
                (host, host >= fresh)
            }
        };
        let group_end = first + count as u64 * cs;
        let stop = end.min(group_end);
        // Execute: copy-on-write around the data, then the data.
        let mut bitmaps = [0u64; MAX_GROUP];
        for i in 0..count {
            let gi = first + i as u64 * cs;
            let (lo, hi) = (pos.max(gi), stop.min(gi + cs));
            let (cow_lo, cow_hi, bitmap) = self.cow_span(needs[i], raw[i].1, gi, lo, hi);
            bitmaps[i] = bitmap;
            let host_i = host + i as u64 * cs;
            let zero_src = matches!(needs[i], Need::Owned { zero: true, .. } | Need::Fresh(Old::Zero { .. }));
            self.copy_on_write(graph, node, file, cow_lo, lo, host_i + (cow_lo - gi), zero_src, fresh).await?;
            self.copy_on_write(graph, node, file, hi, cow_hi, host_i + (hi - gi), zero_src, fresh).await?;
        }
        let n = (stop - pos) as usize;
        graph.event(node, Event::WriteAio)?;
        child_io::write(graph, file, host + (pos - first), &data[..n]).await?;
        // Commit.
        graph.event(node, Event::L2Update)?;
        self.check_meta_write(graph, file, entry_at, Class::Table).await?;
        let ext = self.extended_l2;
        let changed = graph
            .meta
            .with_slice_mut(graph, file, slice, slice_len as usize, Class::Table, |s| {
                for i in 0..count {
                    let at = skip + i * esize as usize;
                    if l2_words(s, at, ext).0 != raw[i].0 {
                        return false;
                    }
                    let new = (host + i as u64 * cs) | COPIED;
                    if set_l2_words(s, at, ext, new, bitmaps[i]).is_none() {
                        return false;
                    }
                }
                true
            })
            .await?;
        if !changed {
            return Err(Error::BadGraph("an L2 entry changed under a serialised write"));
        }
        for need in &needs[..count] {
            if let Some(free) = self.freed_by(*need) {
                self.free_later(graph, node, free).await?;
            }
        }
        Ok(n)
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

    /// Fills host bytes from `host` on with what the node reads at guest `[from, to)` now (the
    /// copy-on-write source), or with zeros if `zero_src`. Skipped where the source reads as
    /// zeros and the host cluster is `fresh` (never written: reads as zeros already).
    #[allow(clippy::too_many_arguments)] // reason: one call shape, used twice per cluster
    async fn copy_on_write<const N: usize, const T: usize>(
        &self,
        graph: &Graph<'_, N, T>,
        node: NodeId,
        file: NodeId,
        from: u64,
        to: u64,
        host: u64,
        zero_src: bool,
        fresh: bool,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let zeros = zero_src || self.reads_zero(graph, node, from, to).await?;
        if zeros && fresh {
            return Ok(());
        }
        if zeros {
            // One request the device can offload (QEMU does the same: a zero copy-on-write is a
            // write-zeroes), not the zeros themselves.
            graph.event(node, Event::CowWrite)?;
            return child_io::write_zeroes(graph, file, host, to - from).await;
        }
        let mut bounce = graph.bounce.take_for_copy().await?;
        let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(buf.len());
            let chunk = &mut buf[..n];
            graph.event(node, Event::CowRead)?;
            walk::read(graph, node, at, chunk).await?;
            graph.event(node, Event::CowWrite)?;
            child_io::write(graph, file, host + (at - from), chunk).await?;
            at += n as u64;
        }
        Ok(())
    }

    /// True if guest `[from, to)` of `node` reads as zeros by its metadata (zero clusters,
    /// nothing allocated down the chain), looking at a bounded number of extents.
    pub(crate) async fn reads_zero<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, from: u64, to: u64) -> Result<bool> {
        let mut at = from;
        for _ in 0..16 {
            if at >= to {
                return Ok(true);
            }
            let e = walk::block_status(graph, node, at, to - at).await?;
            if !matches!(e.kind, walk::ExtentKind::Zero | walk::ExtentKind::Hole) {
                return Ok(false);
            }
            at += e.len;
        }
        Ok(at >= to)
    }

    /// The host cluster an entry stops referencing when it gets a new one.
    fn freed_by(&self, need: Need) -> Option<PendingFree> {
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
    pub(crate) async fn l2_for_write<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, node: NodeId, file: NodeId, pos: u64) -> Result<u64> {
        let cs = self.cluster_size();
        let l1_index = (pos >> self.cluster_bits) / self.l2_entries();
        if l1_index >= u64::from(self.l1_entries.get()) {
            return Err(Error::OutOfRange { offset: pos, len: 0, size: self.size() });
        }
        let slice_len = self.slice_len();
        let l1_at = self.l1.get().start + l1_index * 8;
        let read_entry = || graph.meta.read_u64(graph, file, l1_at, slice_len);
        let entry = read_entry().await?;
        if entry & COPIED != 0 && decode_l1(entry, l1_at)?.is_some() {
            return Ok(entry & L1_OFFSET);
        }
        let _lock = self.alloc_lock().await;
        // Another request may have done it while this one waited for the lock.
        let entry = read_entry().await?;
        let old = decode_l1(entry, l1_at)?;
        if let Some(t) = old {
            validation::cluster_ref(t.0, cs, child_io::size(graph, file)?, &self.meta.get(), l1_at, ClusterRef::L2Table)?;
            if entry & COPIED != 0 {
                return Ok(t.0);
            }
        }
        let fresh = self.w.fresh_from.get();
        let (table, _) = self.alloc_clusters(graph, node, file, 1, true).await?;
        if old.is_some() {
            graph.event(node, Event::L2AllocCowRead)?;
        }
        graph.event(node, Event::L2AllocWrite)?;
        match old {
            Some(shared) => self.copy_bytes(graph, file, shared.0, table, cs).await?,
            None if table < fresh => self.zero_cluster(graph, file, table).await?,
            None => {}
        }
        graph.event(node, Event::L1Update)?;
        self.check_meta_write(graph, file, l1_at, Class::Table).await?;
        graph.meta.write_u64(graph, file, l1_at, slice_len, Class::Table, table | COPIED).await?;
        if let Some(shared) = old {
            self.free_later(graph, node, PendingFree { host: shared.0, len: cs, discard: false }).await?;
        }
        Ok(table)
    }

    /// Makes host cluster `at` read as zeros (a write-zeroes the device can offload).
    pub(crate) async fn zero_cluster<const N: usize, const T: usize>(&self, graph: &Graph<'_, N, T>, file: NodeId, at: u64) -> Result<()> {
        child_io::write_zeroes(graph, file, at, self.cluster_size()).await
    }
}

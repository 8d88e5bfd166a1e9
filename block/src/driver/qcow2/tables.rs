//! The two-level mapping (`qcow2.txt`, "Cluster mapping"): L1 entries name L2 tables, L2
//! entries describe guest clusters. Entries are read through the metadata cache, checked
//! (alignment, reserved bits, end of file, data-file identity; the rest in [`super::entry_rules`]), and runs of
//! clusters (or subclusters) of one kind with contiguous host offsets are merged into one
//! extent, within one cache slice.

use crate::driver::{Kept, Mapping};
use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{NodeId, Role};

pub use super::entry_bits::{COMPRESSED, COPIED, L1_OFFSET, L1_RESERVED, L2_OFFSET, L2_RESERVED, ZERO};
use super::entry_rules;
use super::subclusters::{self, Sub};
use super::validation::{self, ClusterRef};
use super::Qcow2;

/// A byte offset in the virtual disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestOffset(pub u64);

/// A byte offset in the image file (or the external data file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostOffset(pub u64);

/// What an L2 entry says about its guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// No host cluster; with subclusters, the bitmap may still mark zeros.
    Unallocated {
        /// Subcluster bitmap (0 without subclusters).
        bitmap: u64,
    },
    /// Reads as zeros (standard entries' zero flag), preallocated or not.
    Zero,
    /// A host cluster.
    Normal {
        /// Its offset.
        host: HostOffset,
        /// Refcount exactly one.
        copied: bool,
        /// Subcluster bitmap (all allocated without subclusters).
        bitmap: u64,
    },
    /// Compressed data.
    Compressed {
        /// First byte of the compressed data.
        host: HostOffset,
        /// Bytes the descriptor covers.
        csize: u64,
    },
}

/// The raw L2 entry (and subcluster bitmap with `extended`) at byte `at` of a table slice;
/// zeros where the slice ends.
pub fn l2_words(s: &[u8], at: usize, extended: bool) -> (u64, u64) {
    let word = |k: usize| s.get(at + k..at + k + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
    (word(0), if extended { word(8) } else { 0 })
}

/// Stores an L2 entry (and with `extended` its bitmap) at byte `at` of a table slice; `None` if
/// it does not fit.
pub fn set_l2_words(s: &mut [u8], at: usize, extended: bool, entry: u64, bitmap: u64) -> Option<()> {
    s.get_mut(at..at + 8)?.copy_from_slice(&entry.to_be_bytes());
    if extended {
        s.get_mut(at + 8..at + 16)?.copy_from_slice(&bitmap.to_be_bytes());
    }
    Some(())
}

/// Decodes an L1 entry stored at `at`: the L2 table's offset, or `None` if unallocated.
pub fn decode_l1(entry: u64, at: u64) -> Result<Option<HostOffset>> {
    if entry & L1_RESERVED != 0 {
        return Err(Error::Corrupt { what: "L1 entry: reserved bits set", offset: at });
    }
    let off = entry & L1_OFFSET;
    Ok((off != 0).then_some(HostOffset(off)))
}

/// Decodes an L2 entry (and bitmap) of `q` stored at `at`, describing guest cluster `guest`.
#[inline(always)]
pub fn decode_l2(q: &Qcow2, entry: u64, bitmap: u64, guest: GuestOffset, at: u64) -> Result<Entry> {
    let corrupt = |what| Err(Error::Corrupt { what, offset: at });
    if entry & COMPRESSED != 0 {
        if q.data_file {
            return corrupt("L2 entry: compressed cluster in an image with an external data file");
        }
        let shift = 62 - (u32::from(q.cluster_bits) - 8);
        let host = entry & ((1u64 << shift) - 1);
        if host >> 56 != 0 {
            return corrupt("L2 entry: compressed cluster offset beyond 2^56");
        }
        let sectors = ((entry >> shift) & ((1u64 << (u32::from(q.cluster_bits) - 8)) - 1)) + 1;
        let csize = sectors * 512 - (host & 511);
        entry_rules::compressed(entry, bitmap, q, at)?;
        return Ok(Entry::Compressed { host: HostOffset(host), csize });
    }
    if entry & L2_RESERVED != 0 {
        return corrupt("L2 entry: reserved bits set");
    }
    entry_rules::zero_flag(entry, q, at)?;
    let copied = entry & COPIED != 0;
    let off = entry & L2_OFFSET;
    if !q.extended_l2 && entry & ZERO != 0 {
        if !off.is_multiple_of(q.cluster_size()) {
            return corrupt("L2 entry: preallocated zero cluster offset not cluster-aligned");
        }
        if off != 0 {
            // A preallocation is written in place by a later guest write.
            entry_rules::host_cluster(off, q, at)?;
        }
        return Ok(Entry::Zero);
    }
    let allocated = off != 0 || (q.data_file && copied);
    if !allocated {
        entry_rules::no_host(entry, q, at)?;
        if q.extended_l2 {
            subclusters::check_unallocated(bitmap, at)?;
        }
        return Ok(Entry::Unallocated { bitmap });
    }
    if off & (q.cluster_size() - 1) != 0 {
        return corrupt("L2 entry: data cluster offset not cluster-aligned");
    }
    entry_rules::host_cluster(off, q, at)?;
    if q.data_file && off != guest.0 {
        return corrupt("L2 entry: external data file offset differs from the guest offset");
    }
    let bitmap = if q.extended_l2 {
        subclusters::check_allocated(bitmap, at)?;
        bitmap
    } else {
        0xffff_ffff
    };
    Ok(Entry::Normal { host: HostOffset(off), copied, bitmap })
}

/// One run of a scan, before it becomes a [`Mapping`]. `host` and `kept` are host offsets of
/// the run's first byte (`kept`: a zero or unallocated run's host cluster, see [`Kept`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Data { host: u64, writable: bool },
    Zero { kept: Option<u64> },
    Unallocated { kept: Option<u64> },
}

impl Run {
    /// Whether `next`, found `gap` bytes after this run's start, continues it: the same kind,
    /// and host offsets (where there are) `gap` bytes on.
    fn continued_by(self, next: Run, gap: u64) -> bool {
        let follows = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.checked_add(gap) == Some(b),
            _ => false,
        };
        match (self, next) {
            (Run::Data { host, writable }, Run::Data { host: h, writable: w }) => writable == w && follows(Some(host), Some(h)),
            (Run::Zero { kept: a }, Run::Zero { kept: b }) | (Run::Unallocated { kept: a }, Run::Unallocated { kept: b }) => follows(a, b),
            _ => false,
        }
    }
}

/// What [`Qcow2::scan`] found: a run of `len` bytes, or a compressed cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Run(Run, u64),
    Compressed { host: u64, csize: u64, skip: u64, len: u64 },
}

/// Where [`Qcow2::map`]'s lookup starts: see [`Qcow2::start`].
enum Start {
    /// No L1 entry covers the range: this many bytes are unallocated.
    Unallocated(u64),
    At(LookupAt),
}

/// The node's children and the table positions for one lookup.
struct LookupAt {
    file: NodeId,
    data: NodeId,
    data_role: Role,
    /// File offset of the L1 entry.
    l1_at: u64,
    /// Index of the entry in its L2 table.
    l2_index: u64,
    /// Bytes the L2 table covers from the offset (at most the length asked for).
    len: u64,
}

/// The mapping a scan found, with data clusters checked against `eof`, the size of the file
/// they live in (`data_role`).
#[inline(always)]
fn finish(found: Found, eof: u64, data_role: Role) -> Mapping {
    match found {
        Found::Compressed { host, csize, skip, len } => Mapping::Compressed { host_offset: host, csize, skip, len },
        Found::Run(Run::Zero { kept }, n) => Mapping::Zero { len: n, kept: kept.map(|offset| Kept { role: data_role, offset }) },
        Found::Run(Run::Unallocated { kept }, n) => Mapping::Unallocated { len: n, kept: kept.map(|offset| Kept { role: data_role, offset }) },
        Found::Run(Run::Data { host, writable }, n) => {
            // A cluster the file ends inside reads as zeros past the end (QEMU writes such
            // images); clusters starting past the end were refused by the scan.
            if host >= eof {
                Mapping::Zero { len: n, kept: None }
            } else {
                Mapping::Data { role: data_role, offset: host, len: n.min(eof - host), writable }
            }
        }
    }
}

/// The host offset `skip` bytes into a standard zero cluster whose L2 entry is `word`, if the
/// cluster is preallocated (QEMU's `QCOW2_SUBCLUSTER_ZERO_ALLOC`).
fn zero_kept(word: u64, skip: u64) -> Option<u64> {
    let host = word & L2_OFFSET;
    (host != 0).then_some(host + skip)
}

impl Qcow2 {
    /// How much of `len` bytes at `offset` one lookup answers: up to the end of the L2 table
    /// covering `offset`.
    pub(crate) fn lookup_len(&self, offset: u64, len: u64) -> u64 {
        // Tables span a power of two: masks, not divisions, on every request.
        let span_mask = (1u64 << (u32::from(self.cluster_bits) + self.l2_bits())) - 1;
        let table_end = (offset | span_mask).saturating_add(1);
        len.min(table_end - offset)
    }

    /// Forgets the remembered L1 entry (`last_l1`): an L1 entry or the L1 table changed.
    pub(crate) fn l1_changed(&self) {
        self.l1_changes.set(self.l1_changes.get() + 1);
    }

    /// Maps `len` bytes at `offset` (inside the node) of qcow2 node `node`.
    pub(crate) async fn map(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        // From memory when it can (write planning, zeroing and block status call this directly).
        if let Some(mapping) = self.map_cached(io, node, offset, len) {
            return Ok(mapping);
        }
        let want = len;
        let at = match self.start(io, node, offset, len)? {
            Start::Unallocated(len) => return Ok(Mapping::Unallocated { len, kept: None }),
            Start::At(at) => at,
        };
        // File sizes are read after each await, never before: a concurrent write may grow the
        // file and point a table at the new space while this lookup waits for a slice.
        let size_of = |n: NodeId| io.node(n).map(|n| n.size());
        let slice_len = self.slice_len();
        let changes = self.l1_changes.get();
        let l2 = match self.remembered_l2(at.l1_at) {
            Some(l2) => l2,
            None => {
                let l1_entry = io.meta.read_u64(io, at.file, at.l1_at, slice_len).await?;
                let Some(l2) = decode_l1(l1_entry, at.l1_at)? else {
                    let len = self.unallocated_l1_run(io, at.file, at.l1_at, offset, want).await?;
                    return Ok(Mapping::Unallocated { len, kept: None });
                };
                validation::cluster_ref(l2.0, self.cluster_size(), size_of(at.file)?, &self.meta.get(), at.l1_at, ClusterRef::L2Table)?;
                // Kept only if no L1 change came while the entry was read.
                self.last_l1.set(Some((at.l1_at, l2.0, changes)));
                l2
            }
        };
        let (slice_start, skip, entry_at) = self.l2_slice(l2, at.l2_index);
        let found = io
            .meta
            .with_slice(io, at.file, slice_start, slice_len, |s| {
                self.scan(s.get(skip..).unwrap_or(&[]), entry_at, offset, at.len, size_of(at.data)?)
            })
            .await??;
        Ok(finish(found, size_of(at.data)?, at.data_role))
    }

    /// [`Qcow2::map`] answered from memory alone, with no I/O and no await: the remembered L1
    /// entry and a cached L2 slice. Most reads of a warm image end here, which spares the walk
    /// an asynchronous call per request. `None` if anything it needs is not in memory or looks
    /// wrong: `map` then reads what it needs and judges it (and reports the error).
    pub(crate) fn map_cached(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<Mapping> {
        let cs = self.cluster_size();
        let one_cluster = len != 0 && len <= cs - (offset & (cs - 1));
        if one_cluster && !self.data_file && !self.extended_l2 {
            return self.map_cached_plain(io, node, offset, len);
        }
        self.map_cached_any(io, node, offset, len)
    }

    /// [`Qcow2::map_cached`] for any image and range.
    pub(super) fn map_cached_any(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<Mapping> {
        let at = match self.start(io, node, offset, len).ok()? {
            Start::Unallocated(len) => return Some(Mapping::Unallocated { len, kept: None }),
            Start::At(at) => at,
        };
        let l2 = self.remembered_l2(at.l1_at)?;
        let (slice_start, skip, entry_at) = self.l2_slice(l2, at.l2_index);
        let eof = io.node(at.data).ok()?.size();
        let found = io.meta.peek(at.file, slice_start, self.slice_len(), |s| {
            self.scan(s.get(skip..).unwrap_or(&[]), entry_at, offset, at.len, eof)
        })?;
        Some(finish(found.ok()?, eof, at.data_role))
    }

    /// Where a lookup of `len` bytes at `offset` of `node` starts: the node's children and the
    /// L1 entry and L2 index covering `offset`, or the answer already if no L1 entry can cover it.
    fn start(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Start> {
        let here = io.node(node)?;
        let file = here.child(Role::File).ok_or(Error::BadGraph("qcow2 node without a file child"))?;
        let (data_role, data) = if self.data_file {
            (Role::DataFile, here.child(Role::DataFile).ok_or(Error::BadGraph("qcow2 node without its data-file child"))?)
        } else {
            (Role::File, file)
        };
        let guest_cluster = offset >> self.cluster_bits;
        let l1_index = guest_cluster >> self.l2_bits();
        // Bytes this L2 table covers from `offset`.
        let len = self.lookup_len(offset, len);
        if l1_index >= u64::from(self.l1_entries.get()) || self.l1_empty.get() {
            return Ok(Start::Unallocated(len));
        }
        let l1_at = self.l1.get().start + l1_index * 8;
        Ok(Start::At(LookupAt { file, data, data_role, l1_at, l2_index: guest_cluster & (self.l2_entries() - 1), len }))
    }

    /// The answer for `len` bytes at `offset` inside the one cluster whose L2 entry, at file
    /// offset `entry_at` of a standard table without a data file, is `word`; `None` if the entry
    /// breaks a rule (the general lookup reports it). `eof`: the image file's size.
    pub(super) fn judge_one(&self, word: u64, entry_at: u64, offset: u64, len: u64, eof: u64) -> Option<Mapping> {
        let found = self.scan(&word.to_be_bytes(), entry_at, offset, len, eof).ok()?;
        Some(finish(found, eof, Role::File))
    }

    /// The L2 table the L1 entry at `l1_at` points to, if it is the remembered one and no L1
    /// change came since it was read.
    pub(super) fn remembered_l2(&self, l1_at: u64) -> Option<HostOffset> {
        match self.last_l1.get() {
            Some((at, table, seen)) if at == l1_at && seen == self.l1_changes.get() => Some(HostOffset(table)),
            _ => None,
        }
    }

    /// The cache slice holding entry `l2_index` of the L2 table at `l2`: its start, the entry's
    /// offset inside it, and the entry's file offset.
    pub(super) fn l2_slice(&self, l2: HostOffset, l2_index: u64) -> (u64, usize, u64) {
        // Slices are a power of two long (a cluster or 4 KiB).
        let slice_mask = self.slice_len() as u64 - 1;
        let entry_at = l2.0 + l2_index * self.l2_entry_size();
        let slice_start = entry_at & !slice_mask;
        (slice_start, (entry_at - slice_start) as usize, entry_at)
    }

    /// Bytes from `offset` to the end of the run of zero L1 entries starting with the one at
    /// file offset `l1_at` (which covers `offset`), at most `want`. Only entries in the same
    /// cached L1 slice are looked at, so block status over a sparse image takes one lookup per
    /// slice of the L1 table (512 entries), not one per entry.
    async fn unallocated_l1_run(&self, io: &Io<'_, '_>, file: NodeId, l1_at: u64, offset: u64, want: u64) -> Result<u64> {
        let first = self.lookup_len(offset, want);
        if first >= want {
            return Ok(first);
        }
        let span = self.l2_entries().saturating_mul(self.cluster_size());
        let slice_len = self.slice_len() as u64;
        let slice_start = l1_at / slice_len * slice_len;
        let table_end = self.l1.get().start + u64::from(self.l1_entries.get()) * 8;
        let scan_end = (slice_start + slice_len).min(table_end);
        let more = io
            .meta
            .with_slice(io, file, slice_start, slice_len as usize, |s| {
                let mut n = 0u64;
                let mut at = l1_at + 8;
                while at + 8 <= scan_end {
                    let i = (at - slice_start) as usize;
                    let Some(bytes) = s.get(i..i + 8) else { break };
                    let mut word = [0u8; 8];
                    word.copy_from_slice(bytes);
                    // Anything but a plain zero entry ends the run; its own lookup judges it.
                    if !matches!(decode_l1(u64::from_be_bytes(word), at), Ok(None)) {
                        break;
                    }
                    n += 1;
                    at += 8;
                }
                n
            })
            .await?;
        Ok(first.saturating_add(more.saturating_mul(span)).min(want))
    }

    /// Scans L2 `entries` (stored from file offset `at` on) for the longest run of one kind
    /// starting at guest byte `offset`, at most `len` bytes; data runs need contiguous host
    /// offsets. `eof` is the size of the file data clusters live in.
    #[inline(always)]
    fn scan(&self, entries: &[u8], at: u64, offset: u64, len: u64, eof: u64) -> Result<Found> {
        let cs = self.cluster_size();
        let unit_bits = if self.extended_l2 { u32::from(self.cluster_bits) - 5 } else { u32::from(self.cluster_bits) };
        let end = offset + len;
        let esize = self.l2_entry_size() as usize;
        let first_cluster = offset & !(cs - 1);
        // Inside one cluster without subclusters (reads and writes of a few KiB): one entry
        // gives the answer, as the loop below would.
        if !self.extended_l2 && entries.len() >= esize && (offset ^ (end - 1)) >> self.cluster_bits == 0 {
            let (word, _) = l2_words(entries, 0, false);
            return Ok(match decode_l2(self, word, 0, GuestOffset(first_cluster), at)? {
                Entry::Normal { host, copied, .. } => {
                    self.check_data_cluster(host.0, eof, at)?;
                    Found::Run(Run::Data { host: host.0 + (offset - first_cluster), writable: copied && self.snapshot.is_none() }, len)
                }
                Entry::Zero => Found::Run(Run::Zero { kept: zero_kept(word, offset - first_cluster) }, len),
                Entry::Unallocated { .. } => Found::Run(Run::Unallocated { kept: None }, len),
                Entry::Compressed { host, csize } => {
                    entry_rules::compressed_extent(host.0, csize, eof, at)?;
                    Found::Compressed { host: host.0, csize, skip: offset - first_cluster, len }
                }
            });
        }
        let mut pos = offset;
        let mut run: Option<Run> = None;
        for (i, raw) in entries.chunks_exact(esize).enumerate() {
            let cluster = first_cluster + i as u64 * cs;
            if cluster >= end {
                break;
            }
            let entry_at = at + (i * esize) as u64;
            let (word, bitmap) = l2_words(raw, 0, self.extended_l2);
            let entry = decode_l2(self, word, bitmap, GuestOffset(cluster), entry_at)?;
            if let Entry::Compressed { host, csize } = entry {
                if run.is_some() {
                    break;
                }
                entry_rules::compressed_extent(host.0, csize, eof, entry_at)?;
                let stop = end.min(cluster + cs);
                return Ok(Found::Compressed { host: host.0, csize, skip: pos - cluster, len: stop - pos });
            }
            let mut checked = false;
            while pos < end && pos < cluster + cs {
                let sub = ((pos - cluster) >> unit_bits) as u32;
                let class = match entry {
                    Entry::Zero => Run::Zero { kept: zero_kept(word, pos - cluster) },
                    Entry::Unallocated { bitmap } => match subclusters::kind(bitmap, sub, false) {
                        Sub::Zero => Run::Zero { kept: None },
                        _ => Run::Unallocated { kept: None },
                    },
                    Entry::Normal { host, copied, bitmap } => match subclusters::kind(bitmap, sub, true) {
                        Sub::Zero => Run::Zero { kept: Some(host.0 + (pos - cluster)) },
                        Sub::Unallocated => Run::Unallocated { kept: Some(host.0 + (pos - cluster)) },
                        Sub::Data => {
                            if !checked {
                                self.check_data_cluster(host.0, eof, entry_at)?;
                                checked = true;
                            }
                            Run::Data { host: host.0 + (pos - cluster), writable: copied && self.snapshot.is_none() }
                        }
                    },
                    Entry::Compressed { .. } => Run::Unallocated { kept: None },
                };
                match run {
                    None => run = Some(class),
                    Some(r) if r.continued_by(class, pos - offset) => {}
                    Some(r) => return Ok(Found::Run(r, pos - offset)),
                }
                pos = ((pos >> unit_bits) + 1) << unit_bits;
            }
            pos = pos.min(end);
        }
        match run {
            Some(r) if pos > offset => Ok(Found::Run(r, pos - offset)),
            _ => Err(Error::BadGraph("qcow2 scan found nothing")),
        }
    }

    /// A data cluster read from must start inside its file (where it lies was checked when the
    /// entry was decoded: [`entry_rules::host_cluster`]).
    fn check_data_cluster(&self, host: u64, eof: u64, entry_at: u64) -> Result<()> {
        if host >= eof {
            return Err(Error::Corrupt { what: "L2 entry: data cluster past the end of the file", offset: entry_at });
        }
        Ok(())
    }
}

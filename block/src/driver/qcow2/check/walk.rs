//! The reference walk (QEMU's `calculate_refcounts`): every reference QEMU counts, in its
//! order — the header cluster, the active L1 table with its L2 tables and data clusters (the
//! fragmentation figures come from these), each snapshot's L1/L2/data, the snapshot table, the
//! refcount table, the bitmap directory with each bitmap's table and data clusters, and last
//! the refcount blocks. Counts land in the [`Window`] when the cluster lies in it; the walk is
//! the same in every pass, so messages that do not depend on the window are reported once.

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::entry_bits::{
    COMPRESSED, COPIED, L1_OFFSET, L1_RESERVED, L2_OFFSET, L2_RESERVED, ZERO,
};
use super::super::validation::MAX_L1_BYTES;
use super::layout::{be64, put_be64, Layout};
use super::snaptable::{self, Reader};
use super::window::Window;
use super::{CheckResult, Finding, Sink};

/// Subcluster bitmap: the allocation half.
const ALL_ALLOC: u64 = 0xffff_ffff;
/// Bitmap table entries: reserved bits, offset bits, and the all-ones flag.
const BME_RESERVED: u64 = 0xff00_0000_0000_01fe;
const BME_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
const BME_ALL_ONES: u64 = 1;
/// Bitmap directory entry header bytes.
const BME_HEADER: u64 = 24;
/// QEMU's largest bitmap table (entries).
const BME_MAX_TABLE: u32 = 0x800_0000;

/// One walk over every reference.
pub(crate) struct Pass<'p, 'b> {
    pub(crate) lay: &'p Layout,
    pub(crate) win: &'p mut Window<'b>,
    /// Where problems are counted.
    pub(crate) res: &'p mut CheckResult,
    pub(crate) sink: &'p mut dyn Sink,
    /// Report (and count) what does not depend on the window: the first reporting pass.
    pub(crate) global: bool,
    /// Report (and count) what belongs to the window's clusters (overflows, refcount blocks).
    pub(crate) local: bool,
    /// One past the highest cluster referenced (QEMU grows its table to it).
    pub(crate) clusters_end: u64,
    /// A refcount block is broken: only a rebuild of the refcount structure would help.
    pub(crate) broken_refblocks: bool,
    /// `-r all` in the first pass: repair misaligned preallocated zero clusters, and grow the
    /// file over a refcount block past its end (QEMU's `check_refblocks`).
    pub(crate) fix_errors: bool,
    /// The file's size after this pass grew it (0: not grown).
    pub(crate) grown: u64,
}

impl Pass<'_, '_> {
    /// Bytes of the image file now (grown by this pass, or as the layout read it).
    fn file_size(&self) -> u64 {
        self.lay.file_size.max(self.grown)
    }

    fn report(&mut self, f: Finding, global: bool) {
        if (global && self.global) || (!global && self.local) {
            self.sink.finding(&f);
            self.res.corruptions += 1;
        }
    }

    /// Counts one reference to every cluster `offset..offset + size` touches (QEMU's
    /// `qcow2_inc_refcounts_imrt`).
    fn inc(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let lay = self.lay;
        // The last cluster of an image may be only partly in the file.
        if i128::from(offset) + i128::from(size) - i128::from(self.file_size())
            >= i128::from(lay.cs)
        {
            self.report(Finding::PastEnd { offset, size }, true);
            return;
        }
        let first = offset >> lay.cluster_bits;
        let last = (offset + size - 1) >> lay.cluster_bits;
        self.clusters_end = self.clusters_end.max(last + 1);
        let max = lay.refcount_max();
        let (from, to) = (first.max(self.win.start), (last + 1).min(self.win.end()));
        for k in from..to {
            let n = self.win.get(k);
            if n == max {
                self.report(
                    Finding::Overflow {
                        offset: k << lay.cluster_bits,
                    },
                    false,
                );
                continue;
            }
            self.win.set(k, n + 1);
        }
    }

    /// Walks everything but the refcount blocks, then the refcount blocks.
    pub(crate) async fn run(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<()> {
        let lay = self.lay;
        let h = &lay.header;
        self.inc(0, lay.cs);
        self.l1(io, file, h.l1_table_offset, h.l1_size, true, a, b)
            .await?;
        self.snapshots(io, file, a, b).await?;
        self.inc(lay.snaps.offset, lay.snaps.len);
        self.inc(h.refcount_table_offset, lay.rt_entries * 8);
        self.bitmaps(io, file, a).await?;
        self.refblocks(io, file, a).await
    }

    /// Each snapshot's L1 table, skipping (and reporting) one that is not cluster-aligned or
    /// above 32 MiB, as QEMU's `calculate_refcounts`.
    async fn snapshots(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<()> {
        let lay = self.lay;
        if lay.data_file && lay.snaps.count != 0 {
            let count = lay.snaps.count;
            self.report(Finding::SnapshotsWithDataFile { count }, true);
        }
        // The survey accepted the table: extra data above 1024 bytes is there only under
        // -r all, cut.
        let mut r = Reader::new(&lay.snaps, lay.header.size, true);
        while let Some(s) = r.next(io, file).await? {
            let unaligned = s.l1_table_offset & (lay.cs - 1) != 0;
            let large = u64::from(s.l1_size) > MAX_L1_BYTES / 8;
            if unaligned || large {
                if self.global {
                    let id = snaptable::label(io, file, s.id_at, s.id_len).await?;
                    let name = snaptable::label(io, file, s.name_at(), s.name_len).await?;
                    let f = if unaligned {
                        Finding::SnapshotL1Unaligned {
                            id,
                            name,
                            offset: s.l1_table_offset,
                        }
                    } else {
                        Finding::SnapshotL1TooLarge {
                            id,
                            name,
                            size: s.l1_size,
                        }
                    };
                    self.report(f, true);
                }
                continue;
            }
            self.l1(io, file, s.l1_table_offset, s.l1_size, false, a, b)
                .await?;
        }
        Ok(())
    }

    /// An L1 table, its L2 tables and their clusters (QEMU's `check_refcounts_l1`).
    #[allow(clippy::too_many_arguments)] // reason: two scratch buffers besides the table
    async fn l1(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        offset: u64,
        entries: u32,
        active: bool,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<()> {
        let bytes = u64::from(entries) * 8;
        self.inc(offset, bytes);
        // A snapshot's L1 offset is any 64-bit number; QEMU's read fails past 2^63.
        if offset
            .checked_add(bytes)
            .is_none_or(|e| e > i64::MAX as u64)
        {
            if self.global {
                self.sink.finding(&Finding::L1IoError);
                self.res.check_errors += 1;
            }
            return Err(Error::BadImage {
                what: "an L1 table lies past 2^63",
            });
        }
        let chunk = self.lay.chunk() as u64;
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(chunk) as usize;
            child_io::read_upto(io, file, offset + at, &mut a[..n]).await?;
            for i in 0..n / 8 {
                let e = be64(a, i * 8);
                if e == 0 {
                    continue;
                }
                if e & L1_RESERVED != 0 {
                    self.report(Finding::L1Reserved { entry: e }, true);
                }
                let l2 = e & L1_OFFSET;
                self.inc(l2, self.lay.cs);
                if l2 & (self.lay.cs - 1) != 0 {
                    self.report(Finding::L2Unaligned { l2_offset: l2 }, true);
                }
                self.l2(io, file, l2, active, b).await?;
            }
            at += n as u64;
        }
        Ok(())
    }

    /// One L2 table (QEMU's `check_refcounts_l2`), read where the L1 entry says even if that is
    /// not aligned (as QEMU does).
    async fn l2(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        offset: u64,
        active: bool,
        b: &mut [u8],
    ) -> Result<()> {
        let lay = self.lay;
        let (cs, es) = (lay.cs, lay.l2_entry);
        let frag = active && self.global;
        let chunk = lay.chunk() as u64;
        let csize_shift = 62 - (lay.cluster_bits - 8);
        let csize_mask = (1u64 << (lay.cluster_bits - 8)) - 1;
        let coffset_mask = (1u64 << csize_shift) - 1;
        let mut next_contiguous = 0u64;
        let mut at = 0;
        while at < cs {
            let n = (cs - at).min(chunk) as usize;
            child_io::read_upto(io, file, offset + at, &mut b[..n]).await?;
            for j in 0..n as u64 / es {
                let index = at / es + j;
                let e = be64(b, (j * es) as usize);
                let bitmap = if lay.extended_l2 {
                    be64(b, (j * es + 8) as usize)
                } else {
                    0
                };
                if e & COMPRESSED != 0 {
                    if e & COPIED != 0 {
                        self.report(
                            Finding::CompressedCopied {
                                coffset: e & coffset_mask & !COPIED,
                            },
                            true,
                        );
                    }
                    let e = e & !COPIED;
                    if lay.data_file {
                        self.report(Finding::CompressedWithDataFile { index, entry: e }, true);
                        continue;
                    }
                    if bitmap != 0 {
                        self.report(Finding::CompressedBitmap { index, entry: e }, true);
                        continue;
                    }
                    let coffset = e & coffset_mask;
                    let sectors = ((e >> csize_shift) & csize_mask) + 1;
                    self.inc(coffset, sectors * 512 - (coffset & 511));
                    if frag {
                        self.res.frag.allocated_clusters += 1;
                        self.res.frag.compressed_clusters += 1;
                        self.res.frag.fragmented_clusters += 1;
                    }
                    continue;
                }
                if e & L2_RESERVED != 0 {
                    self.report(Finding::L2Reserved { entry: e }, true);
                }
                let host = e & L2_OFFSET;
                let zero_flag = e & ZERO != 0 && !lay.extended_l2;
                let allocated = host != 0 || (lay.data_file && e & COPIED != 0);
                if !allocated {
                    if lay.extended_l2 && bitmap & ALL_ALLOC != 0 {
                        self.report(Finding::UnallocatedBitmap, true);
                    }
                    continue;
                }
                if (bitmap >> 32) & bitmap != 0 {
                    self.report(Finding::SubclusterBitmap { offset: host }, true);
                }
                if host & (cs - 1) != 0 {
                    let data = if lay.extended_l2 {
                        bitmap & ALL_ALLOC != 0
                    } else {
                        !zero_flag
                    };
                    if data {
                        self.report(Finding::DataUnaligned { offset: host }, true);
                    } else if self.fix_errors && self.global {
                        // As QEMU: the entry becomes a plain zero cluster and counts nothing.
                        let repairing = true;
                        self.sink.finding(&Finding::PreallocUnaligned {
                            offset: host,
                            repairing,
                        });
                        let at_entry = offset + index * es;
                        if self.overlaps_metadata(io, file, at_entry, 8).await? {
                            self.sink.finding(&Finding::OverlapCheckFailed);
                            self.res.check_errors += 1;
                            return Err(Error::Corrupt {
                                what: "repair of an L2 entry would overwrite metadata",
                                offset: at_entry,
                            });
                        }
                        let zero = if lay.extended_l2 { 0 } else { ZERO };
                        child_io::write(io, file, at_entry, &zero.to_be_bytes()).await?;
                        flush::flush_leaves(io, file).await?;
                        put_be64(b, (j * es) as usize, zero);
                        self.res.corruptions_fixed += 1;
                        continue;
                    } else {
                        self.report(
                            Finding::PreallocUnaligned {
                                offset: host,
                                repairing: false,
                            },
                            true,
                        );
                    }
                }
                if frag {
                    self.res.frag.allocated_clusters += 1;
                    if next_contiguous != 0 && host != next_contiguous {
                        self.res.frag.fragmented_clusters += 1;
                    }
                    next_contiguous = host + cs;
                }
                if !lay.data_file {
                    self.inc(host, cs);
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    /// The bitmap directory, each bitmap's table and its data clusters (QEMU's
    /// `qcow2_check_bitmaps_refcounts`), when the bitmaps are consistent.
    async fn bitmaps(&mut self, io: &Io<'_, '_>, file: NodeId, a: &mut [u8]) -> Result<()> {
        let Some((dir, dir_len, count)) = self.lay.bitmaps else {
            return Ok(());
        };
        let bad = Error::BadImage {
            what: "bitmap directory: entry runs past the directory",
        };
        self.inc(dir, dir_len);
        let mut pos = 0u64;
        for _ in 0..count {
            let mut h = [0u8; BME_HEADER as usize];
            if pos + BME_HEADER > dir_len {
                return Err(bad);
            }
            child_io::read_upto(io, file, dir + pos, &mut h).await?;
            let table = be64(&h, 0);
            let entries = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            let name = u64::from(u16::from_be_bytes([h[18], h[19]]));
            let extra = u64::from(u32::from_be_bytes([h[20], h[21], h[22], h[23]]));
            let len = (BME_HEADER + extra + name).div_ceil(8) * 8;
            if pos + BME_HEADER + extra + name > dir_len {
                return Err(bad);
            }
            if entries > BME_MAX_TABLE || table & (self.lay.cs - 1) != 0 {
                self.report_fatal();
                return Err(Error::BadImage {
                    what: "bitmap directory: bad bitmap table",
                });
            }
            self.inc(table, u64::from(entries) * 8);
            self.bitmap_table(io, file, table, entries, a).await?;
            pos += len;
        }
        Ok(())
    }

    /// True if `len` bytes at `at` touch metadata QEMU's overlap check guards when an L2
    /// entry is rewritten: the header cluster, the active L1 table, the refcount table and its
    /// blocks, the snapshot table and the bitmap directory.
    async fn overlaps_metadata(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        at: u64,
        len: u64,
    ) -> Result<bool> {
        let lay = self.lay;
        let h = &lay.header;
        let hit = |start: u64, n: u64| n != 0 && at < start.saturating_add(n) && start < at + len;
        let mut regions = [
            (0, lay.cs),
            (h.l1_table_offset, u64::from(h.l1_size) * 8),
            (h.refcount_table_offset, lay.rt_entries * 8),
            (lay.snaps.offset, lay.snaps.len),
            (0, 0),
        ];
        if let Some((dir, n, _)) = lay.bitmaps {
            regions[4] = (dir, n);
        }
        if regions.iter().any(|&(s, n)| hit(s, n)) {
            return Ok(true);
        }
        let mut buf = [0u8; 512];
        let mut i = 0;
        while i < lay.rt_entries {
            let n = ((lay.rt_entries - i) * 8).min(buf.len() as u64) as usize;
            child_io::read_upto(io, file, h.refcount_table_offset + i * 8, &mut buf[..n]).await?;
            for j in 0..n / 8 {
                let block = be64(&buf, j * 8) & !0x1ff;
                if hit(block, if block == 0 { 0 } else { lay.cs }) {
                    return Ok(true);
                }
            }
            i += (n / 8) as u64;
        }
        Ok(false)
    }

    /// Counts a corruption the check cannot go on after (QEMU: the bitmap list fails to load).
    fn report_fatal(&mut self) {
        if self.global {
            self.res.corruptions += 1;
        }
    }

    /// One bitmap table's data clusters; an invalid entry stops the check (as QEMU's
    /// `bitmap_table_load`).
    async fn bitmap_table(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        table: u64,
        entries: u32,
        a: &mut [u8],
    ) -> Result<()> {
        let bytes = u64::from(entries) * 8;
        let chunk = self.lay.chunk() as u64;
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(chunk) as usize;
            child_io::read_upto(io, file, table + at, &mut a[..n]).await?;
            for i in 0..n / 8 {
                let e = be64(a, i * 8);
                let offset = e & BME_OFFSET;
                let bad = e & BME_RESERVED != 0
                    || (offset != 0 && (e & BME_ALL_ONES != 0 || offset & (self.lay.cs - 1) != 0));
                if bad {
                    self.report_fatal();
                    return Err(Error::Corrupt {
                        what: "bitmap table entry invalid",
                        offset: table + at + i as u64 * 8,
                    });
                }
                if offset != 0 {
                    self.inc(offset, self.lay.cs);
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    /// The refcount blocks (QEMU's `check_refblocks`): a block past the end of the file is
    /// covered by growing the file under `-r all` (then counted, its zero entries left to the
    /// rebuild), a block not aligned or referenced other than once needs a rebuild.
    async fn refblocks(&mut self, io: &Io<'_, '_>, file: NodeId, a: &mut [u8]) -> Result<()> {
        let lay = self.lay;
        let bytes = lay.rt_entries * 8;
        let chunk = lay.chunk() as u64;
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(chunk) as usize;
            child_io::read_upto(io, file, lay.header.refcount_table_offset + at, &mut a[..n])
                .await?;
            for j in 0..n / 8 {
                let index = at / 8 + j as u64;
                let offset = be64(a, j * 8);
                let cluster = offset >> lay.cluster_bits;
                if offset & (lay.cs - 1) != 0 {
                    self.report(Finding::RefblockUnaligned { index }, true);
                    self.broken_refblocks = true;
                    continue;
                }
                let clusters = self.file_size().div_ceil(lay.cs).max(self.clusters_end);
                // Past the end: under -r all the file grows over it (then it is counted).
                if cluster >= clusters
                    && !(self.fix_errors && self.global && self.grow_over(io, file, index, offset))
                {
                    self.report(
                        Finding::RefblockOutside {
                            index,
                            repairing: false,
                        },
                        true,
                    );
                    self.broken_refblocks = true;
                    continue;
                }
                if offset != 0 {
                    self.inc(offset, lay.cs);
                    if self.win.holds(cluster) && self.win.get(cluster) != 1 {
                        let refcount = self.win.get(cluster);
                        self.report(Finding::RefblockRefcount { index, refcount }, false);
                        self.broken_refblocks = true;
                    }
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    /// Grows the file to hold the refcount block at `offset` (QEMU truncates the file up to
    /// it): its entries read as zeros, so the clusters it covers need a rebuild, which the
    /// compare finds. False if the file cannot grow so far (then only a rebuild helps).
    fn grow_over(&mut self, io: &Io<'_, '_>, file: NodeId, index: u64, offset: u64) -> bool {
        let Some(end) = offset.checked_add(self.lay.cs) else {
            return false;
        };
        let Ok(size) = child_io::grow(io, file, end) else {
            return false;
        };
        self.sink.finding(&Finding::RefblockOutside {
            index,
            repairing: true,
        });
        self.grown = size.max(end);
        self.res.corruptions_fixed += 1;
        true
    }
}

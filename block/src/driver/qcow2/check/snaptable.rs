//! The snapshot table as `qemu-img check` reads it: tolerantly, as QEMU's
//! `qcow2_check_read_snapshot_table` and `qcow2_do_read_snapshots` (with `repair` under
//! `-r all`) do, and rewritten as `qcow2_check_fix_snapshot_table` does. A normal open stays
//! strict (`snapshots::check`), as QEMU refuses such images at open.
//!
//! What QEMU does, and so this module:
//! - more than 65536 snapshots: under `-r all` the count is cut to 65536 ("Discarding N
//!   overhanging snapshots"), else a check error; an offset that is not cluster-aligned (or
//!   whose table would pass 2^63) is a check error in every mode;
//! - entries are read where QEMU reads them: past the end of the file they read as zeros, and
//!   an entry's strings follow its declared extra data even when that is nonsense;
//! - extra data above 1024 bytes: a check error, or under `-r all` cut to 1024 (one corruption,
//!   fixed by the rewrite); a table above 64 MiB: a check error, or under `-r all` the entries
//!   from the one that passes the limit on are dropped (their count written to the header at
//!   once; a corruption fixed, their clusters left to the leak repair);
//! - a version 3 entry with less than 16 bytes of extra data: a corruption ("incomplete"),
//!   fixed by the rewrite.
//!
//! Snapshots whose L1 table is unaligned or too large stay in the table (QEMU drops none):
//! the reference walk skips them, reports a corruption, and the leak repair frees what only
//! they held.
//!
//! The rewrite (QEMU's `qcow2_write_snapshots`) re-encodes every entry with at least 24 bytes
//! of extra data (VM state size, disk size, icount; unknown extra data kept up to the cut) and
//! the id and name up to their first NUL byte. Crash-safe order: the new table's clusters
//! (first fit, as QEMU's allocator) counted and flushed, the table written and flushed, the
//! header's count and offset switched in one write and flushed, then the old table's clusters
//! freed. Memory: one scratch buffer; nothing is kept per entry, the table is read again
//! where needed.

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::header::{incompat, Header};
use super::super::snapshots::{MAX_EXTRA, V3_MIN_EXTRA};
use super::super::validation::{MAX_SNAPSHOTS, MAX_SNAPSHOT_TABLE_BYTES};
use super::finding::Label;
use super::layout::{Layout, SnapTable as Table};
use super::stored::{Lookup, Stored};
use super::{CheckResult, Finding, Sink};

/// Bytes of an entry's fixed part.
const ENTRY: u64 = 40;
/// Extra data QEMU knows (VM state size, disk size, icount) and writes in every entry.
const KNOWN_EXTRA: u64 = 24;
/// Header offset of `nb_snapshots` (u32), followed by `snapshots_offset` (u64).
const NB_SNAPSHOTS: u64 = 60;
/// The header's incompatible-features field.
const INCOMPATIBLE_FIELD: u64 = 72;
/// QEMU's reads stop at `INT64_MAX`.
const MAX_POS: u64 = i64::MAX as u64;
/// QEMU's `INT_MAX` bound on the bytes a table spans.
const MAX_SPAN: u64 = i32::MAX as u64;

/// One entry, as QEMU reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) index: u32,
    pub(crate) l1_table_offset: u64,
    pub(crate) l1_size: u32,
    date_sec: u32,
    date_nsec: u32,
    vm_clock_nsec: u64,
    vm_state_size: u64,
    disk_size: u64,
    icount: u64,
    /// Extra data as declared.
    pub(crate) extra: u32,
    /// Extra data kept (cut at 1024 under `-r all`).
    kept_extra: u32,
    /// Where the extra data starts.
    extra_at: u64,
    /// Where the id starts (the name follows it).
    pub(crate) id_at: u64,
    pub(crate) id_len: u16,
    pub(crate) name_len: u16,
}

impl Entry {
    /// Where the name starts.
    pub(crate) fn name_at(&self) -> u64 {
        self.id_at + u64::from(self.id_len)
    }
}

/// What one step of a [`Reader`] found.
enum Step {
    /// The next entry; `overhang`: it takes the table past 64 MiB (under `-r all` it and the
    /// rest are dropped).
    Entry { entry: Entry, overhang: bool },
    /// Extra data above 1024 bytes without `-r all`.
    ExtraTooLarge { index: u32 },
    /// The table passes 64 MiB at this entry without `-r all`.
    TooBig { index: u32 },
    /// No more entries.
    Done,
}

/// A walk over the entries as QEMU's `qcow2_do_read_snapshots` makes it.
pub(crate) struct Reader {
    start: u64,
    /// QEMU's `offset`: the end of the last entry read.
    pos: u64,
    /// QEMU's `table_length` (extra data counted as kept).
    table_length: u64,
    index: u32,
    count: u32,
    disk_size: u64,
    repair: bool,
}

impl Reader {
    /// Walks `table` of an image whose virtual size is `image_size`; `repair`: extra data
    /// above 1024 bytes is cut, and a table past 64 MiB ends, instead of failing.
    pub(crate) fn new(table: &Table, image_size: u64, repair: bool) -> Self {
        Self {
            start: table.offset,
            pos: table.offset,
            table_length: 0,
            index: 0,
            count: table.count,
            disk_size: image_size & !511,
            repair,
        }
    }

    /// The next entry of a table [`survey`] accepted.
    pub(crate) async fn next(&mut self, io: &Io<'_, '_>, file: NodeId) -> Result<Option<Entry>> {
        match self.step(io, file).await? {
            Step::Entry { entry, .. } => Ok(Some(entry)),
            Step::Done => Ok(None),
            Step::ExtraTooLarge { .. } | Step::TooBig { .. } => Err(Error::BadImage {
                what: "snapshot table changed during the check",
            }),
        }
    }

    async fn step(&mut self, io: &Io<'_, '_>, file: NodeId) -> Result<Step> {
        if self.index >= self.count {
            return Ok(Step::Done);
        }
        let before = self.pos;
        self.table_length = self.table_length.div_ceil(8) * 8;
        let at = self.pos.div_ceil(8) * 8;
        let mut h = [0u8; ENTRY as usize];
        read(io, file, at, &mut h).await?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let extra = u32_at(36);
        let mut kept_extra = extra;
        if extra > MAX_EXTRA {
            if !self.repair {
                return Ok(Step::ExtraTooLarge { index: self.index });
            }
            kept_extra = MAX_EXTRA;
        }
        let extra_at = at + ENTRY;
        let known = u64::from(extra).min(KNOWN_EXTRA);
        let mut ex = [0u8; KNOWN_EXTRA as usize];
        read(io, file, extra_at, &mut ex[..known as usize]).await?;
        let word = |b: &[u8], i: usize| {
            u64::from_be_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let vm_state_size = if extra >= 8 {
            word(&ex, 0)
        } else {
            u64::from(u32_at(32))
        };
        let disk_size = if extra >= 16 {
            word(&ex, 8)
        } else {
            self.disk_size
        };
        let icount = if extra >= 24 { word(&ex, 16) } else { u64::MAX };
        let (id_len, name_len) = (u16_at(12), u16_at(14));
        // The strings follow the extra data as declared, even when it is cut.
        let id_at = extra_at + u64::from(extra);
        let end = id_at + u64::from(id_len) + u64::from(name_len);
        if end > MAX_POS {
            return Err(Error::BadImage {
                what: "snapshot table: an entry lies past 2^63 (QEMU cannot read it)",
            });
        }
        self.table_length +=
            ENTRY + u64::from(kept_extra) + u64::from(id_len) + u64::from(name_len);
        let overhang = self.table_length > MAX_SNAPSHOT_TABLE_BYTES || end - self.start > MAX_SPAN;
        if overhang && !self.repair {
            return Ok(Step::TooBig { index: self.index });
        }
        let entry = Entry {
            index: self.index,
            l1_table_offset: word(&h, 0),
            l1_size: u32_at(8),
            date_sec: u32_at(16),
            date_nsec: u32_at(20),
            vm_clock_nsec: word(&h, 24),
            vm_state_size,
            disk_size,
            icount,
            extra,
            kept_extra,
            extra_at,
            id_at,
            id_len,
            name_len,
        };
        if overhang {
            // This entry and the rest are dropped; the table ends where the last kept one did.
            self.pos = before;
            self.count = self.index;
        } else {
            self.pos = end;
            self.index += 1;
        }
        Ok(Step::Entry { entry, overhang })
    }

    /// QEMU's `snapshots_size` once the walk is over.
    fn len(&self) -> u64 {
        self.pos - self.start
    }
}

/// Reads `buf.len()` bytes at `at` (zeros past the end of the file, as QEMU's reads there);
/// past 2^63 QEMU's read fails.
async fn read(io: &Io<'_, '_>, file: NodeId, at: u64, buf: &mut [u8]) -> Result<()> {
    if at.checked_add(buf.len() as u64).is_none_or(|e| e > MAX_POS) {
        return Err(Error::BadImage {
            what: "snapshot table: an entry lies past 2^63 (QEMU cannot read it)",
        });
    }
    child_io::read_upto(io, file, at, buf).await?;
    Ok(())
}

/// A snapshot's id or name for a message: `len` bytes at `at`, up to the first NUL (QEMU
/// prints them with `%s`), cut at [`Label`]'s capacity.
pub(crate) async fn label(io: &Io<'_, '_>, file: NodeId, at: u64, len: u16) -> Result<Label> {
    let mut buf = [0u8; Label::CAPACITY];
    let n = usize::from(len).min(buf.len());
    read(io, file, at, &mut buf[..n]).await?;
    Ok(Label::new(&buf[..n]))
}

/// Reads the snapshot table `header` names as QEMU's check does, reporting and counting into
/// `res`; under `fix_errors` the count of an overlong table is cut in the header at once.
/// `Err` (with a check error counted) when QEMU's check fails. The corruptions counted and
/// not fixed here are those only a [`rewrite`] fixes (QEMU's snapshot result).
pub(crate) async fn survey(
    io: &Io<'_, '_>,
    file: NodeId,
    header: &Header,
    fix_errors: bool,
    sink: &mut dyn Sink,
    res: &mut CheckResult,
) -> Result<Table> {
    let offset = header.snapshots_offset;
    let mut count = header.nb_snapshots;
    let mut reduced = 0u64;
    if count > MAX_SNAPSHOTS && fix_errors {
        sink.finding(&Finding::SnapshotsDiscarded {
            count: count - MAX_SNAPSHOTS,
            too_big: false,
        });
        reduced += u64::from(count - MAX_SNAPSHOTS);
        count = MAX_SNAPSHOTS;
    }
    // QEMU's `qcow2_validate_table` for the table pointer.
    if count > MAX_SNAPSHOTS {
        res.check_errors += 1;
        sink.finding(&Finding::SnapshotTableTooLarge {
            overhanging: count - MAX_SNAPSHOTS,
        });
        return Err(Error::BadImage {
            what: "snapshot table too large (more than 65536 snapshots; -r all drops the rest)",
        });
    }
    if MAX_POS - u64::from(count) * ENTRY < offset || offset & (header.cluster_size() - 1) != 0 {
        res.check_errors += 1;
        sink.finding(&Finding::SnapshotTableOffsetInvalid);
        return Err(Error::BadImage {
            what: "snapshot table offset invalid",
        });
    }
    let mut table = Table {
        offset,
        count,
        len: 0,
    };
    let mut r = Reader::new(&table, header.size, fix_errors);
    let mut dropped = 0u64;
    loop {
        let step = match r.step(io, file).await {
            Ok(s) => s,
            Err(e) => {
                res.check_errors += 1;
                sink.finding(&Finding::SnapshotTableUnreadable);
                return Err(e);
            }
        };
        match step {
            Step::Done => break,
            Step::Entry { entry, overhang } => {
                if entry.extra > MAX_EXTRA {
                    sink.finding(&Finding::SnapshotExtraDiscarded {
                        index: entry.index,
                        size: entry.extra,
                    });
                    dropped += 1;
                }
                if overhang {
                    sink.finding(&Finding::SnapshotsDiscarded {
                        count: count - entry.index,
                        too_big: true,
                    });
                    reduced += u64::from(count - entry.index);
                    table.count = entry.index;
                    break;
                }
            }
            Step::ExtraTooLarge { index } => {
                res.check_errors += 1;
                sink.finding(&Finding::SnapshotExtraTooLarge { index });
                return Err(Error::BadImage {
                    what: "snapshot entry: extra data larger than 1024 bytes (-r all cuts it)",
                });
            }
            Step::TooBig { index } => {
                res.check_errors += 1;
                sink.finding(&Finding::SnapshotTableTooBig {
                    overhanging: count - index,
                });
                return Err(Error::BadImage {
                    what: "snapshot table larger than 64 MiB (-r all drops the rest)",
                });
            }
        }
    }
    table.len = r.len();
    res.corruptions += reduced + dropped;
    if reduced != 0 {
        // The header says what the walk will read before anything is counted; the dropped
        // entries' clusters are leaked until the leak repair frees them.
        child_io::write(io, file, NB_SNAPSHOTS, &table.count.to_be_bytes()).await?;
        flush::flush_leaves(io, file).await?;
        res.corruptions_fixed += reduced;
        res.corruptions -= reduced;
    }
    let mut incomplete = 0u64;
    if header.version >= 3 {
        let mut r = Reader::new(&table, header.size, fix_errors);
        while let Some(e) = r.next(io, file).await? {
            if e.extra < V3_MIN_EXTRA {
                incomplete += 1;
                sink.finding(&Finding::SnapshotIncomplete {
                    index: e.index,
                    repairing: fix_errors,
                });
            }
        }
    }
    res.corruptions += incomplete;
    Ok(table)
}

/// The length of the C string of up to `len` bytes at `at` (to its first NUL), read through
/// `buf`.
async fn c_len(io: &Io<'_, '_>, file: NodeId, at: u64, len: u16, buf: &mut [u8]) -> Result<u16> {
    let mut done = 0usize;
    let len = usize::from(len);
    while done < len {
        let n = (len - done).min(buf.len());
        read(io, file, at + done as u64, &mut buf[..n]).await?;
        if let Some(i) = buf[..n].iter().position(|&b| b == 0) {
            return Ok((done + i) as u16);
        }
        done += n;
    }
    Ok(len as u16)
}

/// An entry as QEMU writes it: its encoded length and the lengths of its parts.
struct Encoded {
    extra: u64,
    id_len: u16,
    name_len: u16,
}

impl Encoded {
    async fn of(io: &Io<'_, '_>, file: NodeId, e: &Entry, buf: &mut [u8]) -> Result<Self> {
        Ok(Encoded {
            extra: u64::from(e.kept_extra).max(KNOWN_EXTRA),
            id_len: c_len(io, file, e.id_at, e.id_len, buf).await?,
            name_len: c_len(io, file, e.name_at(), e.name_len, buf).await?,
        })
    }

    fn len(&self) -> u64 {
        ENTRY + self.extra + u64::from(self.id_len) + u64::from(self.name_len)
    }
}

/// Copies `len` bytes from `from` to `to` through `buf` (zeros past the end of the file).
async fn copy(
    io: &Io<'_, '_>,
    file: NodeId,
    from: u64,
    to: u64,
    len: u64,
    buf: &mut [u8],
) -> Result<()> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read(io, file, from + done, &mut buf[..n]).await?;
        child_io::write(io, file, to + done, &buf[..n]).await?;
        done += n as u64;
    }
    Ok(())
}

/// Rewrites the table `table` (QEMU's `qcow2_write_snapshots` from
/// `qcow2_check_fix_snapshot_table`): new clusters, first fit among those with stored refcount
/// 0; the header switched; the old table's clusters freed. `buf` is scratch.
pub(crate) async fn rewrite(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    table: &Table,
    stored: &mut Stored<'_>,
    buf: &mut [u8],
    sink: &mut dyn Sink,
) -> Result<Table> {
    let image_size = lay.header.size;
    // The new table's length.
    let mut new_len = 0u64;
    let mut r = Reader::new(table, image_size, true);
    while let Some(e) = r.next(io, file).await? {
        let enc = Encoded::of(io, file, &e, buf).await?;
        new_len = new_len.div_ceil(8) * 8 + enc.len();
        if new_len > MAX_SNAPSHOT_TABLE_BYTES {
            return Err(Error::NoSpace {
                what: "snapshot table (QEMU's limit of 64 MiB)",
            });
        }
    }
    let cs = lay.cs;
    let n = new_len.div_ceil(cs);
    let first = place_table(io, file, lay, stored, n).await?;
    for k in first..first + n {
        if !stored.set(io, file, lay, k, 1).await? {
            return Err(Error::NoSpace {
                what: "no refcount block covers the clusters for the new snapshot table",
            });
        }
    }
    stored.write_back(io, file, lay).await?;
    flush::flush_leaves(io, file).await?;
    let at = first * cs;
    let end = at + n * cs;
    // QEMU's overlap check before it writes the table (only wrong refcounts, left so by a
    // table QEMU cannot count, let the new clusters land on metadata).
    if let Some(what) = overlap(io, file, lay, at, end - at).await? {
        mark_corrupt(io, file, lay, what, sink).await?;
        return Err(Error::Corrupt {
            what: "the new snapshot table would overwrite metadata",
            offset: at,
        });
    }
    // The new table.
    if end > child_io::size(io, file)? {
        child_io::grow(io, file, end)?;
    }
    let mut pos = at;
    let mut r = Reader::new(table, image_size, true);
    while let Some(e) = r.next(io, file).await? {
        let enc = Encoded::of(io, file, &e, buf).await?;
        pos = pos.div_ceil(8) * 8;
        let mut h = [0u8; (ENTRY + KNOWN_EXTRA) as usize];
        let mut put = |i: usize, v: &[u8]| h[i..i + v.len()].copy_from_slice(v);
        put(0, &e.l1_table_offset.to_be_bytes());
        put(8, &e.l1_size.to_be_bytes());
        put(12, &enc.id_len.to_be_bytes());
        put(14, &enc.name_len.to_be_bytes());
        put(16, &e.date_sec.to_be_bytes());
        put(20, &e.date_nsec.to_be_bytes());
        put(24, &e.vm_clock_nsec.to_be_bytes());
        // Older readers treat a VM state too large for 32 bits as none.
        let small = u32::try_from(e.vm_state_size).unwrap_or(0);
        put(32, &small.to_be_bytes());
        put(36, &(enc.extra as u32).to_be_bytes());
        put(40, &e.vm_state_size.to_be_bytes());
        put(48, &e.disk_size.to_be_bytes());
        put(56, &e.icount.to_be_bytes());
        child_io::write(io, file, pos, &h).await?;
        pos += h.len() as u64;
        let unknown = enc.extra - KNOWN_EXTRA;
        copy(io, file, e.extra_at + KNOWN_EXTRA, pos, unknown, buf).await?;
        pos += unknown;
        copy(io, file, e.id_at, pos, u64::from(enc.id_len), buf).await?;
        pos += u64::from(enc.id_len);
        copy(io, file, e.name_at(), pos, u64::from(enc.name_len), buf).await?;
        pos += u64::from(enc.name_len);
    }
    // The table and its refcounts are stable before the header names it.
    flush::flush_leaves(io, file).await?;
    let mut hdr = [0u8; 12];
    hdr[..4].copy_from_slice(&table.count.to_be_bytes());
    hdr[4..].copy_from_slice(&at.to_be_bytes());
    child_io::write(io, file, NB_SNAPSHOTS, &hdr).await?;
    flush::flush_leaves(io, file).await?;
    free(io, file, lay, stored, table.offset, table.len, sink).await?;
    Ok(Table {
        offset: at,
        count: table.count,
        len: new_len,
    })
}

/// Marks the image corrupt as QEMU's `qcow2_signal_corruption` does when its overlap check
/// refuses a write onto `what` (version 2 images have no bit for it).
pub(crate) async fn mark_corrupt(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    what: &'static str,
    sink: &mut dyn Sink,
) -> Result<()> {
    sink.finding(&Finding::MarkedCorrupt { what });
    if lay.header.version >= 3 {
        let bits = lay.header.incompatible | incompat::CORRUPT;
        child_io::write(io, file, INCOMPATIBLE_FIELD, &bits.to_be_bytes()).await?;
        flush::flush_leaves(io, file).await?;
    }
    Ok(())
}

/// The metadata QEMU's default overlap check guards that `len` bytes at `at` touch: the header
/// cluster, the active L1 table, the refcount table, the snapshot table and its L1 tables,
/// the bitmap directory (refcount blocks and L2 tables are counted, so first fit avoids them).
pub(crate) async fn overlap(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    at: u64,
    len: u64,
) -> Result<Option<&'static str>> {
    let table = &lay.snaps;
    let hit = |start: u64, n: u64| n != 0 && at < start.saturating_add(n) && start < at + len;
    let h = &lay.header;
    if at < lay.cs {
        return Ok(Some("main header"));
    }
    if hit(h.l1_table_offset, u64::from(h.l1_size) * 8) {
        return Ok(Some("active L1 table"));
    }
    if hit(h.refcount_table_offset, lay.rt_entries * 8) {
        return Ok(Some("refcount table"));
    }
    if hit(table.offset, table.len) {
        return Ok(Some("snapshot table"));
    }
    let mut r = Reader::new(table, h.size, true);
    while let Some(e) = r.next(io, file).await? {
        if hit(e.l1_table_offset, u64::from(e.l1_size) * 8) {
            return Ok(Some("inactive L1 table"));
        }
    }
    if let Some((dir, n, _)) = lay.bitmaps {
        if hit(dir, n) {
            return Ok(Some("bitmap directory"));
        }
    }
    Ok(None)
}

/// Refcount blocks [`place_table`] may add for one table (QEMU needs at most one per
/// refcount-block range the table's clusters cross).
const MAX_NEW_BLOCKS: usize = 8;

/// Where a new table of `n` clusters goes, as QEMU's `qcow2_alloc_clusters` places it: the
/// first run of `n` free clusters; where a cluster of the run has no refcount block, a new
/// block takes the first free cluster past the run ([`Stored::add_block`]: QEMU's
/// `alloc_refcount_block` allocates from where the run's search stopped) and the search
/// starts again (QEMU's retry after `-EAGAIN`), which finds the same run if the block left it
/// free (as `qemu-img check -r all` lays it out: the table, then its block).
async fn place_table(io: &Io<'_, '_>, file: NodeId, lay: &Layout, stored: &mut Stored<'_>, n: u64) -> Result<u64> {
    for _ in 0..MAX_NEW_BLOCKS {
        let first = first_fit(io, file, lay, stored, 0, n).await?;
        let mut uncovered = None;
        for k in first..first + n {
            if !stored.covered(io, file, lay, k).await? {
                uncovered = Some(k);
                break;
            }
        }
        let Some(k) = uncovered else { return Ok(first) };
        let block = first_fit(io, file, lay, stored, first + n, 1).await?;
        stored.add_block(io, file, lay, k, block).await?;
    }
    Err(Error::NoSpace { what: "refcount blocks for the new snapshot table" })
}

/// The first of `n` consecutive clusters from cluster `from` on whose stored refcount is 0
/// (QEMU's `alloc_clusters_noref` from its free-cluster index).
async fn first_fit(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    stored: &mut Stored<'_>,
    from: u64,
    n: u64,
) -> Result<u64> {
    let limit = lay.file_clusters().max(from) + n;
    let (mut start, mut run) = (from, 0u64);
    let mut k = from;
    while run < n {
        if k > limit {
            return Err(Error::NoSpace {
                what: "no free clusters for the new snapshot table",
            });
        }
        match stored.get(io, file, lay, k).await? {
            Lookup::Count(0) => {
                if run == 0 {
                    start = k;
                }
                run += 1;
            }
            _ => run = 0,
        }
        k += 1;
    }
    Ok(start)
}

/// Drops one reference to each cluster of `len` bytes at `offset` (QEMU's
/// `qcow2_free_clusters`); if one of them is already free nothing changes and QEMU's message
/// is reported.
async fn free(
    io: &Io<'_, '_>,
    file: NodeId,
    lay: &Layout,
    stored: &mut Stored<'_>,
    offset: u64,
    len: u64,
    sink: &mut dyn Sink,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (first, last) = (
        offset >> lay.cluster_bits,
        (offset + len - 1) >> lay.cluster_bits,
    );
    for k in first..=last {
        if !matches!(stored.get(io, file, lay, k).await?, Lookup::Count(c) if c > 0) {
            sink.finding(&Finding::FreeFailed);
            return Ok(());
        }
    }
    for k in first..=last {
        if let Lookup::Count(c) = stored.get(io, file, lay, k).await? {
            stored.set(io, file, lay, k, c - 1).await?;
        }
    }
    stored.write_back(io, file, lay).await?;
    flush::flush_leaves(io, file).await
}

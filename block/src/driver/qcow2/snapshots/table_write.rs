//! Writing the snapshot table (QEMU's `qcow2_write_snapshots`): a new table in new clusters
//! holding the old one's entries byte for byte (unknown extra data kept) minus the one being
//! deleted, plus the one being created; made stable with its refcounts; then the header's
//! `nb_snapshots` and `snapshots_offset` (adjacent, inside the first sector) switched in one
//! write, flushed; only then the old table's clusters dropped.
//!
//! A power cut before the header write leaves the old table in force (the new one leaked); after
//! it, the new one (the old one leaked until its clusters are dropped).

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::validation::{Region, MAX_SNAPSHOTS, MAX_SNAPSHOT_TABLE_BYTES};
use super::super::Qcow2;
use super::ENTRY;

/// Header offset of `nb_snapshots` (u32), followed by `snapshots_offset` (u64).
const NB_SNAPSHOTS: u64 = 60;
/// Longest id QEMU keeps (`QEMUSnapshotInfo::id_str`, 128 bytes with its NUL).
pub const MAX_ID: usize = 127;
/// Longest name QEMU keeps (`QEMUSnapshotInfo::name`, 256 bytes with its NUL).
pub const MAX_NAME: usize = 255;
/// Extra data Strata writes: VM state size (64 bits), disk size, icount (QEMU's
/// `QCowSnapshotExtraData`).
const EXTRA: usize = 24;
/// Largest encoded entry Strata writes.
const MAX_ENTRY: usize = ENTRY + EXTRA + MAX_ID + MAX_NAME + 7;

/// An entry about to be added, encoded (padded to 8 bytes).
pub(crate) struct EncodedEntry {
    bytes: [u8; MAX_ENTRY],
    len: usize,
}

/// What a new entry says.
pub(crate) struct EntryFields<'a> {
    pub(crate) l1_table_offset: u64,
    pub(crate) l1_size: u32,
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) date_sec: u32,
    pub(crate) date_nsec: u32,
    pub(crate) vm_clock_nsec: u64,
    pub(crate) disk_size: u64,
    pub(crate) icount: u64,
}

impl EncodedEntry {
    /// Encodes `f` as a version 3 entry with 24 bytes of extra data (QEMU writes the same for
    /// version 2 images). VM state size 0.
    pub(crate) fn new(f: &EntryFields<'_>) -> Result<Self> {
        if f.id.len() > MAX_ID || f.id.is_empty() {
            return Err(Error::BadName {
                what: "snapshot id (1 to 127 bytes)",
            });
        }
        if f.name.len() > MAX_NAME {
            return Err(Error::BadName {
                what: "snapshot name longer than 255 bytes",
            });
        }
        let mut bytes = [0u8; MAX_ENTRY];
        let mut put = |at: usize, v: &[u8]| {
            if let Some(d) = bytes.get_mut(at..at + v.len()) {
                d.copy_from_slice(v);
            }
        };
        put(0, &f.l1_table_offset.to_be_bytes());
        put(8, &f.l1_size.to_be_bytes());
        put(12, &(f.id.len() as u16).to_be_bytes());
        put(14, &(f.name.len() as u16).to_be_bytes());
        put(16, &f.date_sec.to_be_bytes());
        put(20, &f.date_nsec.to_be_bytes());
        put(24, &f.vm_clock_nsec.to_be_bytes());
        // 32: the 32-bit VM state size (0), 36: extra data size.
        put(36, &(EXTRA as u32).to_be_bytes());
        put(ENTRY + 8, &f.disk_size.to_be_bytes());
        put(ENTRY + 16, &f.icount.to_be_bytes());
        put(ENTRY + EXTRA, f.id.as_bytes());
        put(ENTRY + EXTRA + f.id.len(), f.name.as_bytes());
        let len = (ENTRY + EXTRA + f.id.len() + f.name.len()).div_ceil(8) * 8;
        Ok(Self { bytes, len })
    }

    fn bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl Qcow2 {
    /// Replaces the snapshot table by one without the bytes `drop` (an entry of the old table,
    /// `None` to keep all) and with `add` appended; `count` entries in all. The caller holds
    /// the allocation lock, has drained the node, and has made everything the new table refers
    /// to stable.
    pub(crate) async fn rewrite_snapshot_table(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        file: NodeId,
        drop: Option<Region>,
        add: Option<&EncodedEntry>,
        count: u32,
    ) -> Result<()> {
        if count > MAX_SNAPSHOTS {
            return Err(Error::NoSpace {
                what: "snapshot table (QEMU's limit of 65536 snapshots)",
            });
        }
        let cs = self.cluster_size();
        let old = self.meta.get().snapshots;
        let dropped = drop.map_or(0, |d| d.len);
        let added = add.map_or(0, |a| a.len as u64);
        let new_len = old.len - dropped + added;
        if new_len > MAX_SNAPSHOT_TABLE_BYTES {
            return Err(Error::NoSpace {
                what: "snapshot table (QEMU's limit of 64 MiB)",
            });
        }
        let new_at = if count == 0 {
            0
        } else {
            let (at, _) = self
                .alloc_clusters(io, node, file, new_len.div_ceil(cs), true)
                .await?;
            // The pieces of the old table kept, in order, then the new entry.
            let (head, tail) = match drop {
                Some(d) => (
                    Region::new(old.start, d.start - old.start),
                    Region::new(d.end(), old.end() - d.end()),
                ),
                None => (old, Region::new(old.end(), 0)),
            };
            self.copy_upto(io, file, head.start, at, head.len).await?;
            self.copy_upto(io, file, tail.start, at + head.len, tail.len)
                .await?;
            if let Some(a) = add {
                child_io::write(io, file, at + head.len + tail.len, a.bytes()).await?;
            }
            at
        };
        // The table and the refcounts of everything it names are stable before the header
        // names it.
        self.flush_caches(io, node).await?;
        let mut hdr = [0u8; 12];
        hdr[..4].copy_from_slice(&count.to_be_bytes());
        hdr[4..].copy_from_slice(&new_at.to_be_bytes());
        child_io::write(io, file, NB_SNAPSHOTS, &hdr).await?;
        flush::flush_leaves(io, file).await?;
        self.snap_table.set((new_at, count));
        let mut meta = self.meta.get();
        meta.snapshots = Region::new(new_at, if count == 0 { 0 } else { new_len });
        self.meta.set(meta);
        self.drop_clusters(io, file, old.start, old.len).await
    }

    /// Copies `len` bytes of the file from `from` to `to`; bytes past the end of the file read
    /// as zeros (the last entry's padding need not be there).
    async fn copy_upto(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        from: u64,
        to: u64,
        len: u64,
    ) -> Result<()> {
        let mut bounce = io.bounce.take_for_copy(1).await?;
        let buf = bounce.get(0).ok_or(Error::NoSpace {
            what: "bounce buffers",
        })?;
        let mut at = 0;
        while at < len {
            let n = ((len - at) as usize).min(buf.len());
            let piece = buf.get_mut(..n).ok_or(Error::NoSpace {
                what: "bounce buffers",
            })?;
            let got = child_io::read_upto(io, file, from + at, piece).await?;
            if let Some(rest) = piece.get_mut(got..) {
                rest.fill(0);
            }
            child_io::write(io, file, to + at, piece).await?;
            at += n as u64;
        }
        Ok(())
    }
}

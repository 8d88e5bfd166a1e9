//! Internal snapshots (`qcow2.txt`, "Snapshots"): the snapshot table walked entry by entry
//! (entries have variable length), checked at open, listed for `img info`, and looked up by name
//! or id so a snapshot can be opened read-only (its L1 table replaces the active one).
//!
//! Written on read-write nodes: [`create`], [`apply`] and [`delete`] (QEMU's
//! `qcow2-snapshot.c`), over [`lookup`] (which entry a key names), [`refcount_walk`] (one more or
//! one less reference on a whole L1 tree, COPIED bits fixed) and [`table_write`] (a new table
//! switched in by the header).

mod apply;
pub mod create;
mod delete;
pub mod lookup;
mod refcount_walk;
mod table_write;

pub use create::NewSnapshot;
pub use lookup::Lookup;
pub use table_write::{MAX_ID, MAX_NAME};

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::io::child_io;

use super::header::Header;
use super::validation::{self, Region, Table};

/// Longest extra data QEMU accepts in an entry.
pub const MAX_EXTRA: u32 = 1024;
/// Bytes of id and name kept in a [`SnapshotInfo`] (longer ones are cut; lookups compare only
/// names that fit).
pub const MAX_KEPT_NAME: usize = 128;

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawEntry {
    l1_table_offset: U64,
    l1_size: U32,
    id_str_size: U16,
    name_size: U16,
    date_sec: U32,
    date_nsec: U32,
    vm_clock_nsec: U64,
    vm_state_size: U32,
    extra_data_size: U32,
}

const ENTRY: usize = 40;

/// One snapshot, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Position in the table.
    pub index: u32,
    /// Its L1 table.
    pub l1_table_offset: u64,
    /// Entries in it.
    pub l1_size: u32,
    /// Unique id (cut at [`MAX_KEPT_NAME`]).
    pub id: heapless::String<MAX_KEPT_NAME>,
    /// Name (cut at [`MAX_KEPT_NAME`]).
    pub name: heapless::String<MAX_KEPT_NAME>,
    /// Full id length in bytes.
    pub id_len: u16,
    /// Full name length in bytes.
    pub name_len: u16,
    /// Seconds since the epoch when taken.
    pub date_sec: u32,
    /// Nanoseconds part.
    pub date_nsec: u32,
    /// Guest run time in nanoseconds.
    pub vm_clock_nsec: u64,
    /// VM state bytes.
    pub vm_state_size: u64,
    /// Virtual disk size when taken (the image's size if the entry does not say).
    pub disk_size: u64,
    /// Instructions counted (record/replay), if stored.
    pub icount: Option<u64>,
}

/// Extra data every entry of a version 3 image has ("Version 3 images must include extra data at
/// least up to byte 55": the VM state size and the virtual disk size).
pub const V3_MIN_EXTRA: u32 = 16;

/// A walk over the snapshot table.
pub struct Walk {
    pos: u64,
    index: u32,
    count: u32,
    start: u64,
    cluster_size: u64,
    image_size: u64,
    min_extra: u32,
}

impl Walk {
    /// Starts at the snapshot table `header` names.
    pub fn new(header: &Header) -> Self {
        Self::at(header, header.snapshots_offset, header.nb_snapshots)
    }

    /// Starts at the table of `count` entries at `offset` of an image with header `header`
    /// (the table a read-write node has written since it was opened).
    pub fn at(header: &Header, offset: u64, count: u32) -> Self {
        let min_extra = if header.version >= 3 { V3_MIN_EXTRA } else { 0 };
        Self { pos: offset, index: 0, count, start: offset, cluster_size: header.cluster_size(), image_size: header.size, min_extra }
    }

    /// Bytes walked so far (the table's length once the walk is over).
    pub fn walked(&self) -> u64 {
        self.pos - self.start
    }

    /// The next entry, checked: inside the file, extra data and L1 table within QEMU's limits.
    pub async fn next(&mut self, io: &Io<'_, '_>, file: NodeId) -> Result<Option<SnapshotInfo>> {
        if self.index >= self.count {
            return Ok(None);
        }
        let bad = |what| Err(Error::BadImage { what });
        let file_size = child_io::size(io, file)?;
        let mut raw = [0u8; ENTRY];
        if self.pos.checked_add(ENTRY as u64).is_none_or(|e| e > file_size) {
            return bad("snapshot table reaches past the end of the file");
        }
        child_io::read(io, file, self.pos, &mut raw).await?;
        let e = RawEntry::ref_from_bytes(&raw[..]).map_err(|_| Error::BadImage { what: "snapshot entry layout" })?;
        let extra = e.extra_data_size.get();
        if extra > MAX_EXTRA {
            return bad("snapshot entry: extra data larger than 1024 bytes");
        }
        // QEMU reads such an entry (taking the image's size for the snapshot's).
        if extra < self.min_extra {
            return bad("snapshot entry: version 3 needs 16 bytes of extra data");
        }
        let (id_len, name_len) = (e.id_str_size.get(), e.name_size.get());
        let body = ENTRY as u64 + u64::from(extra) + u64::from(id_len) + u64::from(name_len);
        // The padding after the last entry need not be in the file (QEMU writes the table
        // without it).
        if self.pos + body > file_size {
            return bad("snapshot table reaches past the end of the file");
        }
        let end = self.pos + body.div_ceil(8) * 8;
        if end - self.start > validation::MAX_SNAPSHOT_TABLE_BYTES {
            return bad("snapshot table too large (more than 65536 snapshots or 64 MiB)");
        }
        let l1_size = e.l1_size.get();
        let l1_bytes = u64::from(l1_size) * 8;
        validation::place(Table::SnapshotL1, e.l1_table_offset.get(), l1_bytes, validation::MAX_L1_BYTES, self.cluster_size, file_size)?;
        let mut ex = [0u8; 24];
        let kept = (extra as usize).min(ex.len());
        child_io::read(io, file, self.pos + ENTRY as u64, &mut ex[..kept]).await?;
        let word = |i: usize| u64::from_be_bytes([ex[i], ex[i + 1], ex[i + 2], ex[i + 3], ex[i + 4], ex[i + 5], ex[i + 6], ex[i + 7]]);
        let vm_state_size = if kept >= 8 { word(0) } else { u64::from(e.vm_state_size.get()) };
        let disk_size = if kept >= 16 { word(8) } else { self.image_size };
        let icount = (kept >= 24).then(|| word(16)).filter(|&c| c != u64::MAX);
        let strings = self.pos + ENTRY as u64 + u64::from(extra);
        let id = read_string(io, file, strings, id_len).await?;
        let name = read_string(io, file, strings + u64::from(id_len), name_len).await?;
        let info = SnapshotInfo {
            index: self.index,
            l1_table_offset: e.l1_table_offset.get(),
            l1_size,
            id,
            name,
            id_len,
            name_len,
            date_sec: e.date_sec.get(),
            date_nsec: e.date_nsec.get(),
            vm_clock_nsec: e.vm_clock_nsec.get(),
            vm_state_size,
            disk_size,
            icount,
        };
        self.pos = end;
        self.index += 1;
        Ok(Some(info))
    }
}

/// Reads a string of `len` bytes, keeping at most [`MAX_KEPT_NAME`] (cut on a character
/// boundary; invalid UTF-8 is replaced by `?`).
async fn read_string(io: &Io<'_, '_>, file: NodeId, at: u64, len: u16) -> Result<heapless::String<MAX_KEPT_NAME>> {
    let mut buf = [0u8; MAX_KEPT_NAME];
    let n = usize::from(len).min(MAX_KEPT_NAME);
    child_io::read(io, file, at, &mut buf[..n]).await?;
    let mut s = heapless::String::new();
    let text = match core::str::from_utf8(&buf[..n]) {
        Ok(t) => t,
        Err(e) => core::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or(""),
    };
    let _ = s.push_str(text);
    if text.len() < n && s.len() < MAX_KEPT_NAME {
        let _ = s.push('?');
    }
    Ok(s)
}

/// Walks the whole table `header` names: checks every entry and returns the region it covers.
pub async fn check(io: &Io<'_, '_>, file: NodeId, header: &Header) -> Result<Region> {
    let (offset, count, cluster_size) = (header.snapshots_offset, header.nb_snapshots, header.cluster_size());
    if count > validation::MAX_SNAPSHOTS {
        return Err(Error::BadImage { what: "snapshot table too large (more than 65536 snapshots or 64 MiB)" });
    }
    let file_size = child_io::size(io, file)?;
    if count == 0 {
        // The offset of an empty table is still checked, as QEMU does.
        return validation::place(Table::Snapshots, offset, 0, validation::MAX_SNAPSHOT_TABLE_BYTES, cluster_size, file_size);
    }
    validation::place(Table::Snapshots, offset, 1, validation::MAX_SNAPSHOT_TABLE_BYTES, cluster_size, file_size)?;
    let mut walk = Walk::new(header);
    while walk.next(io, file).await?.is_some() {}
    Ok(Region::new(offset, walk.walked()))
}

/// The snapshot whose name (or, failing that, id) is `key`.
pub async fn find(
    io: &Io<'_, '_>,
    file: NodeId,
    walk: &mut Walk,
    key: &str,
    by_id: bool,
) -> Result<SnapshotInfo> {
    while let Some(s) = walk.next(io, file).await? {
        let hit = if by_id { usize::from(s.id_len) == key.len() && s.id == key } else { usize::from(s.name_len) == key.len() && s.name == key };
        if hit {
            return Ok(s);
        }
    }
    Err(Error::NotFound)
}

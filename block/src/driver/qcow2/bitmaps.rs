//! The persistent bitmap directory (`qcow2.txt`, "Bitmaps"), walked entry by entry for listing
//! (`img info`'s `bitmaps`: name, granularity, flags), with QEMU's checks
//! (`bitmap_list_load`, `check_dir_entry`): an entry that breaks one fails the walk, as it fails
//! QEMU's listing. Nothing is kept: each entry is read when asked for, its name left in the file
//! for the caller to read into its own memory.

use crate::error::{Error, Result};
use crate::io::child_io;
use crate::io::Io;
use crate::node::NodeId;

/// Bytes of an entry before its extra data and name.
const ENTRY: u64 = 24;
/// Bitmap entry flag: the bitmap was in use (not saved consistently).
pub const FLAG_IN_USE: u32 = 1 << 0;
/// Bitmap entry flag: the bitmap tracks writes (enabled).
pub const FLAG_AUTO: u32 = 1 << 1;
/// Flags QEMU refuses.
const RESERVED_FLAGS: u32 = !(FLAG_IN_USE | FLAG_AUTO);
/// QEMU's limits on an entry (`BME_*`).
const MAX_TABLE_SIZE: u32 = 0x800_0000;
const MAX_PHYS_SIZE: u64 = 0x2000_0000;
const MIN_GRANULARITY_BITS: u8 = 9;
const MAX_GRANULARITY_BITS: u8 = 31;
const MAX_NAME_SIZE: u16 = 1023;
/// The only bitmap type.
const TYPE_DIRTY_TRACKING: u8 = 1;

/// One bitmap, as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapInfo {
    /// Its bitmap table: file offset and entries.
    pub table_offset: u64,
    /// Entries in the bitmap table.
    pub table_size: u32,
    /// [`FLAG_IN_USE`], [`FLAG_AUTO`].
    pub flags: u32,
    /// Bytes of guest data one bit covers, as a power of two.
    pub granularity_bits: u8,
    /// Where the name is in the image file, and its length in bytes (at most 1023; UTF-8 as
    /// QEMU writes it, not checked).
    pub name_offset: u64,
    /// Name length in bytes.
    pub name_len: u16,
}

impl BitmapInfo {
    /// Bytes of guest data one bit covers.
    pub fn granularity(&self) -> u64 {
        1 << self.granularity_bits
    }
}

/// A walk over the bitmap directory of `count` entries in `len` bytes at `offset` of the image
/// file (what the bitmaps header extension says, when its autoclear bit is set).
#[derive(Clone, Debug)]
pub struct BitmapWalk {
    pos: u64,
    end: u64,
    seen: u32,
    count: u32,
    cluster_size: u64,
    disk_size: u64,
}

impl BitmapWalk {
    /// Starts at the directory; `cluster_size` and `disk_size` (the image's virtual size) are
    /// what entries are checked against.
    pub fn new(offset: u64, len: u64, count: u32, cluster_size: u64, disk_size: u64) -> Self {
        Self { pos: offset, end: offset.saturating_add(len), seen: 0, count, cluster_size, disk_size }
    }

    /// The next bitmap, checked; `None` after the last, once the directory was found to hold
    /// exactly `count` entries filling it.
    pub async fn next(&mut self, io: &Io<'_, '_>, file: NodeId) -> Result<Option<BitmapInfo>> {
        let broken = Err(Error::BadImage { what: "broken bitmap directory" });
        if self.pos >= self.end {
            if self.seen != self.count {
                return Err(Error::BadImage { what: "fewer bitmaps found than the header extension says" });
            }
            if self.pos != self.end || self.seen == 0 {
                return broken;
            }
            return Ok(None);
        }
        if self.end > child_io::size(io, file)? {
            return Err(Error::BadImage { what: "bitmap directory reaches past the end of the file" });
        }
        if self.pos + ENTRY > self.end {
            return broken;
        }
        self.seen += 1;
        if self.seen > self.count {
            return Err(Error::BadImage { what: "more bitmaps found than the header extension says" });
        }
        let mut raw = [0u8; ENTRY as usize];
        child_io::read(io, file, self.pos, &mut raw).await?;
        let be32 = |i: usize| u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let table_offset = (u64::from(be32(0)) << 32) | u64::from(be32(4));
        let table_size = be32(8);
        let flags = be32(12);
        let (kind, granularity_bits) = (raw[16], raw[17]);
        let name_len = u16::from_be_bytes([raw[18], raw[19]]);
        let extra = be32(20);
        let size = (ENTRY + u64::from(extra) + u64::from(name_len)).next_multiple_of(8);
        if self.pos + size > self.end {
            return broken;
        }
        if extra != 0 {
            return Err(Error::BadImage { what: "bitmap extra data is not supported" });
        }
        let info = BitmapInfo {
            table_offset,
            table_size,
            flags,
            granularity_bits,
            name_offset: self.pos + ENTRY,
            name_len,
        };
        if !self.valid(&info, kind) {
            return Err(Error::BadImage { what: "a bitmap does not satisfy the constraints" });
        }
        self.pos += size;
        Ok(Some(info))
    }

    /// QEMU's `check_dir_entry`.
    fn valid(&self, b: &BitmapInfo, kind: u8) -> bool {
        let shape = b.table_size != 0
            && b.table_offset != 0
            && b.table_offset.is_multiple_of(self.cluster_size)
            && b.table_size <= MAX_TABLE_SIZE
            && (MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&b.granularity_bits)
            && b.flags & RESERVED_FLAGS == 0
            && b.name_len <= MAX_NAME_SIZE
            && kind == TYPE_DIRTY_TRACKING;
        if !shape {
            return false;
        }
        let phys = u64::from(b.table_size) * self.cluster_size;
        if phys > MAX_PHYS_SIZE {
            return false;
        }
        // A consistent bitmap must cover the disk (an in-use one may be stale after a resize).
        b.flags & FLAG_IN_USE != 0 || self.disk_size <= (phys * 8) << b.granularity_bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(table_size: u32, flags: u32, bits: u8) -> BitmapInfo {
        BitmapInfo { table_offset: 1 << 16, table_size, flags, granularity_bits: bits, name_offset: 0, name_len: 2 }
    }

    #[test]
    fn entries_are_checked_as_qemu_checks_them() {
        let w = BitmapWalk::new(0, 0, 0, 1 << 16, 1 << 30);
        assert!(w.valid(&info(1, FLAG_AUTO, 16), TYPE_DIRTY_TRACKING));
        assert!(!w.valid(&info(1, FLAG_AUTO, 16), 2), "unknown type");
        assert!(!w.valid(&info(1, 1 << 2, 16), TYPE_DIRTY_TRACKING), "reserved flag");
        assert!(!w.valid(&info(1, 0, 8), TYPE_DIRTY_TRACKING), "granularity under 512");
        assert!(!w.valid(&info(0, 0, 16), TYPE_DIRTY_TRACKING), "empty table");
        // One 64 KiB cluster of bits at 512 B granularity covers 256 MiB: not a 1 GiB disk,
        // unless the bitmap is in use.
        assert!(!w.valid(&info(1, 0, 9), TYPE_DIRTY_TRACKING));
        assert!(w.valid(&info(1, FLAG_IN_USE, 9), TYPE_DIRTY_TRACKING));
    }
}

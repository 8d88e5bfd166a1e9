//! Reads a dm-log-writes log, as QEMU's `blklogwrites` filter writes it (`--drive ...,log=`).
//!
//! The format (Linux `Documentation/admin-guide/device-mapper/log-writes.rst`, QEMU
//! `block/blklogwrites.c`), all fields little-endian, in log sectors of `sectorsize` bytes:
//! sector 0 is the superblock `{magic, version = 1, nr_entries, sectorsize}`; from sector 1,
//! each entry is one sector holding `{sector, nr_sectors, flags, data_len}` followed (unless it
//! is a discard) by `nr_sectors` sectors of data. QEMU logs a write-zeroes as a plain write whose
//! data sectors are zeros, and a flush as an entry with the FLUSH flag and no sectors.
//!
//! QEMU rewrites the superblock's `nr_entries` only on a flush (and, from 3.1, every 4096
//! entries), so the entries are read to the end of the file: `nr_entries` is a lower bound.

use std::ops::Range;

/// The superblock's magic (`"jsfwshr\0"` read little-endian).
pub const MAGIC: u64 = 0x6a_7366_7773_6872;
/// Entry flag: a flush (preflush) — everything logged before it is stable.
pub const FLUSH: u64 = 1;
/// Entry flag: force unit access.
pub const FUA: u64 = 2;
/// Entry flag: a discard (no data follows).
pub const DISCARD: u64 = 4;
/// Entry flag: a mark (a user label; QEMU writes none).
pub const MARK: u64 = 8;

/// One logged request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// First device sector (of [`Log::sector_size`] bytes).
    pub sector: u64,
    /// Sectors covered (0 for a flush).
    pub sectors: u64,
    /// [`FLUSH`], [`FUA`], [`DISCARD`], [`MARK`].
    pub flags: u64,
    /// Where the data is in [`Log::bytes`] (empty for flushes and discards).
    pub data: Range<usize>,
}

impl Entry {
    /// A flush entry.
    pub fn is_flush(&self) -> bool {
        self.flags & FLUSH != 0
    }

    /// A discard entry.
    pub fn is_discard(&self) -> bool {
        self.flags & DISCARD != 0
    }
}

/// A whole log in memory.
pub struct Log {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Log sector size (and device sector size of the entries).
    pub sector_size: u64,
    /// `nr_entries` of the superblock.
    pub super_entries: u64,
    /// The entries, in log order.
    pub entries: Vec<Entry>,
}

impl Log {
    /// The data of `entry`.
    pub fn data(&self, entry: &Entry) -> &[u8] {
        self.bytes.get(entry.data.clone()).unwrap_or_default()
    }
}

fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a log; an entry that runs past the end of the file (a log cut short) ends it.
pub fn parse(bytes: Vec<u8>) -> Result<Log, String> {
    let magic = le64(&bytes, 0).ok_or("the log is shorter than its superblock")?;
    if magic != MAGIC {
        return Err(format!("bad log magic {magic:#x}"));
    }
    let version = le64(&bytes, 8).unwrap_or(0);
    if version != 1 {
        return Err(format!("log version {version}, expected 1"));
    }
    let super_entries = le64(&bytes, 16).unwrap_or(0);
    let sector_size = bytes.get(24..28).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if !sector_size.is_power_of_two() || sector_size < 32 {
        return Err(format!("log sector size {sector_size}"));
    }
    let ss = sector_size as usize;
    let mut entries = Vec::new();
    let mut at = ss;
    while let (Some(sector), Some(sectors), Some(flags)) = (le64(&bytes, at), le64(&bytes, at + 8), le64(&bytes, at + 16)) {
        if flags & !(FLUSH | FUA | DISCARD | MARK) != 0 {
            return Err(format!("entry {} at log byte {at}: bad flags {flags:#x}", entries.len()));
        }
        let data_start = at + ss;
        let data_len = if flags & DISCARD != 0 { 0 } else { usize::try_from(sectors).ok().and_then(|n| n.checked_mul(ss)).ok_or("entry too long")? };
        let data_end = data_start.checked_add(data_len).ok_or("entry too long")?;
        if data_end > bytes.len() || (sector == 0 && sectors == 0 && flags == 0) {
            break;
        }
        let data = if flags & DISCARD != 0 { data_start..data_start } else { data_start..data_end };
        entries.push(Entry { sector, sectors, flags, data });
        at = data_end;
    }
    if (entries.len() as u64) < super_entries {
        return Err(format!("the superblock counts {super_entries} entries, the file holds {}", entries.len()));
    }
    Ok(Log { bytes, sector_size: u64::from(sector_size), super_entries, entries })
}

/// Reads and parses the log at `path`.
pub fn read(path: &std::path::Path) -> Result<Log, String> {
    parse(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(out: &mut Vec<u8>, sector: u64, data: &[u8], flags: u64) {
        let mut head = [0u8; 512];
        let n = if flags & FLUSH != 0 { 0 } else { (data.len() / 512).max(1) as u64 };
        for (i, v) in [sector, n, flags, 0].into_iter().enumerate() {
            head[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&head);
        if flags & DISCARD == 0 {
            out.extend_from_slice(data);
        }
    }

    #[test]
    fn reads_writes_flushes_and_discards() {
        let mut log = vec![0u8; 512];
        log[..8].copy_from_slice(&MAGIC.to_le_bytes());
        log[8] = 1;
        log[16] = 2;
        log[24..28].copy_from_slice(&512u32.to_le_bytes());
        entry(&mut log, 8, &[7u8; 1024], 0);
        entry(&mut log, 0, &[], FLUSH);
        entry(&mut log, 4, &[], DISCARD);
        let mut cut_short = log.clone();
        entry(&mut cut_short, 1, &[9u8; 512], 0);
        cut_short.truncate(cut_short.len() - 1);
        for bytes in [log, cut_short] {
            let l = parse(bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(l.entries.len(), 3);
            assert_eq!((l.entries[0].sector, l.entries[0].sectors), (8, 2));
            assert_eq!(l.data(&l.entries[0]), &[7u8; 1024][..]);
            assert!(l.entries[1].is_flush() && l.data(&l.entries[1]).is_empty());
            assert!(l.entries[2].is_discard() && l.entries[2].sectors == 1);
        }
        assert!(parse(vec![0u8; 512]).is_err());
    }
}

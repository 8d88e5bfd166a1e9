//! One problem the check found, and its message as QEMU prints it (`qcow2-refcount.c`), so a
//! caller can print it without the block layer building a string.

use core::fmt;

/// One problem, repair or note. `repairing` says the check is fixing it (QEMU's "Repairing"
/// prefix instead of "ERROR").
#[allow(missing_docs)] // reason: the fields are the numbers in QEMU's message, named as there
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A reference reaches a cluster or more past the end of the file.
    PastEnd { offset: u64, size: u64 },
    /// A cluster is referenced more often than a refcount entry can count.
    Overflow { offset: u64 },
    /// An L1 entry with reserved bits set.
    L1Reserved { entry: u64 },
    /// An L1 entry's L2 table offset is not cluster-aligned.
    L2Unaligned { l2_offset: u64 },
    /// A standard L2 entry with reserved bits set.
    L2Reserved { entry: u64 },
    /// A compressed cluster with the COPIED flag.
    CompressedCopied { coffset: u64 },
    /// A compressed cluster in an image with an external data file.
    CompressedWithDataFile { index: u64, entry: u64 },
    /// A compressed cluster with a subcluster bitmap.
    CompressedBitmap { index: u64, entry: u64 },
    /// An allocated cluster whose subclusters are both allocated and zero.
    SubclusterBitmap { offset: u64 },
    /// A preallocated zero cluster at an unaligned offset.
    PreallocUnaligned { offset: u64, repairing: bool },
    /// Rewriting an L2 entry would overwrite metadata.
    OverlapCheckFailed,
    /// A data cluster at an unaligned offset.
    DataUnaligned { offset: u64 },
    /// An unallocated cluster with allocated subclusters.
    UnallocatedBitmap,
    /// A refcount table entry not cluster-aligned.
    RefblockUnaligned { index: u64 },
    /// A refcount block past the end of the file (`repairing`: the file grows over it).
    RefblockOutside { index: u64, repairing: bool },
    /// A refcount block referenced other than once.
    RefblockRefcount { index: u64, refcount: u64 },
    /// The stored refcount of a cluster cannot be read.
    CantGetRefcount { cluster: u64 },
    /// Stored and recomputed refcounts differ.
    Mismatch {
        cluster: u64,
        stored: u64,
        computed: u64,
        repairing: bool,
    },
    /// An L1 entry's COPIED flag disagrees with its L2 table's refcount.
    CopiedL2 {
        l1_index: u64,
        l1_entry: u64,
        refcount: u64,
        repairing: bool,
    },
    /// An L2 entry's COPIED flag disagrees with its data cluster's refcount.
    CopiedData {
        l2_entry: u64,
        refcount: u64,
        repairing: bool,
    },
    /// Only rebuilding the refcount structure would help and the mode does not fix errors.
    NeedRebuild,
    /// `-r all` replaces the refcount table and blocks by new ones built from the recount
    /// (QEMU's `rebuild_refcount_structure`).
    Rebuilding,
    /// After a rebuild, the recount still finds a referenced cluster with refcount 0.
    RebuiltStillBroken,
    /// More than 65536 snapshots and no `-r all` (a check error).
    SnapshotTableTooLarge { overhanging: u32 },
    /// The snapshot table offset is not cluster-aligned or too large (a check error).
    SnapshotTableOffsetInvalid,
    /// An entry's extra data is above 1024 bytes and no `-r all` (a check error).
    SnapshotExtraTooLarge { index: u32 },
    /// The table is above 64 MiB and no `-r all` (a check error).
    SnapshotTableTooBig { overhanging: u32 },
    /// The table lies where it cannot be read (a check error).
    SnapshotTableUnreadable,
    /// `-r all` drops `count` snapshots off the end (`too_big`: the table passed 64 MiB;
    /// else there were more than 65536).
    SnapshotsDiscarded { count: u32, too_big: bool },
    /// `-r all` cuts an entry's extra data to 1024 bytes.
    SnapshotExtraDiscarded { index: u32, size: u32 },
    /// A version 3 entry with less than 16 bytes of extra data.
    SnapshotIncomplete { index: u32, repairing: bool },
    /// A snapshot's L1 table offset is not cluster-aligned (the snapshot is not walked).
    SnapshotL1Unaligned { id: Label, name: Label, offset: u64 },
    /// A snapshot's L1 table is above 32 MiB (the snapshot is not walked).
    SnapshotL1TooLarge { id: Label, name: Label, size: u32 },
    /// Internal snapshots in an image with an external data file.
    SnapshotsWithDataFile { count: u32 },
    /// A metadata write would overwrite other metadata: the image is marked corrupt (QEMU's
    /// overlap check).
    MarkedCorrupt { what: &'static str },
    /// A COPIED repair's L2 write was refused by the overlap check (a check error).
    L2WriteRefused,
    /// Rewriting the snapshot table failed (a check error).
    SnapshotTableUpdateFailed { reason: &'static str },
    /// An L1 table cannot be read (it lies past 2^63).
    L1IoError,
    /// Freeing the old snapshot table after its rewrite found a cluster already free.
    FreeFailed,
}

/// A snapshot's id or name as QEMU prints it (`%s`: up to the first NUL byte), cut at
/// [`Label::CAPACITY`] bytes; invalid UTF-8 shows as U+FFFD.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label {
    bytes: [u8; Label::CAPACITY],
    len: u8,
}

impl Label {
    /// Bytes kept.
    pub const CAPACITY: usize = 64;

    /// The label of `raw` (cut at its first NUL and at the capacity).
    pub fn new(raw: &[u8]) -> Self {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let len = end.min(Self::CAPACITY);
        let mut bytes = [0u8; Self::CAPACITY];
        bytes[..len].copy_from_slice(&raw[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.as_bytes().utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |repairing: bool| if repairing { "Repairing" } else { "ERROR" };
        match *self {
            Finding::PastEnd { offset, size } => write!(
                f,
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {offset:#x} size {size:#x}"
            ),
            Finding::Overflow { offset } => write!(
                f,
                "ERROR: overflow cluster offset={offset:#x}\nUse qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing"
            ),
            Finding::L1Reserved { entry } => write!(f, "ERROR found L1 entry with reserved bits set: {entry:x}"),
            Finding::L2Unaligned { l2_offset } => {
                write!(f, "ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted")
            }
            Finding::L2Reserved { entry } => write!(f, "ERROR found l2 entry with reserved bits set: {entry:x}"),
            Finding::CompressedCopied { coffset } => {
                write!(f, "ERROR: coffset={coffset:#x}: copied flag must never be set for compressed clusters")
            }
            Finding::CompressedWithDataFile { index, entry } => {
                write!(f, "ERROR compressed cluster {index} with data file, entry={entry:#x}")
            }
            Finding::CompressedBitmap { index, entry } => write!(
                f,
                "ERROR compressed cluster {index} with non-zero subcluster allocation bitmap, entry={entry:#x}"
            ),
            Finding::SubclusterBitmap { offset } => {
                write!(f, "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap")
            }
            Finding::PreallocUnaligned { offset, repairing } => write!(
                f,
                "{} offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.",
                verb(repairing)
            ),
            Finding::OverlapCheckFailed => write!(f, "ERROR: Overlap check failed"),
            Finding::DataUnaligned { offset } => {
                write!(f, "ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted.")
            }
            Finding::UnallocatedBitmap => write!(f, "ERROR: Unallocated cluster has non-zero subcluster allocation map"),
            Finding::RefblockUnaligned { index } => {
                write!(f, "ERROR refcount block {index} is not cluster aligned; refcount table entry corrupted")
            }
            Finding::RefblockOutside { index, repairing } => {
                write!(f, "{} refcount block {index} is outside image", verb(repairing))
            }
            Finding::RefblockRefcount { index, refcount } => write!(f, "ERROR refcount block {index} refcount={refcount}"),
            Finding::CantGetRefcount { cluster } => write!(f, "Can't get refcount for cluster {cluster}: Input/output error"),
            Finding::Mismatch { cluster, stored, computed, repairing } => {
                let what = if repairing {
                    "Repairing"
                } else if stored < computed {
                    "ERROR"
                } else {
                    "Leaked"
                };
                write!(f, "{what} cluster {cluster} refcount={stored} reference={computed}")
            }
            Finding::CopiedL2 { l1_index, l1_entry, refcount, repairing } => write!(
                f,
                "{} OFLAG_COPIED L2 cluster: l1_index={l1_index} l1_entry={l1_entry:x} refcount={refcount}",
                verb(repairing)
            ),
            Finding::CopiedData { l2_entry, refcount, repairing } => {
                write!(f, "{} OFLAG_COPIED data cluster: l2_entry={l2_entry:x} refcount={refcount}", verb(repairing))
            }
            Finding::NeedRebuild => write!(f, "ERROR need to rebuild refcount structures"),
            Finding::Rebuilding => write!(f, "Rebuilding refcount structure"),
            Finding::RebuiltStillBroken => write!(f, "ERROR rebuilt refcount structure is still broken"),
            Finding::SnapshotTableTooLarge { overhanging } => {
                write!(f, "ERROR snapshot table too large")?;
                if overhanging != 0 {
                    write!(f, "\nYou can force-remove all {overhanging} overhanging snapshots with qemu-img check -r all")?;
                }
                Ok(())
            }
            Finding::SnapshotTableOffsetInvalid => write!(f, "ERROR snapshot table offset invalid"),
            Finding::SnapshotExtraTooLarge { index } => write!(
                f,
                "ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry {index}\nYou can force-remove this extra metadata with qemu-img check -r all"
            ),
            Finding::SnapshotTableTooBig { overhanging } => write!(
                f,
                "ERROR failed to read the snapshot table: Snapshot table is too big\nYou can force-remove all {overhanging} overhanging snapshots with qemu-img check -r all"
            ),
            Finding::SnapshotTableUnreadable => {
                write!(f, "ERROR failed to read the snapshot table: Failed to read snapshot table: Invalid argument")
            }
            Finding::SnapshotsDiscarded { count, too_big } => {
                write!(f, "Discarding {count} overhanging snapshots")?;
                if too_big {
                    write!(f, " (snapshot table is too big)")?;
                }
                Ok(())
            }
            Finding::SnapshotExtraDiscarded { index, size } => {
                write!(f, "Discarding too much extra metadata in snapshot table entry {index} ({size} > 1024)")
            }
            Finding::SnapshotIncomplete { index, repairing } => {
                write!(f, "{} snapshot table entry {index} is incomplete", verb(repairing))
            }
            Finding::SnapshotL1Unaligned { id, name, offset } => write!(
                f,
                "ERROR snapshot {id} ({name}) l1_offset={offset:#x}: L1 table is not cluster aligned; snapshot table entry corrupted"
            ),
            Finding::SnapshotL1TooLarge { id, name, size } => write!(
                f,
                "ERROR snapshot {id} ({name}) l1_size={size:#x}: L1 table is too large; snapshot table entry corrupted"
            ),
            Finding::SnapshotsWithDataFile { count } => write!(f, "ERROR {count} snapshots in image with data file"),
            Finding::MarkedCorrupt { what } => write!(
                f,
                "qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with {what}); further corruption events will be suppressed"
            ),
            Finding::L2WriteRefused => {
                write!(f, "ERROR: Could not write L2 table; metadata overlap check failed: Input/output error")
            }
            Finding::SnapshotTableUpdateFailed { reason } => write!(f, "ERROR failed to update snapshot table: {reason}"),
            Finding::L1IoError => write!(f, "ERROR: I/O error in check_refcounts_l1"),
            Finding::FreeFailed => write!(f, "qcow2_free_clusters failed: Invalid argument"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn snapshot_messages_as_qemu_prints_them() {
        // %s stops at the first NUL; bytes that are not UTF-8 show as U+FFFD.
        let id = Label::new(b"2\0junk");
        let name = Label::new(&[b's', 0xff, b'2']);
        let f = Finding::SnapshotL1Unaligned {
            id,
            name,
            offset: 0x1d0200,
        };
        assert_eq!(
            f.to_string(),
            "ERROR snapshot 2 (s\u{FFFD}2) l1_offset=0x1d0200: L1 table is not cluster aligned; snapshot table entry corrupted"
        );
        assert_eq!(Label::new(&[b'a'; 100]).as_bytes().len(), Label::CAPACITY);
        let f = Finding::SnapshotsDiscarded {
            count: 3,
            too_big: true,
        };
        assert_eq!(
            f.to_string(),
            "Discarding 3 overhanging snapshots (snapshot table is too big)"
        );
        let f = Finding::SnapshotTableTooLarge { overhanging: 0 };
        assert_eq!(f.to_string(), "ERROR snapshot table too large");
    }
}

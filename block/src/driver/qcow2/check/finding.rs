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
        }
    }
}

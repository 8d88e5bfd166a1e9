//! The qcow2 header (`docs/interop/qcow2.txt`, "Header"): a `zerocopy` big-endian struct, parsed
//! once and checked in one function that returns a typed error ([`Error::BadImage`] for fields
//! out of range, [`Error::Unsupported`] for features Strata does not read).

use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::error::{Error, Result};

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Header length of version 2 (and the smallest file that can be a qcow2 image).
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest header length of version 3.
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Bytes of the header this driver knows (through `compression_type` and its padding).
pub const KNOWN_HEADER_LEN: usize = 112;
/// Smallest and largest cluster_bits (512 B .. 2 MiB, QEMU's limits).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest backing file name (the spec's limit).
pub const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bits.
pub mod incompat {
    /// Refcounts may be inconsistent (lazy refcounts, not closed cleanly).
    pub const DIRTY: u64 = 1 << 0;
    /// Some structure may be corrupt: never write.
    pub const CORRUPT: u64 = 1 << 1;
    /// Guest data lives in an external data file.
    pub const DATA_FILE: u64 = 1 << 2;
    /// `compression_type` is not zlib.
    pub const COMPRESSION: u64 = 1 << 3;
    /// 128-bit L2 entries with subcluster bitmaps.
    pub const EXTENDED_L2: u64 = 1 << 4;
    /// Every bit this driver understands.
    pub const KNOWN: u64 = DIRTY | CORRUPT | DATA_FILE | COMPRESSION | EXTENDED_L2;
}

/// Compatible feature bits.
pub mod compat {
    /// Lazy refcounts.
    pub const LAZY_REFCOUNTS: u64 = 1 << 0;
}

/// Autoclear feature bits.
pub mod autoclear {
    /// The bitmaps extension is consistent.
    pub const BITMAPS: u64 = 1 << 0;
    /// The external data file is a consistent raw image.
    pub const DATA_FILE_RAW: u64 = 1 << 1;
}

/// The header as stored, version 3 layout (version 2 stops at byte 72).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    magic: U32,
    version: U32,
    backing_file_offset: U64,
    backing_file_size: U32,
    cluster_bits: U32,
    size: U64,
    crypt_method: U32,
    l1_size: U32,
    l1_table_offset: U64,
    refcount_table_offset: U64,
    refcount_table_clusters: U32,
    nb_snapshots: U32,
    snapshots_offset: U64,
    incompatible_features: U64,
    compatible_features: U64,
    autoclear_features: U64,
    refcount_order: U32,
    header_length: U32,
    compression_type: u8,
    padding: [u8; 7],
}

/// Compression of compressed clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (zlib without header), the default.
    Zlib,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The name qemu-img prints.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// A header whose fields have been checked one by one (tables are placed by `validation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name (0: none).
    pub backing_file_offset: u64,
    /// Its length.
    pub backing_file_size: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Its offset.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Its length in clusters.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (all known).
    pub incompatible: u64,
    /// Compatible feature bits (unknown ones kept).
    pub compatible: u64,
    /// Autoclear feature bits (unknown ones kept).
    pub autoclear: u64,
    /// log2 of the refcount width in bits, 0..=6.
    pub refcount_order: u32,
    /// Bytes of header before the extensions.
    pub header_length: u32,
    /// Compression of compressed clusters.
    pub compression: Compression,
}

/// True if `head` starts with the qcow2 magic (the probe). The magic wins whatever follows it:
/// an image of a version Strata does not open must be refused by the qcow2 driver, never read
/// (or written over) as raw. QEMU probes version 1 as its older `qcow` format and versions 0 and
/// 4+ as raw; Strata refuses all of them (see [`Header::parse`]).
pub fn looks_like_qcow2(head: &[u8]) -> bool {
    head.get(..4) == Some(&MAGIC.to_be_bytes()[..])
}

impl Header {
    /// Parses and checks the first [`KNOWN_HEADER_LEN`] bytes of an image, of which `present`
    /// were in the file (the rest zeros).
    pub fn parse(bytes: &[u8; KNOWN_HEADER_LEN], present: usize) -> Result<Header> {
        let bad = |what| Err(Error::BadImage { what });
        if present < 8 {
            return bad("truncated: shorter than a qcow2 header");
        }
        let mut copy = *bytes;
        let raw = RawHeader::ref_from_bytes(&copy[..]).map_err(|_| Error::BadImage { what: "header layout" })?;
        if raw.magic.get() != MAGIC {
            return bad("not a qcow2 image (bad magic)");
        }
        let version = raw.version.get();
        match version {
            2 | 3 => {}
            1 => return Err(Error::Unsupported("qcow version 1 images (QEMU's older qcow format; convert them with qemu-img)")),
            _ => return Err(Error::Unsupported("qcow2 versions other than 2 and 3 (unknown qcow2 version)")),
        }
        let min = if version == 2 { V2_HEADER_LEN } else { V3_MIN_HEADER_LEN };
        if present < min as usize {
            return bad("truncated: the file ends inside the header");
        }
        let header_length = if version == 2 { V2_HEADER_LEN } else { raw.header_length.get() };
        if present < header_length.min(KNOWN_HEADER_LEN as u32) as usize || present < V2_HEADER_LEN as usize {
            return bad("truncated: the file ends inside the header");
        }
        if version == 3 && (header_length < V3_MIN_HEADER_LEN || header_length % 8 != 0) {
            return bad("header_length inconsistent (v3 needs a multiple of 8, at least 104)");
        }
        // Fields past header_length are absent: read as zeros, never as extension bytes.
        if let Some(absent) = copy.get_mut(header_length as usize..) {
            absent.fill(0);
        }
        let raw = RawHeader::ref_from_bytes(&copy[..]).map_err(|_| Error::BadImage { what: "header layout" })?;
        let cluster_bits = raw.cluster_bits.get();
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return bad("cluster_bits out of range (9..=21)");
        }
        let cluster_size = 1u64 << cluster_bits;
        if u64::from(header_length) > cluster_size {
            return bad("header_length inconsistent (larger than a cluster)");
        }
        let (incompatible, compatible, autoclear, refcount_order) = if version == 2 {
            (0, 0, 0, 4)
        } else {
            (
                raw.incompatible_features.get(),
                raw.compatible_features.get(),
                raw.autoclear_features.get(),
                raw.refcount_order.get(),
            )
        };
        if incompatible & !incompat::KNOWN != 0 {
            return Err(Error::Unsupported("unknown incompatible qcow2 feature bits"));
        }
        if raw.crypt_method.get() != 0 {
            return Err(Error::Unsupported("encrypted qcow2 images"));
        }
        if refcount_order > 6 {
            return bad("refcount_order above 6 (refcounts wider than 64 bits)");
        }
        let compression = match (raw.compression_type, incompatible & incompat::COMPRESSION != 0) {
            (0, false) => Compression::Zlib,
            (1, true) => Compression::Zstd,
            (0, true) => return bad("compression type bit set but compression_type is zlib"),
            (1, false) => return bad("compression_type set without the compression type bit"),
            _ => return bad("unknown compression_type"),
        };
        if incompatible & incompat::EXTENDED_L2 != 0 && cluster_bits < 14 {
            return bad("extended L2 entries need clusters of at least 16 KiB");
        }
        if autoclear & autoclear::DATA_FILE_RAW != 0 && incompatible & incompat::DATA_FILE == 0 {
            return bad("data-file-raw bit without an external data file");
        }
        let backing_file_offset = raw.backing_file_offset.get();
        let backing_file_size = raw.backing_file_size.get();
        if backing_file_offset != 0 {
            if backing_file_offset > cluster_size || backing_file_offset < u64::from(header_length) {
                return bad("backing file name offset outside the header cluster");
            }
            if backing_file_size > MAX_BACKING_NAME || u64::from(backing_file_size) > cluster_size - backing_file_offset {
                return Err(Error::BadName { what: "backing file name too long" });
            }
        }
        // "backing files are incompatible with raw external data files" (QEMU's create refuses
        // the pair; its open does not look).
        if backing_file_offset != 0 && autoclear & autoclear::DATA_FILE_RAW != 0 {
            return bad("raw external data file (data-file-raw bit) with a backing file");
        }
        let size = raw.size.get();
        if size > i64::MAX as u64 {
            return bad("virtual size above 2^63");
        }
        Ok(Header {
            version,
            backing_file_offset,
            backing_file_size: if backing_file_offset == 0 { 0 } else { backing_file_size },
            cluster_bits,
            size,
            l1_size: raw.l1_size.get(),
            l1_table_offset: raw.l1_table_offset.get(),
            refcount_table_offset: raw.refcount_table_offset.get(),
            refcount_table_clusters: raw.refcount_table_clusters.get(),
            nb_snapshots: raw.nb_snapshots.get(),
            snapshots_offset: raw.snapshots_offset.get(),
            incompatible,
            compatible,
            autoclear,
            refcount_order,
            header_length,
            compression,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// True if L2 entries are 128 bits with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & incompat::EXTENDED_L2 != 0
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / if self.extended_l2() { 16 } else { 8 }
    }

    /// L1 entries needed to map `size` bytes.
    pub fn l1_entries_for(&self, size: u64) -> u64 {
        let clusters = size.div_ceil(self.cluster_size());
        clusters.div_ceil(self.l2_entries())
    }
}

//! Hostile and broken qcow2 images: copies of images made by `qemu-img`, with header and table
//! bytes edited. Each must get its documented error (the `what` of `Error::BadImage`,
//! `Error::Corrupt`, `Error::BadName` or `Error::Unsupported`), and never panic or hang: every
//! open and read runs on a thread under a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use util::*;

/// A name, its edits (offset, bytes), and the error text expected.
type Case = (&'static str, Vec<(u64, Vec<u8>)>, &'static str);

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;

/// The layout of the base image, read from it.
struct Layout {
    l1: u64,
    l2: u64,
    refcount_table: u64,
    data0: u64,
    compressed_entry: u64,
    /// Where the header extensions' end marker is.
    ext_end: u64,
}

/// A 4 MiB v3 image, 64 KiB clusters: data at 0, a compressed cluster at 1 MiB.
fn base(dir: &Path) -> (PathBuf, Layout) {
    let f = dir.join("base.qcow2");
    create(&f, "cluster_size=64k", "4M", &[]);
    qio("qcow2", &f, &["write -P 0x11 0 64k", "write -c -P 0x22 1M 64k"]);
    let l1 = be64(&f, 40);
    let l2 = be64(&f, l1) & 0x00ff_ffff_ffff_fe00;
    let layout = Layout {
        l1,
        l2,
        refcount_table: be64(&f, 48),
        data0: be64(&f, l2) & 0x00ff_ffff_ffff_fe00,
        compressed_entry: be64(&f, l2 + 16 * 8),
        ext_end: {
            let mut at = u64::from(be32(&f, 100));
            while be32(&f, at) != 0 {
                at += 8 + u64::from(be32(&f, at + 4)).next_multiple_of(8);
            }
            at
        },
    };
    assert_eq!(read_all(&f, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() }), Ok(()));
    (f, layout)
}

/// A copy of `src` with `edits` (offset, bytes) applied.
fn edited(src: &Path, name: &str, edits: &[(u64, Vec<u8>)]) -> PathBuf {
    let f = copy_as(src, name);
    for (at, bytes) in edits {
        patch(&f, *at, bytes);
    }
    f
}

fn u32b(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn u64b(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

#[test]
fn hostile_headers() {
    let dir = scratch("qcow2-hostile-header");
    let (f, l) = base(&dir);
    let cases: Vec<Case> = vec![
        ("magic", vec![(0, b"QFI\xfc".to_vec())], "bad magic"),
        ("version", vec![(4, u32b(4))], "unknown qcow2 version"),
        ("cbits-low", vec![(20, u32b(8))], "cluster_bits out of range"),
        ("cbits-high", vec![(20, u32b(22))], "cluster_bits out of range"),
        ("hlen-short", vec![(100, u32b(96))], "header_length inconsistent"),
        ("hlen-odd", vec![(100, u32b(106))], "header_length inconsistent"),
        ("hlen-huge", vec![(100, u32b(1 << 20))], "header_length inconsistent"),
        ("incompat", vec![(72, u64b(1 << 9))], "unknown incompatible qcow2 feature bits"),
        ("l1-unaligned", vec![(40, u64b(l.l1 + 512))], "L1 table offset not cluster-aligned"),
        ("l1-on-header", vec![(40, u64b(0))], "L1 table overlaps the header"),
        ("l1-past-eof", vec![(40, u64b(1 << 40))], "L1 table reaches past the end of the file"),
        ("l1-too-small", vec![(36, u32b(0))], "L1 table too small for the virtual size"),
        ("l1-too-large", vec![(36, u32b(1 << 24))], "L1 table larger than 32 MiB"),
        ("l1-on-reftable", vec![(40, u64b(l.refcount_table))], "L1 table and refcount table overlap"),
        ("rt-unaligned", vec![(48, u64b(l.refcount_table + 8))], "refcount table offset not cluster-aligned"),
        ("rt-too-large", vec![(56, u32b(1 << 20))], "refcount table larger than 8 MiB"),
        ("rt-past-eof", vec![(56, u32b(100))], "refcount table reaches past the end of the file"),
        ("rt-none", vec![(56, u32b(0))], "no refcount table"),
        ("rt-on-header", vec![(48, u64b(0))], "refcount table overlaps the header"),
        ("snap-unaligned", vec![(60, u32b(1)), (64, u64b(l.l2 + 8))], "snapshot table offset not cluster-aligned"),
        ("snap-past-eof", vec![(60, u32b(1)), (64, u64b(1 << 40))], "snapshot table reaches past the end of the file"),
        ("snap-too-many", vec![(60, u32b(70000)), (64, u64b(l.l2))], "snapshot table too large"),
        // Refused for the overlap or for the garbage entry the L1 table makes (whichever is met
        // first).
        ("snap-on-l1", vec![(60, u32b(1)), (64, u64b(l.l1))], "snapshot"),
        ("snap-empty-unaligned", vec![(64, u64b(l.l2 + 8))], "snapshot table offset not cluster-aligned"),
        ("ext-end-with-length", vec![(l.ext_end, u32b(0)), (l.ext_end + 4, u32b(0x10_0000))], "header extension runs past the extension area"),
        ("refcount-order", vec![(96, u32b(7))], "refcount_order above 6"),
        ("compression-type", vec![(72, u64b(8)), (104, vec![7])], "unknown compression_type"),
        ("crypt", vec![(32, u32b(2))], "encrypted qcow2 images"),
        ("backing-too-long", vec![(8, u64b(512)), (16, u32b(1024))], "backing file name too long"),
        ("ext-overflow", vec![(112, u32b(0x1234_5678)), (116, u32b(0x7fff_0000))], "header extension runs past the extension area"),
        ("extended-l2-small", vec![(20, u32b(12)), (72, u64b(16))], "extended L2 entries need clusters of at least 16 KiB"),
    ];
    for (name, edits, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        // Opened as qcow2: probing would take a file with a bad magic for raw, as QEMU does.
        assert_refused_as(&c, Some("qcow2"), what);
    }
    // Probed, the magic wins: an unknown version is refused as qcow2, never opened as raw
    // (where a write would land on the header).
    let probed = edited(&f, "probed.qcow2", &[(4, u32b(4))]);
    let got = read_all(&probed, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() });
    assert!(got.as_ref().is_err_and(|e| e.contains("unknown qcow2 version")), "{got:?}");
}

#[test]
fn hostile_tables() {
    let dir = scratch("qcow2-hostile-tables");
    let (f, l) = base(&dir);
    let l2_0 = l.l2;
    let l2_16 = l.l2 + 16 * 8;
    let shift = 62 - (16 - 8);
    let sectors = l.compressed_entry & (((1u64 << 8) - 1) << shift);
    let coffset = l.compressed_entry & ((1u64 << shift) - 1);
    let cases: Vec<Case> = vec![
        ("l1e-unaligned", vec![(l.l1, u64b(COPIED | (l.l2 + 512)))], "L1 entry: L2 table offset not cluster-aligned"),
        ("l1e-reserved", vec![(l.l1, u64b(COPIED | 1 << 57 | l.l2))], "L1 entry: reserved bits set"),
        ("l1e-past-eof", vec![(l.l1, u64b(COPIED | 1 << 40))], "L1 entry: L2 table past the end of the file"),
        ("l1e-on-metadata", vec![(l.l1, u64b(COPIED | l.refcount_table))], "L1 entry: L2 table overlaps the header or a table"),
        ("l1e-on-l1", vec![(l.l1, u64b(COPIED | l.l1))], "L1 entry: L2 table overlaps the header or a table"),
        ("l2e-unaligned", vec![(l2_0, u64b(COPIED | (l.data0 + 512)))], "L2 entry: data cluster offset not cluster-aligned"),
        ("l2e-reserved", vec![(l2_0, u64b(COPIED | 1 << 56 | l.data0))], "L2 entry: reserved bits set"),
        ("l2e-reserved-low", vec![(l2_0, u64b(COPIED | 2 | l.data0))], "L2 entry: reserved bits set"),
        ("l2e-past-eof", vec![(l2_0, u64b(COPIED | 1 << 40))], "L2 entry: data cluster past the end of the file"),
        ("l2e-on-cluster1", vec![(l2_0, u64b(COPIED | 1 << 16))], "L2 entry: data cluster overlaps the header or a table"),
        ("l2e-on-l1", vec![(l2_0, u64b(COPIED | l.l1))], "L2 entry: data cluster overlaps the header or a table"),
        ("l2e-on-reftable", vec![(l2_0, u64b(COPIED | l.refcount_table))], "L2 entry: data cluster overlaps the header or a table"),
        ("compressed-past-eof", vec![(l2_16, u64b(COMPRESSED | sectors | 1 << 40))], "compressed cluster starts past the end of the file"),
        ("compressed-garbage", vec![(coffset, vec![0xff; 512])], "compressed cluster"),
        ("compressed-shifted", vec![(l2_16, u64b(COMPRESSED | sectors | (coffset + 3)))], "compressed cluster"),
    ];
    for (name, edits, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        assert_refused(&c, what);
    }
    // Truncated files.
    for (name, len, what) in [
        ("trunc-4", 4u64, "truncated"),
        ("trunc-80", 80, "truncated: the file ends inside the header"),
        ("trunc-header-cluster", 65536, "reaches past the end of the file"),
        ("trunc-data", l.data0 + 4096, "L2 entry"),
    ] {
        let c = copy_as(&f, &format!("{name}.qcow2"));
        std::fs::OpenOptions::new().write(true).open(&c).unwrap().set_len(len).unwrap();
        let opts = qemu_runner::img::image::OpenOptions { read_only: true, format: Some("qcow2".into()), ..Default::default() };
        match read_all(&c, opts) {
            Ok(()) if name == "trunc-data" => {} // the data cluster ends past EOF: zeros, as QEMU
            Ok(()) => panic!("{name} read"),
            Err(e) => assert!(e.contains(what), "{name}: expected {what}, got {e}"),
        }
    }
}

#[test]
fn hostile_subclusters_and_names() {
    let dir = scratch("qcow2-hostile-sub");
    let f = dir.join("ext.qcow2");
    create(&f, "extended_l2=on,cluster_size=64k", "1M", &[]);
    qio("qcow2", &f, &["write -P 0x33 0 8k"]);
    let l2 = be64(&f, be64(&f, 40)) & 0x00ff_ffff_ffff_fe00;
    let entry = be64(&f, l2);
    // Subcluster 3 both allocated and zero.
    let both = edited(&f, "both.qcow2", &[(l2 + 8, u64b(1 << 3 | 1 << 35 | 3))]);
    assert_refused(&both, "subcluster bitmap: a subcluster both allocated and reading as zeros");
    // Allocated subclusters without a host cluster.
    let nohost = edited(&f, "nohost.qcow2", &[(l2, u64b(0)), (l2 + 8, u64b(1))]);
    assert_refused(&nohost, "subcluster bitmap: allocated subclusters without a host cluster");
    assert_ne!(entry, 0);
    // A data-file name longer than 1023 bytes.
    let d = dir.join("df.qcow2");
    create(&d, &format!("data_file={}", dir.join("df.data").to_str().unwrap()), "1M", &[]);
    let at = find_extension(&d, 0x4441_5441).unwrap();
    let long = edited(&d, "df-long.qcow2", &[(at + 4, u32b(1100))]);
    assert_refused(&long, "data file name too long");
    // The data-file bit without a name.
    let unnamed = edited(&d, "df-unnamed.qcow2", &[(at, u32b(0x1234_5678))]);
    assert_refused(&unnamed, "external data file needed but not named");
}

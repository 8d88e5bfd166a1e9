//! Hostile and broken qcow2 images: copies of images made by `qemu-img`, with header and table
//! bytes edited. Each must get its documented error (the `what` of `Error::BadImage`,
//! `Error::Corrupt`, `Error::BadName` or `Error::Unsupported`), and never panic or hang: every
//! open and read runs on a thread under a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use util::*;

/// Edits to an image: (offset, bytes).
type Edits = Vec<(u64, Vec<u8>)>;

/// A name, its edits, and the error text expected.
type Case = (&'static str, Edits, &'static str);

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

/// Rules about one L2 entry (`docs/qcow2-rules.md`, "L2 entries"), refused when the entry is
/// used, never at open.
#[test]
fn rules_entries() {
    let dir = scratch("qcow2-rules-entries");
    let (f, l) = base(&dir);
    let l2_0 = l.l2;
    let l2_1 = l.l2 + 8;
    let l2_16 = l.l2 + 16 * 8;
    let shift = 62 - (16 - 8);
    let coffset = l.compressed_entry & ((1u64 << shift) - 1);
    // QEMU's own last compressed cluster ends inside a sector past the end of the file: the
    // base image reads (checked in `base`), so that much must stay allowed.
    let sectors = ((l.compressed_entry >> shift) & 0xff) + 1;
    let file_len = std::fs::metadata(&f).unwrap().len();
    assert!((coffset & !511) + sectors * 512 > file_len, "the base image no longer ends inside its last compressed sector");
    let cases: Vec<Case> = vec![
        ("l2e-on-own-l2", vec![(l2_0, u64b(COPIED | l.l2))], "L2 entry: data cluster is the L2 table holding the entry"),
        ("zero-prealloc-on-l1", vec![(l2_0, u64b(COPIED | 1 | l.l1))], "L2 entry: data cluster overlaps the header or a table"),
        ("zero-prealloc-on-header", vec![(l2_1, u64b(1 | 1 << 16))], "L2 entry: data cluster overlaps the header or a table"),
        ("copied-no-host", vec![(l2_1, u64b(COPIED))], "L2 entry: COPIED flag without a host cluster"),
        ("compressed-copied", vec![(l2_16, u64b(l.compressed_entry | COPIED))], "L2 entry: compressed cluster with the COPIED flag set"),
        (
            "compressed-extent-past-eof",
            vec![(l2_16, u64b(COMPRESSED | 0xff << shift | coffset))],
            "L2 entry: compressed cluster's sectors run past the end of the file",
        ),
    ];
    for (name, edits, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        // The entry rules are checked at use: the image opens (info works), reading refuses it.
        assert_eq!(img(&["info", c.to_str().unwrap()]), 0, "{name}: open");
        assert_refused(&c, what);
    }

    // Version 2: no zero flag.
    let v2 = dir.join("v2.qcow2");
    create(&v2, "compat=0.10,cluster_size=64k", "1M", &[]);
    qio("qcow2", &v2, &["write -P 0x11 0 64k"]);
    let v2_l2 = be64(&v2, be64(&v2, 40)) & 0x00ff_ffff_ffff_fe00;
    let c = edited(&v2, "v2-zero-flag.qcow2", &[(v2_l2 + 8, u64b(1))]);
    assert_refused(&c, "L2 entry: zero flag in a version 2 image");
    let c = edited(&v2, "v2-zero-flag-alloc.qcow2", &[(v2_l2, u64b(be64(&v2, v2_l2) | 1))]);
    assert_refused(&c, "L2 entry: zero flag in a version 2 image");
}

/// Extended L2 entries: bit 0 is always 0, a compressed cluster's bitmap is reserved.
#[test]
fn rules_extended_l2() {
    let dir = scratch("qcow2-rules-ext");
    let f = dir.join("ext.qcow2");
    create(&f, "extended_l2=on,cluster_size=64k", "1M", &[]);
    qio("qcow2", &f, &["write -P 0x33 0 8k", "write -c -P 0x44 64k 64k"]);
    assert_eq!(read_all(&f, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() }), Ok(()));
    let l2 = be64(&f, be64(&f, 40)) & 0x00ff_ffff_ffff_fe00;
    let (e0, e1) = (be64(&f, l2), be64(&f, l2 + 16));
    assert_ne!(e1 & COMPRESSED, 0, "cluster 1 is compressed");
    let cases: Vec<Case> = vec![
        ("ext-zero-flag", vec![(l2, u64b(e0 | 1))], "L2 entry: zero flag set with extended L2 entries"),
        ("ext-zero-flag-unalloc", vec![(l2 + 32, u64b(1))], "L2 entry: zero flag set with extended L2 entries"),
        ("ext-compressed-bitmap", vec![(l2 + 24, u64b(1 << 32))], "subcluster bitmap: nonzero for a compressed cluster"),
        ("ext-compressed-alloc-bits", vec![(l2 + 24, u64b(1))], "subcluster bitmap: nonzero for a compressed cluster"),
        ("ext-on-own-l2", vec![(l2, u64b(COPIED | l2))], "L2 entry: data cluster is the L2 table holding the entry"),
        // No subcluster allocated, so nothing is read from it: found when decoded all the same.
        ("ext-prealloc-on-l1", vec![(l2 + 32, u64b(COPIED | be64(&f, 40))), (l2 + 40, u64b(0))], "L2 entry: data cluster overlaps the header or a table"),
    ];
    for (name, edits, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        assert_refused(&c, what);
    }
}

/// Feature combinations and extensions the spec forbids, refused at open.
#[test]
fn rules_features() {
    let dir = scratch("qcow2-rules-features");
    let (f, _) = base(&dir);
    let names = find_extension(&f, 0x6803_f857).expect("a feature name table");
    let cases: Vec<Case> = vec![
        ("crypto-ext", vec![(names, u32b(0x0537_be77))], "full disk encryption header extension without LUKS encryption"),
        ("bitmaps-bit-no-ext", vec![(88, u64b(1))], "bitmaps bit set without a bitmaps extension"),
        ("bitmaps-ext-len", vec![(names, u32b(0x2385_2875))], "bitmaps extension length not 24"),
    ];
    for (name, edits, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        assert_refused_as(&c, Some("qcow2"), what);
    }

    // The bitmaps extension's fields, when the autoclear bit says they are valid.
    let b = dir.join("bitmaps.qcow2");
    create(&b, "cluster_size=64k", "1M", &[]);
    qimg(&["bitmap", "--add", b.to_str().unwrap(), "b0"]);
    assert_eq!(read_all(&b, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() }), Ok(()));
    let at = find_extension(&b, 0x2385_2875).expect("a bitmaps extension") + 8;
    let dir_offset = be64(&b, at + 16);
    let cases: Vec<Case> = vec![
        ("bitmaps-none", vec![(at, u32b(0))], "bitmaps extension: number of bitmaps not in 1..=65535"),
        ("bitmaps-too-many", vec![(at, u32b(65536))], "bitmaps extension: number of bitmaps not in 1..=65535"),
        ("bitmaps-reserved", vec![(at + 4, u32b(1))], "bitmaps extension: reserved field not zero"),
        ("bitmaps-dir-large", vec![(at + 8, u64b(1 << 30))], "bitmaps extension: bitmap directory too large"),
        ("bitmaps-dir-unaligned", vec![(at + 16, u64b(dir_offset + 8))], "bitmaps extension: bitmap directory offset not cluster-aligned"),
    ];
    for (name, edits, what) in cases {
        let c = edited(&b, &format!("{name}.qcow2"), &edits);
        assert_refused(&c, what);
    }

    // An external data file: no internal snapshots, no backing file if it is raw; its name
    // only with the feature bit. Each edit leaves an image that would open and read otherwise.
    let d = dir.join("df.qcow2");
    create(&d, &format!("data_file={},data_file_raw=on,cluster_size=64k", dir.join("df.data").to_str().unwrap()), "1M", &[]);
    std::fs::write(dir.join("b.raw"), vec![0x77u8; 1 << 20]).unwrap();
    let d_ext_end = {
        let mut at = u64::from(be32(&d, 100));
        while be32(&d, at) != 0 {
            at += 8 + u64::from(be32(&d, at + 4)).next_multiple_of(8);
        }
        at
    };
    // One snapshot entry in a cluster appended to the file, naming the active L1 table.
    let snap_at = std::fs::metadata(&d).unwrap().len().next_multiple_of(1 << 16);
    let mut entry = [u64b(be64(&d, 40)), u32b(be32(&d, 36)), vec![0, 1, 0, 1], vec![0; 20], u32b(16), u64b(0), u64b(1 << 20), b"1s".to_vec()].concat();
    entry.resize(1 << 16, 0);
    let cases: Vec<Case> = vec![
        ("df-snapshots", vec![(60, u32b(1)), (64, u64b(snap_at)), (snap_at, entry)], "internal snapshots in an image with an external data file"),
        (
            "df-raw-backing",
            vec![(8, u64b(d_ext_end + 8)), (16, u32b(5)), (d_ext_end + 8, b"b.raw".to_vec())],
            "raw external data file (data-file-raw bit) with a backing file",
        ),
    ];
    let opts = || qemu_runner::img::image::OpenOptions { read_only: true, allow_backing_anywhere: true, ..Default::default() };
    for (name, edits, what) in cases {
        let c = edited(&d, &format!("{name}.qcow2"), &edits);
        let got = read_all(&c, opts());
        assert!(got.as_ref().is_err_and(|e| e.contains(what)), "{name}: {got:?}");
    }
    // Not raw, nothing written: without the bit the image would read as an empty one.
    let d0 = dir.join("df0.qcow2");
    create(&d0, &format!("data_file={}", dir.join("df0.data").to_str().unwrap()), "1M", &[]);
    let c = edited(&d0, "df-name-without-bit.qcow2", &[(72, u64b(0))]);
    let got = read_all(&c, opts());
    assert!(got.as_ref().is_err_and(|e| e.contains("external data file name without the external data file bit")), "{got:?}");
}

/// Snapshot table entries: version 3 extra data, a snapshot's L1 table off the other tables.
#[test]
fn rules_snapshots() {
    let dir = scratch("qcow2-rules-snap");
    let (f, l) = base(&dir);
    qimg(&["snapshot", "-c", "s1", f.to_str().unwrap()]);
    let table = be64(&f, 64);
    let opts = |snap: bool| qemu_runner::img::image::OpenOptions {
        read_only: true,
        format: Some("qcow2".into()),
        extra: snap.then(|| "snapshot.name=s1".to_string()),
        ..Default::default()
    };
    assert_eq!(read_all(&f, opts(true)), Ok(()));
    let short = edited(&f, "snap-short-extra.qcow2", &[(table + 36, u32b(8))]);
    let got = read_all(&short, opts(false));
    assert!(got.as_ref().is_err_and(|e| e.contains("snapshot entry: version 3 needs 16 bytes of extra data")), "{got:?}");
    let on_l1 = edited(&f, "snap-l1-on-active.qcow2", &[(table, u64b(be64(&f, 40)))]);
    assert_eq!(read_all(&on_l1, opts(false)), Ok(()), "the active image does not read the snapshot's L1 table");
    let got = read_all(&on_l1, opts(true));
    assert!(got.as_ref().is_err_and(|e| e.contains("snapshot L1 table overlaps the header or a table")), "{got:?}");
    let on_rt = edited(&f, "snap-l1-on-reftable.qcow2", &[(table, u64b(l.refcount_table))]);
    let got = read_all(&on_rt, opts(true));
    assert!(got.as_ref().is_err_and(|e| e.contains("snapshot L1 table overlaps the header or a table")), "{got:?}");
}

/// Opens `file` read-write and writes 64 KiB at `offset`; the error text, if any.
fn write_at(file: &Path, offset: u64) -> Result<(), String> {
    use qemu_runner::img::image;
    let f = file.to_str().unwrap().to_string();
    with_timeout(move || {
        let opts = image::OpenOptions { format: Some("qcow2".into()), ..Default::default() };
        image::with_image(&f, &opts, |img| {
            let buf = vec![0x5au8; 65536];
            image::block_on(img.backend.write(offset, &buf)).map_err(|e| qemu_runner::img::ImgError::failed(format!("write at {offset}: {e}")))
        })
        .map_err(|e| e.to_string())
    })?
}

/// Header fields and extensions whose checks had no test of their own.
#[test]
fn rules_header_fields() {
    let dir = scratch("qcow2-rules-header");
    let (f, l) = base(&dir);
    let names = find_extension(&f, 0x6803_f857).expect("a feature name table");
    let mut many = Vec::new();
    for i in 0..1025u64 {
        many.push((l.ext_end + i * 8, [u32b(0x1234_5678), u32b(0)].concat()));
    }
    let cases: Vec<Case> = vec![
        ("backing-offset-past-cluster", vec![(8, u64b(1 << 20)), (16, u32b(4))], "backing file name offset outside the header cluster"),
        ("backing-offset-in-header", vec![(8, u64b(8)), (16, u32b(4))], "backing file name offset outside the header cluster"),
        ("size-huge", vec![(24, u64b(1 << 63))], "virtual size above 2^63"),
        ("compression-bit-zlib", vec![(72, u64b(8))], "compression type bit set but compression_type is zlib"),
        ("compression-type-no-bit", vec![(104, vec![1])], "compression_type set without the compression type bit"),
        ("data-file-raw-alone", vec![(88, u64b(2))], "data-file-raw bit without an external data file"),
        ("ext-twice", vec![(l.ext_end, u32b(0x6803_f857)), (l.ext_end + 4, u32b(0)), (l.ext_end + 8, vec![0; 8])], "header extension appears twice"),
        ("backing-format-long", vec![(l.ext_end, u32b(0xe279_2aca)), (l.ext_end + 4, u32b(16)), (l.ext_end + 24, vec![0; 8])], "backing format name too long"),
        ("feature-names-47", vec![(names + 4, u32b(47))], "feature name table length not a multiple of 48"),
        ("too-many-ext", many, "too many header extensions"),
    ];
    for (name, edits, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        assert_refused_as(&c, Some("qcow2"), what);
    }
    // A bit that only a read-write open refuses (the image reads).
    let c = edited(&f, "corrupt.qcow2", &[(72, u64b(2))]);
    assert_eq!(read_all(&c, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() }), Ok(()), "corrupt");
    let got = write_at(&c, 0);
    assert!(got.as_ref().is_err_and(|e| e.contains("image is marked corrupt")), "corrupt: {got:?}");
    // The dirty bit: a read-write open repairs the refcounts first and clears it (as QEMU).
    let c = edited(&f, "dirty.qcow2", &[(72, u64b(1))]);
    assert_eq!(read_all(&c, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() }), Ok(()), "dirty");
    assert_eq!(write_at(&c, 0), Ok(()));
    assert_eq!(be64(&c, 72) & 1, 0, "dirty bit cleared");
    assert!(qimg_ok(&["check", c.to_str().unwrap()]));
    // A version 2 header ends at byte 72: what follows is the extension area, never feature
    // bits (an extended-L2 or compression bit there is an end marker's length).
    let v2 = dir.join("v2.qcow2");
    create(&v2, "compat=0.10,cluster_size=64k", "1M", &[]);
    qio("qcow2", &v2, &["write -P 0x11 0 64k"]);
    let c = edited(&v2, "v2-v3-bits.qcow2", &[(72, u64b(16 | 8)), (80, vec![0; 8])]);
    assert_eq!(read_all(&c, qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() }), Ok(()));
    check_convert(&c, &[]);
}

/// L2 entries whose checks had no test of their own.
#[test]
fn rules_entry_fields() {
    let dir = scratch("qcow2-rules-entry-fields");
    let (f, l) = base(&dir);
    let c = edited(&f, "zero-prealloc-unaligned.qcow2", &[(l.l2 + 8, u64b(1 | (l.data0 + 512)))]);
    assert_refused(&c, "L2 entry: preallocated zero cluster offset not cluster-aligned");
    // 512-byte clusters: the compressed offset field is 61 bits wide, its bits above 55 must be 0.
    let small = dir.join("c512.qcow2");
    create(&small, "cluster_size=512", "64k", &[]);
    qio("qcow2", &small, &["write -c -P 0x22 0 512"]);
    let l2 = be64(&small, be64(&small, 40)) & 0x00ff_ffff_ffff_fe00;
    let c = edited(&small, "compressed-2-56.qcow2", &[(l2, u64b(COMPRESSED | 1 << 57 | (be64(&small, l2) & ((1 << 56) - 1))))]);
    assert_refused(&c, "L2 entry: compressed cluster offset beyond 2^56");
    // External data file: host offset = guest offset, no compressed clusters.
    let d = dir.join("df.qcow2");
    create(&d, &format!("data_file={},cluster_size=64k", dir.join("df.data").to_str().unwrap()), "1M", &[]);
    qio("qcow2", &d, &["write -P 0x11 0 64k"]);
    let l2 = be64(&d, be64(&d, 40)) & 0x00ff_ffff_ffff_fe00;
    let opts = || qemu_runner::img::image::OpenOptions { read_only: true, allow_backing_anywhere: true, ..Default::default() };
    assert_eq!(read_all(&d, opts()), Ok(()));
    for (name, entry, what) in [
        ("df-offset", COPIED | 1 << 16, "L2 entry: external data file offset differs from the guest offset"),
        ("df-compressed", COMPRESSED | 1 << 16, "L2 entry: compressed cluster in an image with an external data file"),
    ] {
        let c = edited(&d, &format!("{name}.qcow2"), &[(l2, u64b(entry))]);
        let got = read_all(&c, opts());
        assert!(got.as_ref().is_err_and(|e| e.contains(what)), "{name}: {got:?}");
    }
}

/// Refcount table entries: read when a write allocates.
#[test]
fn rules_refcounts() {
    let dir = scratch("qcow2-rules-refcounts");
    let (f, l) = base(&dir);
    let rt0 = be64(&f, l.refcount_table);
    assert_eq!(write_at(&copy_as(&f, "ok.qcow2"), 2 << 20), Ok(()));
    for (name, entry, what) in [
        ("rt-reserved", rt0 | 1, "refcount table entry: reserved bits set"),
        ("rt-unaligned", rt0 + 512, "refcount table entry: block offset not cluster-aligned"),
        ("rt-past-eof", 1 << 40, "refcount table entry: block past the end of the file"),
        ("rt-on-l1", l.l1, "refcount table entry: block overlaps the header or a table"),
    ] {
        let c = edited(&f, &format!("{name}.qcow2"), &[(l.refcount_table, u64b(entry))]);
        let got = write_at(&c, 2 << 20);
        assert!(got.as_ref().is_err_and(|e| e.contains(what)), "{name}: {got:?}");
    }
}

/// Snapshot table entries whose checks had no test of their own.
#[test]
fn rules_snapshot_entries() {
    let dir = scratch("qcow2-rules-snap-entries");
    let (f, _) = base(&dir);
    qimg(&["snapshot", "-c", "s1", f.to_str().unwrap()]);
    let table = be64(&f, 64);
    let snap_l1 = be64(&f, table);
    let opts = |snap: bool| qemu_runner::img::image::OpenOptions {
        read_only: true,
        format: Some("qcow2".into()),
        extra: snap.then(|| "snapshot.name=s1".to_string()),
        ..Default::default()
    };
    // (name, edits, open the snapshot, error)
    let cases: Vec<(&str, Edits, bool, &str)> = vec![
        ("snap-l1-unaligned", vec![(table, u64b(snap_l1 + 512))], false, "snapshot L1 table offset not cluster-aligned"),
        ("snap-l1-large", vec![(table + 8, u32b(1 << 23))], false, "snapshot L1 table larger than 32 MiB"),
        ("snap-l1-past-eof", vec![(table, u64b(1 << 40))], false, "snapshot L1 table reaches past the end of the file"),
        ("snap-l1-on-header", vec![(table, u64b(0))], false, "snapshot L1 table overlaps the header"),
        ("snap-extra-large", vec![(table + 36, u32b(2000))], false, "snapshot entry: extra data larger than 1024 bytes"),
        ("snap-l1-small", vec![(table + 8, u32b(0))], true, "snapshot L1 table too small for its virtual size"),
        ("snap-size-huge", vec![(table + 48, u64b(1 << 63))], true, "snapshot virtual size above 2^63"),
    ];
    for (name, edits, snap, what) in cases {
        let c = edited(&f, &format!("{name}.qcow2"), &edits);
        let got = read_all(&c, opts(snap));
        assert!(got.as_ref().is_err_and(|e| e.contains(what)), "{name}: {got:?}");
    }
}

/// `qemu-img check`'s exit status on `file` (0 clean, 2 corruption, 3 leaks only).
fn qemu_check_status(file: &Path) -> i32 {
    ensure_qemu();
    std::process::Command::new(qemu_img()).args(["check", "-q", file.to_str().unwrap()]).status().unwrap().code().unwrap_or(-1)
}

/// The rows of `docs/qcow2-rules.md` Strata does not refuse: the two not enforced on purpose
/// (H35, E5), which QEMU's check accepts too, and those only a full check finds (L5, L6, S12,
/// S13, C7), which `qemu-img check` reports. Strata reads every one of them exactly as qemu-img
/// does (the same bytes, no error, no panic).
#[test]
fn rules_not_refused_read_as_qemu_reads() {
    let dir = scratch("qcow2-rules-unrefused");
    let (f, l) = base(&dir);
    let names = find_extension(&f, 0x6803_f857).expect("a feature name table") + 8;
    let data_entry = be64(&f, l.l2);
    // Two L2 tables: clusters at 0 and 512 MiB (one L2 table covers 512 MiB of 64 KiB clusters).
    let big = dir.join("big.qcow2");
    create(&big, "cluster_size=64k", "1G", &[]);
    qio("qcow2", &big, &["write -P 0x21 0 64k", "write -P 0x42 512M 64k"]);
    let big_l1 = be64(&big, 40);
    let first_l2 = be64(&big, big_l1);
    // (row, image, edits, qemu-img check finds it)
    type Row<'a> = (&'a str, &'a Path, Vec<(u64, Vec<u8>)>, bool);
    let cases: Vec<Row<'_>> = vec![
        ("H35-padding", &f, vec![(106, vec![0xab])], false),
        ("E5-feature-name-type-bit", &f, vec![(names, vec![7, 99])], false),
        ("L5-two-l1-entries-one-l2", &big, vec![(big_l1 + 8, u64b(first_l2))], true),
        ("L6-l1-copied-cleared", &f, vec![(l.l1, u64b(be64(&f, l.l1) & !(1 << 63)))], true),
        ("S12-two-l2-entries-one-cluster", &f, vec![(l.l2 + 8, u64b(data_entry))], true),
        ("S13-l2-copied-cleared", &f, vec![(l.l2, u64b(data_entry & !(1 << 63)))], true),
        ("C7-compressed-overlap", &f, vec![(l.l2 + 17 * 8, u64b(l.compressed_entry))], true),
    ];
    for (row, src, edits, found_by_check) in cases {
        let c = edited(src, &format!("{row}.qcow2"), &edits);
        check_convert(&c, &["-f", "qcow2"]);
        let status = qemu_check_status(&c);
        assert_eq!(status != 0, found_by_check, "{row}: qemu-img check exit {status}");
    }
}

//! qcow2 conformance, read side: images made by `qemu-img`/`qemu-io` with every feature of the
//! read driver, read through `qemu-runner img` and compared with QEMU's own tools: `img convert
//! -O raw` byte for byte with `qemu-img convert`, `img map` with `qemu-img map` (start, length,
//! data, zero). Works with QEMU 7.2 and 10.x (options 7.2 lacks are not used; zstd is skipped
//! where the build lacks it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::img::image::{self, OpenOptions};
use util::*;

/// A few writes of distinct patterns, some unaligned, some zeroing, over `size` bytes.
fn scribble(file: &std::path::Path, size: u64) {
    let cmds = [
        "write -P 0x11 0 4k".to_string(),
        format!("write -P 0x22 {} 3000", size / 3 + 777),
        format!("write -P 0x33 {} 70k", size / 2),
        format!("write -z {} 64k", size / 2 + 8192),
        format!("write -P 0x44 {} 512", size - 512),
    ];
    qio("qcow2", file, &cmds.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn versions_cluster_sizes_and_refcount_widths() {
    let dir = scratch("qcow2-basic");
    for (name, opts) in [
        ("v2.qcow2", "compat=0.10"),
        ("v3.qcow2", "compat=1.1"),
        ("c512.qcow2", "cluster_size=512"),
        ("c4k.qcow2", "cluster_size=4k"),
        ("c2m.qcow2", "cluster_size=2M"),
        ("r1.qcow2", "refcount_bits=1"),
        ("r2.qcow2", "refcount_bits=2"),
        ("r4.qcow2", "refcount_bits=4"),
        ("r8.qcow2", "refcount_bits=8"),
        ("r32.qcow2", "refcount_bits=32"),
        ("r64.qcow2", "refcount_bits=64,cluster_size=512"),
        ("lazy.qcow2", "lazy_refcounts=on"),
    ] {
        let f = dir.join(name);
        create(&f, opts, "5M", &[]);
        scribble(&f, 5 * MIB);
        check_convert(&f, &[]);
        check_map(&f);
        // Refcounts of every width read back: the header cluster is used once.
        let s = f.to_str().unwrap().to_string();
        let rc = image::with_image(&s, &OpenOptions { read_only: true, ..OpenOptions::default() }, |img| {
            let g = img.backend.graph();
            let n = g.node(img.root()).unwrap();
            let state = g.state(img.root()).unwrap().unwrap();
            let q = state.qcow2().unwrap();
            let file = n.child(qemu_runner::img::block::graph::Role::File).unwrap();
            Ok((image::block_on(q.refcount(&g.io(), file, 0)).unwrap(), image::block_on(q.refcount(&g.io(), file, 1 << 40)).unwrap()))
        })
        .unwrap();
        assert_eq!(rc, (1, 0), "{name}");
    }
}

#[test]
fn zero_unallocated_preallocated_and_odd_sizes() {
    let dir = scratch("qcow2-zero");
    // Zero clusters, plain and allocated (a zero write over data keeps the cluster), discards.
    let f = dir.join("zeros.qcow2");
    create(&f, "", "4M", &[]);
    qio("qcow2", &f, &["write -P 0x5a 0 1M", "write -z 64k 128k", "write -z 2M 256k", "discard 512k 64k"]);
    check_convert(&f, &[]);
    check_map(&f);
    for mode in ["metadata", "falloc", "full"] {
        let p = dir.join(format!("pre-{mode}.qcow2"));
        create(&p, &format!("preallocation={mode}"), "3M", &[]);
        qio("qcow2", &p, &["write -P 0x21 100k 5k"]);
        check_convert(&p, &[]);
        check_map(&p);
    }
    // Not a cluster multiple.
    let odd = dir.join("odd.qcow2");
    create(&odd, "", &format!("{}", MIB + 3 * 512), &[]);
    qio("qcow2", &odd, &[&format!("write -P 0x77 {} 512", MIB + 1024)]);
    check_convert(&odd, &[]);
    check_map(&odd);
    // Not a sector multiple (header patched): QEMU reads whole sectors of it, and so do we.
    let bytes = dir.join("bytes.qcow2");
    std::fs::copy(&odd, &bytes).unwrap();
    patch(&bytes, 24, &(MIB + 1300).to_be_bytes());
    check_convert(&bytes, &[]);
    check_map(&bytes);
}

#[test]
fn compressed_clusters() {
    let dir = scratch("qcow2-compressed");
    let raw = dir.join("src.raw");
    random_raw_disk(&raw, 3 * MIB, 5);
    // Mostly compressible data too: half the clusters get runs of one byte.
    qio("raw", &raw, &["write -P 0x61 0 512k", "write -z 1M 256k"]);
    for cs in ["4k", "64k", "2M"] {
        let c = dir.join(format!("c-{cs}.qcow2"));
        qimg(&["convert", "-q", "-c", "-O", "qcow2", "-o", &format!("cluster_size={cs}"), raw.to_str().unwrap(), c.to_str().unwrap()]);
        check_convert(&c, &[]);
        check_map(&c);
    }
    // Compressed writes by qemu-io, over partly allocated clusters, with a non-multiple size.
    let w = dir.join("written.qcow2");
    create(&w, "", "1M", &[]);
    qio("qcow2", &w, &["write -c -P 0x31 0 64k", "write -c -P 0x32 192k 64k", "write -P 0x33 64k 4k"]);
    check_convert(&w, &[]);
    check_map(&w);
    // zstd, where this QEMU has it: reads as qemu-img reads it (tests/tests/qcow2_zstd.rs has
    // more).
    let z = dir.join("zstd.qcow2");
    if qimg_ok(&["create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", z.to_str().unwrap(), "1M"]) {
        qio("qcow2", &z, &["write -c -P 0x41 0 64k", "write -P 0x42 64k 64k"]);
        check_convert(&z, &[]);
        check_map(&z);
    }
}

#[test]
fn extended_l2_alone_and_over_backing() {
    let dir = scratch("qcow2-subclusters");
    let base = dir.join("base.raw");
    random_raw_disk(&base, 2 * MIB, 11);
    for (name, backing) in [("alone.qcow2", false), ("over.qcow2", true)] {
        let f = dir.join(name);
        let extra: Vec<&str> = if backing { vec!["-b", "base.raw", "-F", "raw"] } else { vec![] };
        create(&f, "extended_l2=on,cluster_size=64k", "2M", &extra);
        qio("qcow2", &f, &["write -P 0x51 2k 2k", "write -P 0x52 10k 6k", "write -z 20k 4k", "write -P 0x53 128k 64k", "write -z 300k 70k", "write -P 0x54 1000k 1k"]);
        check_convert(&f, &[]);
        check_map(&f);
    }
}

#[test]
fn external_data_files() {
    let dir = scratch("qcow2-datafile");
    for (name, raw) in [("df.qcow2", false), ("dfraw.qcow2", true)] {
        let f = dir.join(name);
        // Absolute: QEMU 7.2 creates a relative data file relative to its working directory.
        let data = dir.join(format!("{name}.data")).to_str().unwrap().to_string();
        create(&f, &format!("data_file={data},data_file_raw={}", if raw { "on" } else { "off" }), "3M", &[]);
        qio("qcow2", &f, &["write -P 0x61 0 100k", "write -z 1M 64k", "write -P 0x62 2M 4k"]);
        check_convert(&f, &[]);
        check_map(&f);
    }
}

#[test]
fn snapshots_listed_and_read() {
    let dir = scratch("qcow2-snap");
    let f = dir.join("snap.qcow2");
    create(&f, "", "2M", &[]);
    qio("qcow2", &f, &["write -P 0x71 0 1M"]);
    qimg(&["snapshot", "-c", "first", f.to_str().unwrap()]);
    qio("qcow2", &f, &["write -P 0x72 64k 64k", "write -c -P 0x73 1M 64k"]);
    qimg(&["snapshot", "-c", "second", f.to_str().unwrap()]);
    qio("qcow2", &f, &["write -z 0 128k"]);
    check_convert(&f, &[]);
    check_convert(&f, &["-l", "snapshot.name=first"]);
    check_convert(&f, &["-l", "snapshot.name=second"]);
    check_convert(&f, &["-l", "second"]);
    assert_ne!(img(&["convert", "-l", "snapshot.name=none", "-O", "raw", f.to_str().unwrap(), dir.join("x.raw").to_str().unwrap()]), 0);
    assert_eq!(img(&["info", f.to_str().unwrap()]), 0);
    // The listing has both, in order.
    let s = f.to_str().unwrap().to_string();
    let names = image::with_image(&s, &OpenOptions { read_only: true, ..OpenOptions::default() }, |img| {
        let g = img.backend.graph();
        let n = g.node(img.root()).unwrap();
        let state = g.state(img.root()).unwrap().unwrap();
        let mut walk = state.qcow2().unwrap().snapshots();
        let file = n.child(qemu_runner::img::block::graph::Role::File).unwrap();
        let mut names = Vec::new();
        while let Some(s) = image::block_on(walk.next(&g.io(), file)).unwrap() {
            names.push(s.name.as_str().to_string());
        }
        Ok(names)
    })
    .unwrap();
    assert_eq!(names, ["first", "second"]);
}

#[test]
fn header_bits_and_extensions() {
    let dir = scratch("qcow2-bits");
    let f = dir.join("base.qcow2");
    create(&f, "", "2M", &[]);
    qio("qcow2", &f, &["write -P 0x81 0 200k"]);
    // Bitmaps extension (skipped).
    let bm = copy_as(&f, "bitmap.qcow2");
    if qimg_ok(&["bitmap", "--add", bm.to_str().unwrap(), "b0"]) {
        assert!(find_extension(&bm, 0x2385_2875).is_some());
        check_convert(&bm, &[]);
    }
    // Unknown compatible and autoclear bits are tolerated; so are dirty and corrupt images.
    for (name, offset, value) in [("compat.qcow2", 80u64, 1u64 << 40), ("autoclear.qcow2", 88, 1 << 33), ("dirty.qcow2", 72, 1), ("corrupt.qcow2", 72, 2)] {
        let c = copy_as(&f, name);
        patch(&c, offset, &value.to_be_bytes());
        assert_eq!(read_all(&c, OpenOptions { read_only: true, ..OpenOptions::default() }), Ok(()), "{name}");
        let ours = dir.join(format!("{name}.raw"));
        assert_eq!(img(&["convert", "-U", "-O", "raw", c.to_str().unwrap(), ours.to_str().unwrap()]), 0);
        assert_eq!(std::fs::read(&ours).unwrap()[..200 * 1024], vec![0x81u8; 200 * 1024][..]);
    }
    // Unknown incompatible bits are refused.
    let inc = copy_as(&f, "incompat.qcow2");
    patch(&inc, 72, &(1u64 << 20).to_be_bytes());
    assert_refused(&inc, "unknown incompatible qcow2 feature bits");
    // An unknown extension is skipped (the backing format one, renamed; see the chain tests).
}

#[test]
fn sparse_16_tib_with_a_small_cache() {
    let dir = scratch("qcow2-16t");
    let f = dir.join("huge.qcow2");
    create(&f, "", "16T", &[]);
    let spots = [0u64, 5 << 30, 1 << 40, (16 << 40) - 65536];
    let cmds: Vec<String> = spots.iter().enumerate().map(|(i, s)| format!("write -P {} {s} 64k", 0x10 + i)).collect();
    qio("qcow2", &f, &cmds.iter().map(String::as_str).collect::<Vec<_>>());
    // 64 KiB of cache (16 slices) for a 256 KiB L1 table and many L2 tables.
    let s = f.to_str().unwrap().to_string();
    let opts = OpenOptions { read_only: true, cache_bytes: Some(64 * KIB), ..OpenOptions::default() };
    let ok = image::with_image(&s, &opts, |img| {
        assert_eq!(img.backend.size(), 16 << 40);
        let mut b = vec![0u8; 65536 + 4096];
        for (i, &at) in spots.iter().enumerate() {
            let at = at.min((16 << 40) - b.len() as u64);
            image::block_on(img.backend.read(at, &mut b)).unwrap();
            let want = 0x10 + i as u8;
            assert!(b.contains(&want), "spot {i}");
            assert!(b.iter().all(|&x| x == want || x == 0), "spot {i}");
        }
        assert!(img.backend.graph().metadata_cache_stats().slots == 16);
        Ok(true)
    })
    .unwrap();
    assert!(ok);
    assert_eq!(our_map(&f, Some(64 * KIB)), qemu_map(&f));
}

//! `img convert -O qcow2 [-c]` (issue 16) against qemu-img doing the same: every output passes
//! `qemu-img check`, `qemu-img compare` finds it equal to the source, and `qemu-img map`'s
//! allocation layout (data / zero / unallocated per guest range, host offsets left out) is the
//! one `qemu-img convert` makes with the same options. Compressed outputs (deflate and zstd) are
//! read back by qemu-img, and hold as many compressed clusters as qemu-img's.
//!
//! Only the live tool's output is compared, never text of one QEMU version (7.2 and 10.x
//! print the same JSON keys used here).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::*;

const MIB: u64 = 1024 * 1024;

/// One test at a time: a `qemu-img` child forked by another test's thread holds this
/// process's open files (and their OFD image locks) until it execs, which made a freshly
/// created output fail its write lock now and then.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-runner img convert ARGS` in this process.
fn convert(args: &[&str]) -> Result<(), String> {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut out = Vec::new();
    qemu_runner::img::convert::run_to(&argv, &mut out).map_err(|e| e.to_string())
}

/// `qemu-img ARGS`: status and standard output.
fn qemu_img_run(args: &[&str]) -> (bool, String) {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn qemu_io(file: &Path, fmt: &str, cmds: &[&str]) {
    ensure_qemu();
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let mut c = Command::new(qemu_io);
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-io {cmds:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img check` passes, with no leaks; returns its output.
fn check(img: &Path) -> String {
    let (ok, text) = qemu_img_run(&["check", s(img)]);
    assert!(
        ok && text.contains("No errors were found"),
        "qemu-img check {}: {text}",
        img.display()
    );
    text
}

/// The compressed clusters share `qemu-img check` reports ("... 12.34% compressed clusters").
fn compressed_share(check_text: &str) -> String {
    check_text
        .lines()
        .find(|l| l.contains("compressed clusters"))
        .and_then(|l| l.split(", ").last())
        .unwrap_or("")
        .to_string()
}

/// `qemu-img compare` finds `a` and `b` equal.
fn same(a: &Path, b: &Path) {
    let (ok, text) = qemu_img_run(&["compare", s(a), s(b)]);
    assert!(
        ok,
        "qemu-img compare {} {}: {text}",
        a.display(),
        b.display()
    );
}

/// `qemu-img map --output=json` as (start, length, data, zero, depth) runs, neighbours with
/// the same kind joined (host offsets and the 10.x-only `compressed` key left out).
fn layout(img: &Path) -> Vec<(u64, u64, bool, bool, u64)> {
    let (ok, text) = qemu_img_run(&["map", "--output=json", s(img)]);
    assert!(ok, "qemu-img map: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out: Vec<(u64, u64, bool, bool, u64)> = Vec::new();
    for e in v.as_array().unwrap() {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let (data, zero, depth) = (
            e["data"].as_bool().unwrap(),
            e["zero"].as_bool().unwrap(),
            e["depth"].as_u64().unwrap(),
        );
        // Allocated clusters whose bytes the host file keeps as a hole read "zero" too; QEMU
        // zero-fills a fresh cluster's copy-on-write areas where Strata leaves the hole: the
        // same qcow2 allocation either way.
        let zero = zero && !data;
        match out.last_mut() {
            Some(l) if l.0 + l.1 == start && (l.2, l.3, l.4) == (data, zero, depth) => l.1 += len,
            _ => out.push((start, len, data, zero, depth)),
        }
    }
    out
}

/// Converts `src` with our tool and qemu-img (same `opts`), checks ours, compares it with the
/// source and its layout with qemu-img's output's. Returns (ours, theirs).
fn both(dir: &Path, src: &Path, name: &str, opts: &[&str]) -> (PathBuf, PathBuf) {
    let (ours, theirs) = (
        dir.join(format!("{name}.ours.qcow2")),
        dir.join(format!("{name}.theirs.qcow2")),
    );
    let mut a: Vec<&str> = opts.to_vec();
    a.extend(["-O", "qcow2", s(src), s(&ours)]);
    convert(&a).unwrap_or_else(|e| panic!("img convert {a:?}: {e}"));
    let mut b: Vec<&str> = vec!["convert", "-q"];
    b.extend(opts);
    b.extend(["-O", "qcow2", s(src), s(&theirs)]);
    let (ok, text) = qemu_img_run(&b);
    assert!(ok, "qemu-img {b:?}: {text}");
    check(&ours);
    same(src, &ours);
    assert_eq!(
        layout(&ours),
        layout(&theirs),
        "{name}: qemu-img map layout"
    );
    (ours, theirs)
}

/// A raw source: data, a zero run inside data, holes, an odd tail.
fn raw_source(dir: &Path, size: u64) -> PathBuf {
    let f = dir.join("src.raw");
    random_raw_disk(&f, size, 7);
    qemu_io(
        &f,
        "raw",
        &[
            "write -z 1M 3M",
            "write -P 0x11 5M 1M",
            "write -z 6M 4k",
            "write -z 6200k 100k",
            "discard 8M 2M",
        ],
    );
    // Holes in the host file (a sparse area).
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(size + 5 * MIB).unwrap();
    f
}

#[test]
fn raw_qcow2_and_chain_sources_to_qcow2() {
    let _one = serial();
    let dir = scratch("convert-qcow2-basic");
    let raw = raw_source(&dir, 12 * MIB);
    both(&dir, &raw, "raw", &[]);
    // qcow2 source with zero clusters, discarded ranges and data.
    let q = dir.join("src.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", s(&q), "40M"]);
    qemu_io(
        &q,
        "qcow2",
        &[
            "write -P 1 0 3M",
            "write -z 4M 2M",
            "write -P 2 10M 64k",
            "write -P 0 12M 1M",
            "write -P 3 39M 1M",
            "discard 1M 1M",
        ],
    );
    both(&dir, &q, "qcow2", &[]);
    // A chain: base (raw) <- mid (qcow2) <- top (qcow2), zeros over backing data.
    let base = dir.join("base.raw");
    random_raw_disk(&base, 16 * MIB, 3);
    let mid = dir.join("mid.qcow2");
    run_qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&mid),
    ]);
    qemu_io(&mid, "qcow2", &["write -P 4 2M 1M", "write -z 8M 1M"]);
    let top = dir.join("top.qcow2");
    run_qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qemu_io(
        &top,
        "qcow2",
        &["write -P 5 3M 64k", "write -z 0 512k", "write -z 9M 1M"],
    );
    let (ours, _) = both(&dir, &top, "chain", &[]);
    let (ok, info) = qemu_img_run(&["info", "--output=json", s(&ours)]);
    assert!(
        ok && !info.contains("backing-filename"),
        "no backing file: {info}"
    );
    // -m 1, -W and -S 0 change nothing a reader sees.
    both(&dir, &q, "m1", &["-m", "1"]);
    both(&dir, &q, "out-of-order", &["-W", "-m", "16"]);
    both(&dir, &raw, "no-sparse", &["-S", "0"]);
}

#[test]
fn create_options_reach_the_output() {
    let _one = serial();
    let dir = scratch("convert-qcow2-options");
    let raw = raw_source(&dir, 12 * MIB);
    for (name, o) in [
        ("c4k", "cluster_size=4k"),
        ("c2m", "cluster_size=2M"),
        ("ext", "extended_l2=on"),
        ("ext32k", "extended_l2=on,cluster_size=32k"),
        ("rc1", "refcount_bits=1"),
        ("rc64", "refcount_bits=64"),
        ("lazy", "lazy_refcounts=on,cluster_size=16k"),
    ] {
        let (ours, theirs) = both(&dir, &raw, name, &["-o", o]);
        let info = |p: &Path| {
            let (ok, text) = qemu_img_run(&["info", "--output=json", s(p)]);
            assert!(ok, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let d = &v["format-specific"]["data"];
            (
                v["cluster-size"].clone(),
                d["refcount-bits"].clone(),
                d["extended-l2"].clone(),
                d["lazy-refcounts"].clone(),
                v["virtual-size"].clone(),
            )
        };
        assert_eq!(info(&ours), info(&theirs), "{name}");
    }
}

#[test]
fn compressed_outputs_read_back_in_qemu_img() {
    let _one = serial();
    let dir = scratch("convert-qcow2-compressed");
    // Random (incompressible) data, runs of one byte, text-like data, zeros; a size that is
    // not a multiple of the cluster size.
    let src = dir.join("mixed.raw");
    random_raw_disk(&src, 10 * MIB + 3 * 4096, 11);
    qemu_io(
        &src,
        "raw",
        &[
            "write -P 0x61 1M 2M",
            "write -z 4M 1M",
            "write -P 0x62 7M 64k",
            "write -P 0x63 10M 12k",
            "write -P 0x64 5M 100k",
        ],
    );
    for (name, opts) in [
        ("deflate", vec!["-c"]),
        ("zstd", vec!["-c", "-o", "compression_type=zstd"]),
        ("deflate4k", vec!["-c", "-o", "cluster_size=4k"]),
        ("deflate-rc1", vec!["-c", "-o", "refcount_bits=1"]),
        (
            "zstd-ext",
            vec!["-c", "-o", "compression_type=zstd,extended_l2=on"],
        ),
    ] {
        let (ours, theirs) = both(&dir, &src, name, &opts);
        let (a, b) = (check(&ours), check(&theirs));
        assert_eq!(
            compressed_share(&a),
            compressed_share(&b),
            "{name}: compressed clusters: ours {a}, qemu-img's {b}"
        );
        assert!(
            compressed_share(&a) != "0.00% compressed clusters",
            "{name}: {a}"
        );
        // qemu-img reads ours back whole, and converts it again.
        let back = dir.join(format!("{name}.back.raw"));
        run_qemu_img(&["convert", "-O", "raw", s(&ours), s(&back)]);
        same(&src, &back);
        if name.starts_with("zstd") {
            let (ok, info) = qemu_img_run(&["info", "--output=json", s(&ours)]);
            assert!(
                ok && info.contains("\"compression-type\": \"zstd\""),
                "{info}"
            );
        }
    }
}

#[test]
fn backing_output_holds_only_what_the_top_has() {
    let _one = serial();
    let dir = scratch("convert-qcow2-backing");
    let base = dir.join("base.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "16M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 16M"]);
    let top = dir.join("top.qcow2");
    run_qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 2 1M 1M",
            "write -z 4M 2M",
            "write -P 3 9M 4k",
            "write -P 0 12M 64k",
        ],
    );
    for (name, opts) in [
        ("b", vec!["-B", "base.qcow2", "-F", "qcow2"]),
        ("bc", vec!["-c", "-B", "base.qcow2", "-F", "qcow2"]),
    ] {
        let (ours, _) = both(&dir, &top, name, &opts);
        let (ok, info) = qemu_img_run(&["info", "--output=json", s(&ours)]);
        assert!(
            ok && info.contains("\"backing-filename\": \"base.qcow2\""),
            "{info}"
        );
    }
    // Without -F both refuse (qemu-img since 6.1: the backing format must be explicit).
    let out = dir.join("probed.qcow2");
    assert!(convert(&["-B", "base.qcow2", "-O", "qcow2", s(&top), s(&out)]).is_err());
    assert!(
        !qemu_img_run(&[
            "convert",
            "-B",
            "base.qcow2",
            "-O",
            "qcow2",
            s(&top),
            s(&out)
        ])
        .0
    );
}

#[test]
fn into_an_existing_image_zeros_are_written() {
    let _one = serial();
    let dir = scratch("convert-qcow2-existing");
    let raw = raw_source(&dir, 12 * MIB);
    for fmt in ["qcow2", "raw"] {
        let target = dir.join(format!("target.{fmt}"));
        run_qemu_img(&["create", "-q", "-f", fmt, s(&target), "17M"]);
        qemu_io(&target, fmt, &["write -P 0xee 0 17M"]);
        convert(&["-n", "-O", fmt, s(&raw), s(&target)]).unwrap();
        if fmt == "qcow2" {
            check(&target);
        }
        let (ok, text) = qemu_img_run(&["compare", "-f", "raw", "-F", fmt, s(&raw), s(&target)]);
        assert!(ok, "{fmt}: {text}");
    }
    // Too small a target is refused.
    let small = dir.join("small.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", s(&small), "1M"]);
    assert!(convert(&["-n", "-O", "qcow2", s(&raw), s(&small)]).is_err());
}

#[test]
fn refused_as_qemu_img_refuses() {
    let _one = serial();
    let dir = scratch("convert-qcow2-refused");
    let raw = dir.join("r.raw");
    raw_disk(&raw, MIB);
    let out = dir.join("o.img");
    for args in [
        vec!["-c", "-C", "-O", "qcow2"],
        vec!["-S", "4k", "-C", "-O", "qcow2"],
        vec!["-c", "-O", "raw"],
        vec!["-m", "0", "-O", "qcow2"],
        vec!["-m", "17", "-O", "qcow2"],
        vec!["-S", "1000", "-O", "qcow2"],
        vec!["-n", "-o", "cluster_size=4k", "-O", "qcow2"],
        vec!["-O", "qcow2", "-o", "cluster_size=3k"],
        vec!["-O", "qcow2", "-o", "compression_type=lz4"],
    ] {
        let mut a = args.clone();
        a.extend([s(&raw), s(&out)]);
        assert!(convert(&a).is_err(), "ours accepted {a:?}");
        let mut b = vec!["convert"];
        b.extend(a.iter().copied());
        assert!(!qemu_img_run(&b).0, "qemu-img accepted {b:?}");
    }
}

#[test]
fn copy_offloading_into_raw_and_through_buffers_into_qcow2() {
    let _one = serial();
    let dir = scratch("convert-qcow2-offload");
    let raw = raw_source(&dir, 12 * MIB);
    let q = dir.join("src.qcow2");
    run_qemu_img(&["convert", "-q", "-O", "qcow2", s(&raw), s(&q)]);
    for (name, src) in [("raw", &raw), ("qcow2", &q)] {
        let out = dir.join(format!("{name}.offload.raw"));
        convert(&["-C", "-O", "raw", s(src), s(&out)]).unwrap();
        same(src, &out);
    }
    // Into a qcow2, -C copies through buffers: the usual output.
    both(&dir, &raw, "offload-qcow2", &["-C"]);
}

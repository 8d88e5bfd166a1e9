//! `qemu-runner img check` against `qemu-img check` on the same images: clean images of every
//! kind (internal snapshots, persistent bitmaps, compressed clusters, extended L2, refcount
//! widths 1 and 64) and damaged copies (refcounts edited up and down and to zero, an L2
//! reference dropped, COPIED flags flipped, an L2 table offset misaligned, the corrupt bit
//! set). Both tools run on their own copy; exit statuses, the report (human lines, JSON fields)
//! and the per-cluster messages must agree; after `-r all` qemu-img finds the image clean and
//! its contents are what qemu-img's own repair leaves. A budget far smaller than the image
//! (many passes) reports what a large one does. Broken refcount structures (a block past the
//! end of the file, one at the L1 table, an unaligned one, a zeroed table entry) are rebuilt
//! as QEMU rebuilds them, and a rebuild cut anywhere (recording leaf) leaves the image as it
//! was or rebuilt.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod qcow2_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_util::*;
use qemu_runner::img::block::driver::qcow2::check::{self as chk, Finding, Mode};
use qemu_runner::img::image::{self, OpenOptions};

/// What one tool said.
#[derive(Debug)]
struct Said {
    status: i32,
    out: String,
    err: String,
}

/// `qemu-img check ARGS FILE`.
fn theirs(file: &Path, args: &[&str]) -> Said {
    ensure_qemu();
    let o = Command::new(qemu_img())
        .arg("check")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    Said {
        status: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `qemu-runner img check ARGS FILE`, in this process.
fn ours(file: &Path, args: &[&str]) -> Said {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.push(file.to_str().unwrap().to_string());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = match qemu_runner::img::check::run_to(&argv, &mut out, &mut err) {
        Ok(s) => s,
        Err(e) => {
            err.extend_from_slice(format!("{e}\n").as_bytes());
            1
        }
    };
    Said {
        status,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// The per-problem lines both tools print (QEMU's own warnings and final error lines aside),
/// sorted: windows may order them differently.
fn problem_lines(err: &str) -> Vec<String> {
    let keep = [
        "Leaked cluster",
        "ERROR cluster",
        "Repairing cluster",
        "ERROR OFLAG_COPIED",
        "Repairing OFLAG_COPIED",
        "ERROR l2_offset",
        "ERROR offset=",
        "ERROR refcount block",
        "Repairing refcount block",
        "Rebuilding refcount structure",
        "ERROR rebuilt refcount",
        "ERROR need to rebuild",
        "ERROR found",
        "Repairing offset=",
    ];
    let mut v: Vec<String> = err
        .lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The JSON report without the file name (the copies differ in name).
fn json_fields(out: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_object_mut().unwrap().remove("filename");
    v
}

/// Runs both tools with `args` on copies of `file` named after `tag`; asserts they agree and
/// returns the two copies (qemu-img's, ours) as they are after the run.
fn agree(file: &Path, tag: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    agree_with(file, tag, args, &[])
}

/// [`agree`], with `extra` arguments for `img check` only (`--budget`).
fn agree_with(file: &Path, tag: &str, args: &[&str], extra: &[&str]) -> (PathBuf, PathBuf) {
    let (q, s) = (
        copy_as(file, &format!("{tag}.qemu.qcow2")),
        copy_as(file, &format!("{tag}.ours.qcow2")),
    );
    let with_extra: Vec<&str> = extra.iter().chain(args).copied().collect();
    let (a, b) = (theirs(&q, args), ours(&s, &with_extra));
    let ctx = format!(
        "{tag} {args:?}\n--- qemu-img (status {}):\n{}{}\n--- img check (status {}):\n{}{}",
        a.status, a.out, a.err, b.status, b.out, b.err
    );
    assert_eq!(a.status, b.status, "exit status: {ctx}");
    if args.iter().any(|a| a.contains("json")) {
        if a.status != 1 || !a.out.is_empty() {
            assert_eq!(json_fields(&a.out), json_fields(&b.out), "report: {ctx}");
            // Field order as qemu-img prints it.
            let keys = |o: &str| {
                o.lines()
                    .filter_map(|l| l.trim().split('"').nth(1).map(str::to_string))
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(&a.out), keys(&b.out), "field order: {ctx}");
        }
    } else {
        assert_eq!(a.out, b.out, "report: {ctx}");
    }
    assert_eq!(
        problem_lines(&a.err),
        problem_lines(&b.err),
        "messages: {ctx}"
    );
    (q, s)
}

/// Every mode and output format on copies of `file`; after `-r all` both repaired copies are
/// what qemu-img check calls clean (or both are not) and read the same.
fn agree_all(file: &Path, tag: &str) {
    for (i, args) in [
        &["--output=human"][..],
        &["--output=json"],
        &["-r", "leaks"],
        &["-r", "leaks", "--output=json"],
        &["-r", "all", "--output=json"],
    ]
    .iter()
    .enumerate()
    {
        agree(file, &format!("{tag}-{i}"), args);
    }
    let (q, s) = agree(file, &format!("{tag}-all"), &["-r", "all"]);
    assert_eq!(
        theirs(&q, &[]).status,
        theirs(&s, &[]).status,
        "{tag}: after -r all"
    );
    if theirs(&q, &[]).status == 0 {
        assert!(
            qimg_ok(&["compare", "-q", q.to_str().unwrap(), s.to_str().unwrap()]),
            "{tag}: contents after -r all"
        );
    }
}

/// `-r all` frees leaked clusters as qemu-img does: each copy's clusters `freed` (indexes
/// whose bytes were not zero before) read as zeros afterwards (QEMU discards what its leak
/// repair frees: a hole punched), and the two repaired files are byte for byte the same.
fn freed_like_qemu(file: &Path, tag: &str, freed: &[u64]) {
    let cs = 1u64 << geometry(file).cluster_bits;
    let cluster = |f: &Path, k: u64| {
        let bytes = std::fs::read(f).unwrap();
        let (a, b) = ((k * cs) as usize, ((k + 1) * cs) as usize);
        bytes.get(a..b.min(bytes.len())).unwrap_or(&[]).to_vec()
    };
    for &k in freed {
        assert!(
            cluster(file, k).iter().any(|&b| b != 0),
            "{tag}: cluster {k} holds data before"
        );
    }
    let (q, s) = agree(file, &format!("{tag}-freed"), &["-r", "all"]);
    for &k in freed {
        assert!(
            cluster(&q, k).iter().all(|&b| b == 0),
            "{tag}: qemu-img left cluster {k}"
        );
        assert!(
            cluster(&s, k).iter().all(|&b| b == 0),
            "{tag}: img check left cluster {k}"
        );
    }
    assert!(
        std::fs::read(&q).unwrap() == std::fs::read(&s).unwrap(),
        "{tag}: the repaired files differ"
    );
}

/// `-r all` on an image both tools repair by rebuilding its refcount structure: the same
/// status and repair counts, and after it both copies read the same and qemu-img check finds
/// both clean. The image end differs (Strata's new structure lies past the old end, QEMU's in
/// the first free clusters).
fn agree_rebuilt(file: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let (q, s) = (
        copy_as(file, &format!("{tag}.qemu.qcow2")),
        copy_as(file, &format!("{tag}.ours.qcow2")),
    );
    let args = ["-r", "all", "--output=json"];
    let (a, b) = (theirs(&q, &args), ours(&s, &args));
    assert_eq!(a.status, b.status, "{tag}: {a:?} {b:?}");
    let strip = |out: &str| {
        let mut v = json_fields(out);
        v.as_object_mut().unwrap().remove("image-end-offset");
        v
    };
    assert_eq!(strip(&a.out), strip(&b.out), "{tag}");
    assert!(a.err.contains("Rebuilding refcount structure"), "{}", a.err);
    assert_eq!(theirs(&q, &[]).status, 0);
    assert_eq!(theirs(&s, &[]).status, 0);
    assert!(
        qimg_ok(&["compare", "-q", q.to_str().unwrap(), s.to_str().unwrap()]),
        "{tag}: contents"
    );
    (q, s)
}

/// Header fields of a qcow2 file.
struct Geometry {
    cluster_bits: u32,
    l1: u64,
    refcount_table: u64,
    refcount_order: u32,
}

fn geometry(file: &Path) -> Geometry {
    Geometry {
        cluster_bits: be32(file, 20),
        l1: be64(file, 40),
        refcount_table: be64(file, 48),
        refcount_order: if be32(file, 4) >= 3 {
            be32(file, 96)
        } else {
            4
        },
    }
}

/// File offset of the refcount entry of host cluster `k` (16-bit refcounts).
fn refcount_at(file: &Path, k: u64) -> u64 {
    let g = geometry(file);
    assert_eq!(g.refcount_order, 4);
    let per_block = 1u64 << (g.cluster_bits + 3 - g.refcount_order);
    let block = be64(file, g.refcount_table + (k / per_block) * 8);
    block + (k % per_block) * 2
}

fn refcount(file: &Path, k: u64) -> u16 {
    let at = refcount_at(file, k);
    (be64(file, at) >> 48) as u16
}

fn set_refcount(file: &Path, k: u64, v: u16) {
    patch(file, refcount_at(file, k), &v.to_be_bytes());
}

/// File offset of the L2 entry mapping guest byte `guest` (standard entries).
fn l2_entry_at(file: &Path, guest: u64) -> u64 {
    let g = geometry(file);
    let per_l2 = 1u64 << (g.cluster_bits - 3);
    let cluster = guest >> g.cluster_bits;
    let l1e = be64(file, g.l1 + cluster / per_l2 * 8);
    let l2 = l1e & 0x00ff_ffff_ffff_fe00;
    assert_ne!(l2, 0, "guest {guest:#x} has no L2 table");
    l2 + cluster % per_l2 * 8
}

/// The host cluster mapping guest byte `guest`.
fn host_cluster(file: &Path, guest: u64) -> u64 {
    (be64(file, l2_entry_at(file, guest)) & 0x00ff_ffff_ffff_fe00) >> geometry(file).cluster_bits
}

/// A 64 MiB image with data in a few places.
fn plain(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let f = dir.join(name);
    create(&f, opts, "64M", &[]);
    qio(
        "qcow2",
        &f,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x22 5M 192k",
            "write -P 0x33 33M 64k",
            "write -P 0x44 63M 1M",
        ],
    );
    f
}

/// `plain` with two internal snapshots, and writes after each (copy-on-write of shared
/// clusters, COPIED flags cleared on the shared ones).
fn with_snapshots(dir: &Path) -> PathBuf {
    let f = plain(dir, "snap.qcow2", "");
    qimg(&["snapshot", "-c", "s1", f.to_str().unwrap()]);
    qio(
        "qcow2",
        &f,
        &["write -P 0x55 0 128k", "write -P 0x66 40M 64k"],
    );
    qimg(&["snapshot", "-c", "s2", f.to_str().unwrap()]);
    qio("qcow2", &f, &["write -P 0x77 5M 64k"]);
    f
}

/// `plain` with two persistent bitmaps, one of them recording the writes.
fn with_bitmaps(dir: &Path) -> PathBuf {
    let f = dir.join("bitmaps.qcow2");
    create(&f, "", "64M", &[]);
    qimg(&["bitmap", "--add", f.to_str().unwrap(), "b0"]);
    qimg(&["bitmap", "--add", "-g", "4096", f.to_str().unwrap(), "b1"]);
    qio(
        "qcow2",
        &f,
        &["write -P 0x11 0 4M", "write -P 0x22 40M 64k"],
    );
    f
}

/// A compressed image (`qemu-img convert -c`) with a few uncompressed writes after.
fn compressed(dir: &Path) -> PathBuf {
    let raw = dir.join("src.raw");
    raw_disk(&raw, 16 << 20);
    qio(
        "raw",
        &raw,
        &["write -P 0x5a 0 3M", "write -P 0x07 9M 100k"],
    );
    let f = dir.join("compressed.qcow2");
    qimg(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    qio("qcow2", &f, &["write -P 0x99 1M 64k"]);
    f
}

#[test]
fn clean_images_of_every_kind() {
    let dir = scratch("check-clean");
    let images = [
        plain(&dir, "plain.qcow2", ""),
        plain(&dir, "small-clusters.qcow2", "cluster_size=4096"),
        plain(&dir, "extended.qcow2", "extended_l2=on,cluster_size=128k"),
        plain(&dir, "rc1.qcow2", "refcount_bits=1"),
        plain(&dir, "rc64.qcow2", "refcount_bits=64"),
        plain(&dir, "v2.qcow2", "compat=0.10"),
        with_snapshots(&dir),
        with_bitmaps(&dir),
        compressed(&dir),
    ];
    for f in &images {
        let tag = f.file_stem().unwrap().to_str().unwrap().to_string();
        let a = agree(f, &tag, &[]);
        assert_eq!(theirs(&a.0, &[]).status, 0, "{tag} is clean");
        agree(f, &format!("{tag}-json"), &["--output=json"]);
        // A repair of a clean image changes nothing, and frees nothing snapshots or bitmaps hold.
        let (_, s) = agree(f, &format!("{tag}-all"), &["-r", "all"]);
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(&s).unwrap(),
            "{tag}: -r all on a clean image wrote"
        );
    }
}

#[test]
fn raw_has_no_checks() {
    let dir = scratch("check-raw");
    let f = dir.join("a.raw");
    raw_disk(&f, 1 << 20);
    let (a, b) = (theirs(&f, &[]), ours(&f, &[]));
    assert_eq!((a.status, b.status), (63, 63));
    let (a, b) = (theirs(&f, &["-f", "raw"]), ours(&f, &["-f", "raw"]));
    assert_eq!((a.status, b.status), (63, 63));
    let missing = dir.join("missing.qcow2");
    assert_eq!(
        (theirs(&missing, &[]).status, ours(&missing, &[]).status),
        (1, 1)
    );
}

#[test]
fn leaks_and_low_refcounts() {
    let dir = scratch("check-refcounts");
    let f = plain(&dir, "base.qcow2", "");
    // A leak: a data cluster counted twice.
    let leak = copy_as(&f, "leak.qcow2");
    let k = host_cluster(&leak, 5 << 20);
    set_refcount(&leak, k, 2);
    agree_all(&leak, "leak");
    // A cluster past every reference but inside the file, counted.
    let tail = copy_as(&f, "leak-free.qcow2");
    let k = host_cluster(&tail, 33 << 20);
    qio("qcow2", &tail, &["discard 33M 64k"]);
    set_refcount(&tail, k, 1);
    agree_all(&tail, "leak-free");
    // Too low: a snapshot-shared cluster counted once (and its COPIED flag now disagrees).
    let snap = with_snapshots(&dir);
    let k = host_cluster(&snap, 33 << 20);
    assert_eq!(refcount(&snap, k), 3);
    let low = copy_as(&snap, "low.qcow2");
    set_refcount(&low, k, 1);
    agree_all(&low, "low");
    // Both at once, on several clusters.
    let mix = copy_as(&snap, "mix.qcow2");
    set_refcount(&mix, host_cluster(&mix, 63 << 20), 2);
    let k = host_cluster(&mix, 40 << 20);
    set_refcount(&mix, k, 2);
    let k = host_cluster(&mix, 0);
    set_refcount(&mix, k, 5);
    agree_all(&mix, "mix");
}

#[test]
fn zero_refcounts_need_a_rebuild_in_qemu() {
    let dir = scratch("check-zero");
    let f = plain(&dir, "base.qcow2", "");
    let z = copy_as(&f, "zero.qcow2");
    let k = host_cluster(&z, 5 << 20);
    set_refcount(&z, k, 0);
    // Check only and -r leaks (QEMU: "need to rebuild", status 1) agree in full.
    agree(&z, "zero", &[]);
    agree(&z, "zero-json", &["--output=json"]);
    agree(&z, "zero-leaks", &["-r", "leaks"]);
    // -r all: both rebuild the refcount structure and end clean with the same contents.
    agree_rebuilt(&z, "zero-all-json");
    agree_rebuilt_human(&z, &f, "zero-all");
}

#[test]
fn dropped_references_and_copied_flags() {
    let dir = scratch("check-entries");
    let f = plain(&dir, "base.qcow2", "");
    // An L2 entry dropped: its cluster leaks (the data is gone for both tools alike).
    let dropped = copy_as(&f, "dropped.qcow2");
    let k = host_cluster(&dropped, 33 << 20);
    patch(&dropped, l2_entry_at(&dropped, 33 << 20), &[0; 8]);
    agree_all(&dropped, "dropped");
    // Three adjacent clusters dropped: one run freed (and discarded) at once.
    let run = copy_as(&f, "dropped-run.qcow2");
    let ks: Vec<u64> = (0..3)
        .map(|i| host_cluster(&run, (5 << 20) + i * 65536))
        .collect();
    assert!(
        ks.windows(2).all(|w| w[1] == w[0] + 1),
        "adjacent clusters: {ks:?}"
    );
    for i in 0..3 {
        patch(&run, l2_entry_at(&run, (5 << 20) + i * 65536), &[0; 8]);
    }
    freed_like_qemu(&dropped, "dropped", &[k]);
    freed_like_qemu(&run, "dropped-run", &ks);
    // COPIED cleared on an L2 entry and on an L1 entry of refcount-1 clusters.
    let copied = copy_as(&f, "copied.qcow2");
    let at = l2_entry_at(&copied, 63 << 20);
    patch(&copied, at, &(be64(&copied, at) & !(1 << 63)).to_be_bytes());
    let l1 = geometry(&copied).l1;
    patch(&copied, l1, &(be64(&copied, l1) & !(1 << 63)).to_be_bytes());
    agree_all(&copied, "copied");
    // COPIED set on a snapshot-shared cluster.
    let snap = with_snapshots(&dir);
    let shared = copy_as(&snap, "shared.qcow2");
    let at = l2_entry_at(&shared, 33 << 20);
    patch(&shared, at, &(be64(&shared, at) | (1 << 63)).to_be_bytes());
    agree_all(&shared, "shared");
    // An L2 table offset misaligned in the L1 table: corruptions -r all cannot fix.
    let mis = copy_as(&f, "misaligned.qcow2");
    let l1 = geometry(&mis).l1;
    patch(&mis, l1, &(be64(&mis, l1) + 512).to_be_bytes());
    agree(&mis, "misaligned", &[]);
    agree(&mis, "misaligned-json", &["--output=json"]);
    agree(&mis, "misaligned-all", &["-r", "all"]);
}

#[test]
fn repairs_keep_snapshots_bitmaps_and_compressed_clusters() {
    let dir = scratch("check-keep");
    for (f, guest) in [
        (with_snapshots(&dir), 33u64 << 20),
        (with_bitmaps(&dir), 40 << 20),
        (compressed(&dir), 1 << 20),
    ] {
        let tag = f.file_stem().unwrap().to_str().unwrap().to_string();
        let d = copy_as(&f, &format!("{tag}-damaged.qcow2"));
        let k = host_cluster(&d, guest);
        let n = refcount(&d, k);
        set_refcount(&d, k, n + 1);
        set_refcount(&d, 0, 2);
        agree_all(&d, &tag);
        let (_, s) = agree(&d, &format!("{tag}-repaired"), &["-r", "all"]);
        assert_eq!(theirs(&s, &[]).status, 0);
        assert!(
            qimg_ok(&["compare", "-q", f.to_str().unwrap(), s.to_str().unwrap()]),
            "{tag}: contents changed"
        );
        // Every snapshot still reads as before.
        let info = qimg(&["snapshot", "-l", s.to_str().unwrap()]);
        assert_eq!(info, qimg(&["snapshot", "-l", f.to_str().unwrap()]));
    }
}

#[test]
fn corrupt_bit_cleared_by_a_clean_repair() {
    let dir = scratch("check-corrupt-bit");
    let f = plain(&dir, "base.qcow2", "");
    let c = copy_as(&f, "corrupt.qcow2");
    let bits = be64(&c, 72) | 2;
    patch(&c, 72, &bits.to_be_bytes());
    agree(&c, "corrupt", &[]);
    let (q, s) = agree(&c, "corrupt-all", &["-r", "all"]);
    assert_eq!(be64(&q, 72) & 2, 0);
    assert_eq!(be64(&s, 72), be64(&q, 72));
}

/// Runs the block layer's check on `file` with `budget` bytes; the findings and the result.
fn check_with_budget(file: &Path, budget: usize) -> (Vec<String>, chk::CheckResult) {
    let opts = OpenOptions {
        format: Some("raw".into()),
        read_only: true,
        no_backing: true,
        ..OpenOptions::default()
    };
    let mut mem = vec![0u8; budget];
    image::with_image(file.to_str().unwrap(), &opts, |img| {
        let graph = img.backend.graph();
        let node = graph.node(img.root()).unwrap();
        let leaf = node
            .child(qemu_runner::img::block::graph::Role::File)
            .unwrap();
        let mut lines = Vec::new();
        let mut sink = |f: &Finding| lines.push(f.to_string());
        let r = image::block_on(chk::check(
            &graph.io(),
            leaf,
            Mode::CHECK,
            &mut mem,
            &mut sink,
        ))
        .unwrap();
        lines.sort();
        Ok((lines, r))
    })
    .unwrap()
}

#[test]
fn a_small_budget_takes_passes_and_reports_the_same() {
    let dir = scratch("check-budget");
    let f = dir.join("big.qcow2");
    create(&f, "cluster_size=4096", "128M", &[]);
    qio(
        "qcow2",
        &f,
        &["write -P 0x11 0 40M", "write -P 0x22 100M 4M"],
    );
    qimg(&["snapshot", "-c", "s1", f.to_str().unwrap()]);
    qio("qcow2", &f, &["write -P 0x33 2M 1M"]);
    for guest in [0u64, 17 << 20, 39 << 20, 101 << 20] {
        let k = host_cluster(&f, guest);
        let n = refcount(&f, k);
        set_refcount(&f, k, if guest == 17 << 20 { n - 1 } else { n + 1 });
    }
    let (big_lines, big) = check_with_budget(&f, 16 << 20);
    let (small_lines, small) = check_with_budget(&f, chk::MIN_BUDGET);
    assert_eq!(big.passes, 1);
    assert!(small.passes >= 5, "{} passes", small.passes);
    assert_eq!(no_passes(big), no_passes(small));
    assert_eq!(big_lines, small_lines);
    // And through the command, against qemu-img.
    let budget = chk::MIN_BUDGET.to_string();
    agree_with(&f, "small", &[], &["--budget", &budget]);
    agree_with(&f, "small-all", &["-r", "all"], &["--budget", &budget]);
}

/// A result with the pass count left out.
fn no_passes(mut r: chk::CheckResult) -> chk::CheckResult {
    r.passes = 0;
    r
}

#[test]
fn a_dirty_lazy_refcounts_image() {
    let dir = scratch("check-dirty");
    let f = dir.join("lazy.qcow2");
    create(&f, "lazy_refcounts=on", "64M", &[]);
    qio("qcow2", &f, &["write -P 0x11 0 1M"]);
    // qemu-io aborts without closing: refcounts of the new clusters were never written and
    // the dirty bit stays set.
    ensure_qemu();
    let _ = Command::new(qemu_io_bin())
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5a 8M 2M",
            "-c",
            "write -P 0x5b 0 64k",
            "-c",
            "abort",
        ])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(be64(&f, 72) & 1, 1, "the image is dirty");
    assert_eq!(theirs(&f, &[]).status, 2);
    agree(&f, "dirty", &[]);
    agree(&f, "dirty-json", &["--output=json"]);
    agree(&f, "dirty-leaks", &["-r", "leaks"]);
    let (q, s) = agree_rebuilt(&f, "dirty-repaired");
    assert_eq!(be64(&s, 72) & 1, 0, "the repair cleared the dirty bit");
    assert_eq!(be64(&s, 72), be64(&q, 72));
    // A read-write open repairs it first (as QEMU's open does), then writes.
    let (q, s) = (
        copy_as(&f, "dirty-open.qemu.qcow2"),
        copy_as(&f, "dirty-open.ours.qcow2"),
    );
    qio("qcow2", &q, &["write -P 0x66 20M 128k"]);
    assert_eq!(
        img(&["io", "-c", "write -P 0x66 20M 128k", s.to_str().unwrap()]),
        0
    );
    assert_eq!(be64(&s, 72) & 1, 0, "the open cleared the dirty bit");
    assert_eq!(theirs(&s, &[]).status, 0, "{:?}", theirs(&s, &[]));
    assert!(qimg_ok(&[
        "compare",
        "-q",
        q.to_str().unwrap(),
        s.to_str().unwrap()
    ]));
}

/// `plain` with its refcount table's first entry set to `entry`, or to the active L1 table's
/// offset (`None`).
fn broken_refcount_table(dir: &Path, name: &str, entry: Option<u64>) -> PathBuf {
    let base = plain(dir, &format!("{name}.base.qcow2"), "");
    let f = copy_as(&base, &format!("{name}.qcow2"));
    let g = geometry(&f);
    patch(&f, g.refcount_table, &entry.unwrap_or(g.l1).to_be_bytes());
    f
}

/// The human report without the image end (Strata puts the rebuilt structure past the end of
/// the file, QEMU in the first free clusters).
fn without_end(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("Image end offset"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `-r all` (human) on copies of `file`, which QEMU repairs by rebuilding the refcount
/// structure: the same status, report (image end aside) and per-cluster messages, and both
/// copies clean after it with the contents of `original`.
fn agree_rebuilt_human(file: &Path, original: &Path, tag: &str) {
    agree_rebuilt_in(file, original, tag, &[]);
}

/// [`agree_rebuilt_human`] with `extra` arguments for `img check` only (`--budget`).
fn agree_rebuilt_in(file: &Path, original: &Path, tag: &str, extra: &[&str]) {
    let (q, s) = (
        copy_as(file, &format!("{tag}.qemu.qcow2")),
        copy_as(file, &format!("{tag}.ours.qcow2")),
    );
    let with_extra: Vec<&str> = extra.iter().chain(&["-r", "all"]).copied().collect();
    let (a, b) = (theirs(&q, &["-r", "all"]), ours(&s, &with_extra));
    let ctx = format!(
        "{tag}\n--- qemu-img (status {}):\n{}{}\n--- img check (status {}):\n{}{}",
        a.status, a.out, a.err, b.status, b.out, b.err
    );
    assert_eq!(a.status, b.status, "{ctx}");
    assert!(a.err.contains("Rebuilding refcount structure"), "{ctx}");
    assert_eq!(without_end(&a.out), without_end(&b.out), "{ctx}");
    assert_eq!(problem_lines(&a.err), problem_lines(&b.err), "{ctx}");
    for c in [&q, &s] {
        assert_eq!(theirs(c, &[]).status, 0, "{tag}: {:?}", theirs(c, &[]));
        assert!(
            qimg_ok(&[
                "compare",
                "-q",
                original.to_str().unwrap(),
                c.to_str().unwrap()
            ]),
            "{tag}: contents"
        );
    }
}

#[test]
fn broken_refcount_structures_are_rebuilt() {
    let dir = scratch("check-rebuild");
    // A refcount block past the end of the file (QEMU grows the file over it, then rebuilds),
    // one at the active L1 table (shared: refcount 2), and a zeroed table entry while its
    // clusters are in use.
    for (tag, entry) in [
        ("past-eof", Some(0x1000_0000u64)),
        ("at-l1", None),
        ("zeroed", Some(0)),
    ] {
        let f = broken_refcount_table(&dir, tag, entry);
        let original = dir.join(format!("{tag}.base.qcow2"));
        agree(&f, &format!("{tag}-check"), &[]);
        agree(&f, &format!("{tag}-json"), &["--output=json"]);
        agree(&f, &format!("{tag}-leaks"), &["-r", "leaks"]);
        agree_rebuilt(&f, &format!("{tag}-all-json"));
        agree_rebuilt_human(&f, &original, &format!("{tag}-all"));
    }
    // 512-byte clusters: 256 entries a block, so the new structure has many blocks, written
    // several to a window (a large budget) and in windows of several blocks (16 KiB).
    let small = plain(&dir, "small.base.qcow2", "cluster_size=512");
    let f = copy_as(&small, "small.qcow2");
    patch(&f, geometry(&f).refcount_table, &0u64.to_be_bytes());
    agree_rebuilt_human(&f, &small, "small-all");
    agree_rebuilt_in(&f, &small, "small-all-16k", &["--budget", "16K"]);
    // An unaligned refcount block: the check agrees; qemu-img's -r all fails (its rebuild puts
    // the new block in the first free cluster, which the broken entry's range overlaps, and
    // its overlap check refuses the write), Strata's rebuild past the end succeeds.
    let f = broken_refcount_table(&dir, "unaligned", Some(0x2_0200));
    let original = dir.join("unaligned.base.qcow2");
    agree(&f, "unaligned-check", &[]);
    agree(&f, "unaligned-json", &["--output=json"]);
    agree(&f, "unaligned-leaks", &["-r", "leaks"]);
    let (q, s) = (
        copy_as(&f, "unaligned-all.qemu.qcow2"),
        copy_as(&f, "unaligned-all.ours.qcow2"),
    );
    let (a, b) = (theirs(&q, &["-r", "all"]), ours(&s, &["-r", "all"]));
    assert!(a.err.contains("Rebuilding refcount structure"), "{a:?}");
    if a.status == 0 {
        agree_rebuilt_human(&f, &original, "unaligned-all-agree");
    }
    assert_eq!(b.status, 0, "{b:?}");
    assert!(b.out.contains("    1 corruptions"), "{b:?}");
    assert_eq!(theirs(&s, &[]).status, 0, "{:?}", theirs(&s, &[]));
    assert!(qimg_ok(&[
        "compare",
        "-q",
        original.to_str().unwrap(),
        s.to_str().unwrap()
    ]));
}

/// A rebuild (`-r all` on `base`) in `budget` bytes with its leaf recorded, then every planned
/// cut replayed: each leaves the image as it was (qemu-img check's verdict on `base`, and a
/// second `check -r all` repairs it) or rebuilt with at most leaks; the contents never change.
fn rebuild_cut_anywhere(dir: &Path, base: &Path, budget: usize) {
    use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
    use qemu_runner::img::block::dev::record::Recording;
    use qemu_runner::img::block::dev::BlockDevice;
    use qemu_runner::img::block::io::cache::CacheSlot;
    use qemu_runner::img::block::Graph;
    use qemu_runner::img::crashlog::{read_log, LogWriter};
    use qemu_runner::img::replay::{plan, replay};

    let work = copy_as(base, "rebuild-work.qcow2");
    let log = dir.join("rebuild.log");
    let records = {
        let file = HostFile::open(&work, &HostFileOptions::default()).unwrap();
        let writer = LogWriter::create(&log).unwrap();
        let recording: Recording<'_> = Recording::new(&file, &writer);
        let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
        let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
        {
            let mut graph: Graph<'_, 8, 64> = Graph::new(&mut bounce, 64 * 1024);
            graph.set_metadata_cache(&slots);
            let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
                (name == "work").then_some(&recording as &dyn BlockDevice)
            };
            let root = image::block_on(graph.open("driver=raw,file=work", &mut resolve)).unwrap();
            let leaf = graph
                .node(root)
                .unwrap()
                .child(qemu_runner::img::block::graph::Role::File)
                .unwrap();
            let mut mem = vec![0u8; budget];
            let mut sink = |_: &Finding| {};
            let r = image::block_on(chk::check(
                &graph.io(),
                leaf,
                Mode::ALL,
                &mut mem,
                &mut sink,
            ))
            .unwrap();
            assert!(r.corruptions_fixed >= 1, "{r:?}");
        }
        writer.finish().unwrap();
        read_log(&log).unwrap()
    };
    assert_eq!(theirs(&work, &[]).status, 0, "{:?}", theirs(&work, &[]));
    let before = theirs(base, &[]).status;
    let cuts = plan(&records, 60, 15);
    assert!(cuts.len() >= 10, "{} cuts", cuts.len());
    let (mut unchanged, mut rebuilt) = (0, 0);
    for (i, cut) in cuts.iter().enumerate() {
        let out = dir.join(format!("rebuild-cut{i}.qcow2"));
        replay(&records, *cut, base, &out).unwrap();
        let said = theirs(&out, &[]);
        if said.status == 0 || said.status == 3 {
            rebuilt += 1;
        } else {
            assert_eq!(said.status, before, "{cut}: {said:?}");
            unchanged += 1;
            assert_eq!(ours(&out, &["-r", "all"]).status, 0, "{cut}: second repair");
            let after = theirs(&out, &[]);
            assert_eq!(after.status, 0, "{cut}: after the second repair: {after:?}");
        }
        assert!(
            qimg_ok(&[
                "compare",
                "-q",
                base.to_str().unwrap(),
                out.to_str().unwrap()
            ]),
            "{cut}: contents"
        );
        let _ = std::fs::remove_file(&out);
    }
    println!(
        "{} cuts: {unchanged} as before, {rebuilt} rebuilt",
        cuts.len()
    );
    assert!(unchanged > 0 && rebuilt > 0, "{unchanged} {rebuilt}");
}

#[test]
fn a_rebuild_cut_anywhere_is_as_before_or_rebuilt() {
    let dir = scratch("check-rebuild-crash");
    let snap = with_snapshots(&dir);
    let base = copy_as(&snap, "rebuild-base.qcow2");
    let g = geometry(&base);
    patch(&base, g.refcount_table, &0u64.to_be_bytes());
    // A budget of a few windows per refcount block: the blocks are written in pieces.
    rebuild_cut_anywhere(&dir, &base, chk::MIN_BUDGET);
}

/// The clusters qemu-img check finds with a refcount below their references.
fn low_refcounts(file: &Path) -> Vec<u64> {
    let said = theirs(file, &[]);
    let mut v: Vec<u64> = said
        .err
        .lines()
        .filter_map(|l| l.strip_prefix("ERROR cluster "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    v.sort();
    v
}

#[test]
fn a_repair_cut_anywhere_lowers_no_refcount_below_its_references() {
    use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
    use qemu_runner::img::block::dev::record::Recording;
    use qemu_runner::img::block::dev::BlockDevice;
    use qemu_runner::img::block::io::cache::CacheSlot;
    use qemu_runner::img::block::Graph;
    use qemu_runner::img::crashlog::{read_log, LogWriter};
    use qemu_runner::img::replay::{plan, replay};

    let dir = scratch("check-crash");
    let snap = with_snapshots(&dir);
    // Leaks (two of them on clusters whose COPIED flag is set), a dropped reference, a
    // too-low refcount and a cleared COPIED flag: a repair with every kind of write.
    let base = copy_as(&snap, "damaged.qcow2");
    for guest in [63u64 << 20, (63 << 20) + (64 << 10)] {
        let k = host_cluster(&base, guest);
        set_refcount(&base, k, 2);
    }
    let k = host_cluster(&base, 33 << 20);
    set_refcount(&base, k, 1);
    let at = l2_entry_at(&base, 5 << 20);
    patch(&base, at, &(be64(&base, at) & !(1 << 63)).to_be_bytes());
    patch(&base, l2_entry_at(&base, (63 << 20) + (128 << 10)), &[0; 8]);
    let before = low_refcounts(&base);
    assert!(before.contains(&k), "{before:?}");

    // The repair, its leaf's writes and flushes recorded.
    let work = copy_as(&base, "work.qcow2");
    let log = dir.join("repair.log");
    let records = {
        let file = HostFile::open(&work, &HostFileOptions::default()).unwrap();
        let writer = LogWriter::create(&log).unwrap();
        let recording: Recording<'_> = Recording::new(&file, &writer);
        let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
        let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
        {
            let mut graph: Graph<'_, 8, 64> = Graph::new(&mut bounce, 64 * 1024);
            graph.set_metadata_cache(&slots);
            let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
                (name == "work").then_some(&recording as &dyn BlockDevice)
            };
            let root = image::block_on(graph.open("driver=raw,file=work", &mut resolve)).unwrap();
            let leaf = graph
                .node(root)
                .unwrap()
                .child(qemu_runner::img::block::graph::Role::File)
                .unwrap();
            let mut mem = vec![0u8; chk::MIN_BUDGET];
            let mut sink = |_: &Finding| {};
            let r = image::block_on(chk::check(
                &graph.io(),
                leaf,
                Mode::ALL,
                &mut mem,
                &mut sink,
            ))
            .unwrap();
            assert!(
                r.leaks_fixed >= 1 && r.corruptions_fixed >= 3 && r.passes >= 2,
                "{r:?}"
            );
        }
        writer.finish().unwrap();
        read_log(&log).unwrap()
    };
    assert_eq!(theirs(&work, &[]).status, 0, "{:?}", theirs(&work, &[]));
    assert!(qimg_ok(&[
        "compare",
        "-q",
        base.to_str().unwrap(),
        work.to_str().unwrap()
    ]));

    // Every cut (after flushes, inside flush epochs, unflushed writes dropped and reordered):
    // no refcount is below its references unless it was before, and the contents are intact.
    let cuts = plan(&records, 60, 14);
    assert!(cuts.len() >= 10, "{} cuts", cuts.len());
    for (i, cut) in cuts.iter().enumerate() {
        let out = dir.join(format!("cut{i}.qcow2"));
        replay(&records, *cut, &base, &out).unwrap();
        let low = low_refcounts(&out);
        assert!(
            low.iter().all(|c| before.contains(c)),
            "{cut}: refcounts below references {low:?} (before: {before:?})"
        );
        assert!(
            qimg_ok(&[
                "compare",
                "-q",
                base.to_str().unwrap(),
                out.to_str().unwrap()
            ]),
            "{cut}: contents"
        );
        let _ = std::fs::remove_file(&out);
    }
}

#[test]
fn the_guest_checks_and_repairs_its_disk() {
    let dir = scratch("check-guest");
    let snap = with_snapshots(&dir);
    let f = copy_as(&snap, "guest.qcow2");
    let k = host_cluster(&f, 63 << 20);
    set_refcount(&f, k, 2);
    let k = host_cluster(&f, 33 << 20);
    set_refcount(&f, k, 2);
    let want = json_fields(&theirs(&f, &["--output=json"]).out);
    let disk = || strata_tests::Drive {
        headroom: Some(0),
        ..strata_tests::drive(&f, "disk", false)
    };
    let r = strata_tests::boot(strata_tests::Machine::Microvm, vec![disk()], "check disk");
    assert_eq!(r.exit_code, 1, "{}\n{}", r.summary(), r.console);
    let rec = strata_tests::records(&r, "check")[0].clone();
    assert_eq!(rec["status"], 2, "{rec}");
    for (ours, theirs) in [
        ("corruptions", "corruptions"),
        ("leaks", "leaks"),
        ("image_end_offset", "image-end-offset"),
        ("allocated_clusters", "allocated-clusters"),
        ("fragmented_clusters", "fragmented-clusters"),
    ] {
        assert_eq!(
            rec[ours].as_u64(),
            Some(want[theirs].as_u64().unwrap_or(0)),
            "{ours}: {rec} vs {want}"
        );
    }
    assert!(
        r.console
            .contains(&format!("ERROR cluster {k} refcount=2 reference=3")),
        "{}",
        r.console
    );
    let q = copy_as(&f, "guest.qemu.qcow2");
    let fixed = json_fields(&theirs(&q, &["-r", "all", "--output=json"]).out);
    let r = strata_tests::boot(
        strata_tests::Machine::Microvm,
        vec![disk()],
        "check disk --repair all",
    );
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let rec = strata_tests::records(&r, "check")[0].clone();
    assert_eq!(rec["status"], 0, "{rec}");
    assert_eq!(
        rec["leaks_fixed"].as_u64(),
        Some(fixed["leaks-fixed"].as_u64().unwrap_or(0)),
        "{rec} vs {fixed}"
    );
    assert_eq!(
        rec["corruptions_fixed"].as_u64(),
        Some(fixed["corruptions-fixed"].as_u64().unwrap_or(0)),
        "{rec} vs {fixed}"
    );
    assert_eq!(theirs(&f, &[]).status, 0, "{:?}", theirs(&f, &[]));
    assert!(qimg_ok(&[
        "compare",
        "-q",
        q.to_str().unwrap(),
        f.to_str().unwrap()
    ]));
}

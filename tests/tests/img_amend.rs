//! `qemu-runner img amend` against `qemu-img amend` doing the same on a copy: lazy refcounts
//! turned on and off (also on an image left dirty by a crash with lazy refcounts), `size`, and
//! compat/refcount_bits given as the image has them leave `qemu-img info` equal (the fields
//! amend changes), `check` clean and `compare` identical; options qemu-img refuses are refused
//! with its message. Refcount width changes (1 to 64 bits) and compat level changes (0.10 and
//! 1.1 both ways) on an image with data, zero clusters, a snapshot, compressed clusters and (in
//! some cases) a backing file: the same exit status and refusal text as qemu-img, then `info`
//! fields equal, `check` clean, `compare` identical, and the snapshot still applies to the same
//! contents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::Path;
use std::process::Command;

use strata_tests::*;

fn p(f: &Path) -> &str {
    f.to_str().unwrap()
}

fn qemu_io(file: &Path, cmds: &[&str]) {
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let mut c = Command::new(qemu_io);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let _ = c.arg(file).output().unwrap();
}

/// qemu-img's status and its error lines without the `qemu-img: ` prefix.
fn theirs(args: &[&str]) -> (bool, String) {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), err.lines().map(|l| l.strip_prefix("qemu-img: ").unwrap_or(l)).collect::<Vec<_>>().join("\n"))
}

fn ours(args: &[&str]) -> Result<(), String> {
    let argv: Vec<String> = args[1..].iter().map(|a| a.to_string()).collect();
    qemu_runner::img::amend::run(&argv).map_err(|e| e.to_string())
}

/// The fields of `qemu-img info --output=json` amend may change.
fn info(f: &Path) -> serde_json::Value {
    let out = Command::new(qemu_img()).args(["info", "-U", "--output=json", p(f)]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = &v["format-specific"]["data"];
    serde_json::json!([v["virtual-size"], data["compat"], data["lazy-refcounts"], data["refcount-bits"], v["dirty-flag"]])
}

fn check_clean(f: &Path) {
    let out = Command::new(qemu_img()).args(["check", p(f)]).output().unwrap();
    assert!(out.status.success(), "qemu-img check {}: {}", f.display(), String::from_utf8_lossy(&out.stdout));
}

#[test]
fn lazy_refcounts_and_size_as_qemu_img() {
    let dir = scratch("img_amend");
    let cases: &[(&str, &str, bool)] = &[
        ("", "lazy_refcounts=on", false),
        ("lazy_refcounts=on", "lazy_refcounts=off", false),
        ("lazy_refcounts=on,cluster_size=4k", "lazy_refcounts=off", true),
        ("refcount_bits=1", "lazy_refcounts=on,refcount_bits=1,compat=1.1", false),
        ("refcount_bits=64", "size=50M", false),
        ("compat=0.10", "compat=0.10,refcount_bits=16,size=30M", false),
    ];
    for (i, (create, amend, crash)) in cases.iter().enumerate() {
        let a = dir.join(format!("theirs{i}.qcow2"));
        let b = dir.join(format!("mine{i}.qcow2"));
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        if !create.is_empty() {
            args.extend(["-o", create]);
        }
        args.extend([p(&a), "20M"]);
        run_qemu_img(&args);
        qemu_io(&a, &["write -P 1 0 3M", "write -P 2 10M 64k"]);
        if *crash {
            // Left dirty, its refcounts behind: QEMU writes, then aborts without closing.
            qemu_io(&a, &["write -P 3 5M 1M", "abort"]);
        }
        std::fs::copy(&a, &b).unwrap();
        let (ok, err) = theirs(&["amend", "-o", amend, p(&a)]);
        assert!(ok, "qemu-img amend -o {amend}: {err}");
        ours(&["amend", "-o", amend, p(&b)]).unwrap();
        assert_eq!(info(&b), info(&a), "{create} then {amend}");
        check_clean(&b);
        let (same, err) = theirs(&["compare", "-U", p(&a), p(&b)]);
        assert!(same, "{create} then {amend}: {err}");
    }
}

#[test]
fn refusals_as_qemu_img() {
    let dir = scratch("img_amend_refusals");
    let v3 = dir.join("v3.qcow2");
    let v2 = dir.join("v2.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", p(&v3), "10M"]);
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10", p(&v2), "10M"]);
    let raw = dir.join("r.raw");
    raw_disk(&raw, 1 << 20);
    for (opts, file) in [
        ("cluster_size=4k", &v3),
        ("extended_l2=on", &v3),
        ("compression_type=zstd", &v3),
        ("preallocation=full", &v3),
        ("foo=1", &v3),
        ("lazy_refcounts=maybe", &v3),
        ("refcount_bits=3", &v3),
        ("lazy_refcounts=on", &v2),
        ("refcount_bits=8", &v2),
    ] {
        let args = ["amend", "-o", opts, p(file)];
        let (ok, err) = theirs(&args);
        assert!(!ok, "qemu-img amend -o {opts} succeeded");
        assert_eq!(ours(&args), Err(err), "amend -o {opts}");
    }
    let (ok, err) = theirs(&["amend", "-f", "raw", "-o", "size=2M", p(&raw)]);
    assert!(!ok);
    assert_eq!(ours(&["amend", "-f", "raw", "-o", "size=2M", p(&raw)]), Err(err));
}

/// An image with data, zero clusters (plain and preallocated), compressed clusters and a
/// snapshot, over `base` if given.
fn rich_image(f: &Path, create: &str, base: Option<&Path>) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    let o;
    if let Some(b) = base {
        o = format!("backing_file={},backing_fmt=qcow2{}{create}", p(b), if create.is_empty() { "" } else { "," });
        args.extend(["-o", &o]);
    } else if !create.is_empty() {
        args.extend(["-o", create]);
    }
    args.extend([p(f), "20M"]);
    run_qemu_img(&args);
    qemu_io(f, &["write -P 1 0 3M", "write -z 4M 1M", "write -c -P 5 8M 128k"]);
    run_qemu_img(&["snapshot", "-c", "s1", p(f)]);
    qemu_io(f, &["write -P 2 10M 64k", "write -z 0 64k", "write -z 12M 128k", "write -P 3 1M 64k"]);
}

/// Runs the same amend on two copies of `src` and compares what qemu-img sees.
fn same_as_qemu_img(dir: &Path, name: &str, src: &Path, amend: &str) {
    let a = dir.join(format!("{name}-theirs.qcow2"));
    let b = dir.join(format!("{name}-mine.qcow2"));
    std::fs::copy(src, &a).unwrap();
    std::fs::copy(src, &b).unwrap();
    let (ok, err) = theirs(&["amend", "-o", amend, p(&a)]);
    let mine = ours(&["amend", "-o", amend, p(&b)]);
    assert_eq!(mine.clone().err(), (!ok).then(|| err.clone()), "{name}: amend -o {amend}");
    assert_eq!(info(&b), info(&a), "{name}: amend -o {amend}");
    check_clean(&b);
    let (same, err) = theirs(&["compare", "-U", p(&a), p(&b)]);
    assert!(same, "{name}: amend -o {amend}: {err}");
    if ok {
        // The snapshot still holds what it held (compared with the image before the amend:
        // QEMU's downgrade writes zeros into a preallocated zero cluster a snapshot still holds
        // data in, so its snapshot can differ).
        let orig = dir.join(format!("{name}-orig.qcow2"));
        std::fs::copy(src, &orig).unwrap();
        for f in [&orig, &b] {
            run_qemu_img(&["snapshot", "-a", "s1", p(f)]);
        }
        let (same, err) = theirs(&["compare", "-U", p(&orig), p(&b)]);
        assert!(same, "{name}: snapshot after amend -o {amend}: {err}");
        check_clean(&b);
    }
}

#[test]
fn refcount_widths_as_qemu_img() {
    let dir = scratch("img_amend_widths");
    let base = dir.join("base.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", p(&base), "20M"]);
    qemu_io(&base, &["write -P 7 0 20M"]);
    let plain = dir.join("plain.qcow2");
    rich_image(&plain, "", None);
    let backed = dir.join("backed.qcow2");
    rich_image(&backed, "", Some(&base));
    let small = dir.join("small.qcow2");
    rich_image(&small, "cluster_size=4k,refcount_bits=64", None);
    // 1 and 2 bits are refused (the snapshot shares clusters: refcount 2; 4 with the compressed
    // clusters' host cluster), the others done.
    for bits in [1, 2, 4, 8, 32, 64] {
        same_as_qemu_img(&dir, &format!("plain{bits}"), &plain, &format!("refcount_bits={bits}"));
    }
    for bits in [8, 64] {
        same_as_qemu_img(&dir, &format!("backed{bits}"), &backed, &format!("refcount_bits={bits}"));
    }
    for bits in [4, 16] {
        same_as_qemu_img(&dir, &format!("small{bits}"), &small, &format!("refcount_bits={bits}"));
    }
    // Width and upgrade at once, from compat=0.10.
    let v2 = dir.join("v2.qcow2");
    rich_image(&v2, "compat=0.10", None);
    same_as_qemu_img(&dir, "v2-up-32", &v2, "compat=1.1,refcount_bits=32");
}

#[test]
fn compat_levels_as_qemu_img() {
    let dir = scratch("img_amend_compat");
    let base = dir.join("base.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", p(&base), "20M"]);
    qemu_io(&base, &["write -P 7 0 20M"]);
    let cases: &[(&str, &str, bool, &str)] = &[
        ("plain", "", false, "compat=0.10"),
        ("backed", "", true, "compat=0.10"),
        ("lazy", "lazy_refcounts=on", false, "compat=0.10"),
        ("lazy-off", "lazy_refcounts=on", true, "compat=0.10,lazy_refcounts=off"),
        ("width8", "refcount_bits=8", false, "compat=0.10"),
        ("width8-to16", "refcount_bits=8", false, "compat=0.10,refcount_bits=16"),
        ("extended-l2", "extended_l2=on", false, "compat=0.10"),
        ("zstd", "compression_type=zstd", false, "compat=0.10"),
        ("v2", "compat=0.10", true, "compat=1.1"),
        ("v2-lazy", "compat=0.10", false, "compat=1.1,lazy_refcounts=on"),
        ("v2-4k", "compat=0.10,cluster_size=4k", true, "compat=v3"),
    ];
    for (name, create, backed, amend) in cases {
        let src = dir.join(format!("{name}.qcow2"));
        rich_image(&src, create, backed.then_some(base.as_path()));
        same_as_qemu_img(&dir, name, &src, amend);
    }
    // Zstd without compressed clusters is downgraded; a snapshot of another size refuses.
    let zstd = dir.join("zstd-empty.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", p(&zstd), "20M"]);
    qemu_io(&zstd, &["write -P 1 0 1M", "write -z 2M 1M"]);
    let snap = dir.join("resized.qcow2");
    rich_image(&snap, "", None);
    run_qemu_img(&["resize", "-q", p(&snap), "30M"]);
    let df = dir.join("df.qcow2");
    let data = dir.join("df.data");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", p(&data)), p(&df), "20M"]);
    for (name, f) in [("zstd-empty", &zstd), ("resized", &snap)] {
        let a = dir.join(format!("{name}-theirs.qcow2"));
        let b = dir.join(format!("{name}-mine.qcow2"));
        std::fs::copy(f, &a).unwrap();
        std::fs::copy(f, &b).unwrap();
        let (ok, err) = theirs(&["amend", "-o", "compat=0.10", p(&a)]);
        assert_eq!(ours(&["amend", "-o", "compat=0.10", p(&b)]).err(), (!ok).then_some(err), "{name}");
        assert_eq!(info(&b), info(&a), "{name}");
        check_clean(&b);
        let (same, err) = theirs(&["compare", "-U", p(&a), p(&b)]);
        assert!(same, "{name}: {err}");
    }
    // An external data file: refused with QEMU's message, nothing changed.
    let (ok, err) = theirs(&["amend", "-o", "compat=0.10", p(&df)]);
    assert!(!ok);
    let before = info(&df);
    assert_eq!(ours(&["amend", "-o", "compat=0.10", p(&df)]), Err(err));
    assert_eq!(info(&df), before);
    // Bitmaps: QEMU keeps them as an inconsistent extension of the v2 image (its clusters
    // leak); Strata refuses.
    let bm = dir.join("bitmaps.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", p(&bm), "20M"]);
    run_qemu_img(&["bitmap", "--add", p(&bm), "b0"]);
    let e = ours(&["amend", "-o", "compat=0.10", p(&bm)]).unwrap_err();
    assert!(e.contains("bitmaps"), "{e}");
    check_clean(&bm);
}

//! `qemu-runner img resize` (growing and `--shrink`, absolute and `+`/`-` relative sizes)
//! against `qemu-img resize` doing the same on a copy: the results compare equal
//! (`qemu-img compare`), have the same virtual size, and ours passes `qemu-img check` clean —
//! qcow2 with small, default and extended-L2 clusters, lazy refcounts, refcount_bits=1, v2,
//! compressed data, a backing file, and internal snapshots (whose contents must survive the
//! shrink: applied afterwards they equal qemu-img's); raw files; and the refusals (a smaller
//! size without `--shrink`; a v2 image with snapshots) with qemu-img's message.
//!
//! File lengths are not compared: QEMU also frees refcount blocks left empty
//! (`qcow2_shrink_reftable`), which Strata does not, so its file may keep a refcount block
//! past the data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::Path;
use std::process::Command;

use strata_tests::*;

fn p(f: &Path) -> &str {
    f.to_str().unwrap()
}

fn qemu_io(file: &Path, cmd: &str) {
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let out = Command::new(qemu_io).args(["-c", cmd, p(file)]).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// qemu-img's status and its error lines without the `qemu-img: ` prefix.
fn qemu_img(args: &[&str]) -> (bool, String) {
    ensure_qemu();
    let out = Command::new(strata_tests::qemu_img()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("WARNING") && !l.starts_with("   ")).map(|l| l.strip_prefix("qemu-img: ").unwrap_or(l)).collect();
    (out.status.success(), lines.join("\n"))
}

fn ours(args: &[&str]) -> i32 {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    qemu_runner::img::main(&argv)
}

fn virtual_size(f: &Path) -> u64 {
    let out = Command::new(strata_tests::qemu_img()).args(["info", "-U", "--output=json", p(f)]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

fn check_clean(f: &Path) {
    let out = Command::new(strata_tests::qemu_img()).args(["check", p(f)]).output().unwrap();
    assert!(out.status.success(), "qemu-img check {}: {}", f.display(), String::from_utf8_lossy(&out.stdout));
}

fn compare_equal(a: &Path, b: &Path) {
    let (ok, err) = qemu_img(&["compare", "-U", p(a), p(b)]);
    assert!(ok, "compare {} {}: {err}", a.display(), b.display());
}

/// A qcow2 of `opts` and `size` with data written by `writes`, resized to `to` by qemu-img and
/// by us (with `--shrink`); with `snapshot`, a snapshot is taken after the writes and the whole
/// image overwritten, and afterwards both snapshots are applied and compared too.
fn case(name: &str, opts: &str, size: &str, writes: &[&str], to: &str, backing: bool, snapshot: bool) {
    let dir = scratch(&format!("img_resize-{name}"));
    let theirs = dir.join("theirs.qcow2");
    let mine = dir.join("mine.qcow2");
    let base = dir.join("base.qcow2");
    let mut create = vec!["create", "-q", "-f", "qcow2", "-o", opts];
    if backing {
        run_qemu_img(&["create", "-q", "-f", "qcow2", p(&base), size]);
        qemu_io(&base, &format!("write -P 9 0 {size}"));
        create.extend(["-b", p(&base), "-F", "qcow2"]);
    }
    create.extend([p(&theirs), size]);
    run_qemu_img(&create);
    for w in writes {
        qemu_io(&theirs, w);
    }
    if snapshot {
        run_qemu_img(&["snapshot", "-c", "sn", p(&theirs)]);
        qemu_io(&theirs, &format!("write -P 8 0 {size}"));
    }
    std::fs::copy(&theirs, &mine).unwrap();
    let (ok, err) = qemu_img(&["resize", "-q", "--shrink", p(&theirs), "--", to]);
    assert!(ok, "qemu-img resize {name}: {err}");
    assert_eq!(ours(&["resize", "-q", "--shrink", p(&mine), "--", to]), 0, "{name}");
    check_clean(&mine);
    assert_eq!(virtual_size(&mine), virtual_size(&theirs), "{name}");
    compare_equal(&theirs, &mine);
    if snapshot {
        run_qemu_img(&["snapshot", "-a", "sn", p(&theirs)]);
        run_qemu_img(&["snapshot", "-a", "sn", p(&mine)]);
        check_clean(&mine);
        compare_equal(&theirs, &mine);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qcow2_shrinks_as_qemu_img_does() {
    case("small", "cluster_size=512", "8M", &["write -P 1 0 8M"], "3333k", false, false);
    case("default", "cluster_size=64k", "100M", &["write -P 1 30M 20M", "write -z 45M 1M"], "40M", false, false);
    case("relative", "cluster_size=4k", "100M", &["write -P 1 0 100M"], "-1000k", false, false);
    case("ext_l2", "extended_l2=on", "100M", &["write -P 1 0 33k", "write -P 2 90M 5k"], "20k", false, false);
    case("ext_l2_32k", "extended_l2=on,cluster_size=32k", "100M", &["write -P 1 30M 20M"], "40M", false, false);
    case("lazy", "lazy_refcounts=on", "100M", &["write -P 1 30M 20M"], "40M", false, false);
    case("refcount1", "refcount_bits=1", "100M", &["write -P 1 30M 20M"], "40M", false, false);
    case("v2", "compat=0.10", "100M", &["write -P 1 30M 20M"], "40M", false, false);
    case("v2_backing", "compat=0.10", "100M", &["write -P 1 30M 20M"], "40M", true, false);
    case("backing", "cluster_size=4k", "100M", &["write -P 1 30M 20M"], "40M", true, false);
    case("compressed", "cluster_size=4k", "100M", &["write -c -P 1 30M 20M"], "1234k", false, false);
    case("snapshot", "cluster_size=4k", "100M", &["write -P 1 30M 20M"], "40M", false, true);
    case("snapshot_64k", "cluster_size=64k", "100M", &["write -P 1 0 100M"], "40000k", false, true);
}

#[test]
fn growing_and_raw_as_qemu_img_does() {
    let dir = scratch("img_resize-grow");
    for (i, (fmt, to)) in [("qcow2", "+30M"), ("qcow2", "300M"), ("raw", "+3M"), ("raw", "-3M"), ("raw", "1234567")].iter().enumerate() {
        let theirs = dir.join(format!("t{i}.img"));
        let mine = dir.join(format!("m{i}.img"));
        run_qemu_img(&["create", "-q", "-f", fmt, p(&theirs), "10M"]);
        qemu_io(&theirs, "write -P 3 0 10M");
        std::fs::copy(&theirs, &mine).unwrap();
        let (ok, err) = qemu_img(&["resize", "-q", "--shrink", "-f", fmt, p(&theirs), "--", to]);
        assert!(ok, "qemu-img resize {fmt} {to}: {err}");
        assert_eq!(ours(&["resize", "-q", "--shrink", "-f", fmt, p(&mine), "--", to]), 0);
        assert_eq!(virtual_size(&mine), virtual_size(&theirs), "{fmt} {to}");
        if *fmt == "qcow2" {
            check_clean(&mine);
        } else {
            assert_eq!(std::fs::metadata(&mine).unwrap().len(), std::fs::metadata(&theirs).unwrap().len());
        }
        compare_equal(&theirs, &mine);
    }
}

#[test]
fn refusals_as_qemu_img() {
    let dir = scratch("img_resize-refuse");
    let v2 = dir.join("v2.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10", p(&v2), "10M"]);
    run_qemu_img(&["snapshot", "-c", "sn", p(&v2)]);
    let raw = dir.join("r.raw");
    raw_disk(&raw, 10 << 20);
    let q = dir.join("q.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", p(&q), "10M"]);
    for args in [&["resize", p(&q), "5M"][..], &["resize", "-f", "raw", p(&raw), "--", "-1M"], &["resize", "--shrink", p(&v2), "5M"], &["resize", p(&v2), "50M"]] {
        let (ok, theirs) = qemu_img(args);
        assert!(!ok, "qemu-img {args:?} succeeded");
        let argv: Vec<String> = args[1..].iter().map(|a| a.to_string()).collect();
        let mine = qemu_runner::img::resize::run(&argv).unwrap_err().to_string().replace("qemu-runner img: ", "");
        assert_eq!(mine, theirs, "{args:?}");
    }
    assert_eq!(virtual_size(&q), 10 << 20);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 10 << 20);
}

//! `qemu-runner img measure` against the live `qemu-img measure` on the same inputs: `--size`
//! with cluster sizes, refcount widths, extended L2 and preallocation; sources raw (sparse, with
//! data), qcow2 with data and zero clusters, with a backing file (and `-o backing_file`), v2,
//! with persistent bitmaps (the "bitmaps size" line); human and JSON text byte for byte; the
//! refusals (bad options, both or neither of `--size` and a file, an image too large) with
//! qemu-img's message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::Path;
use std::process::Command;

use strata_tests::*;

fn qemu_io(file: &Path, fmt: &str, cmds: &[&str]) {
    ensure_qemu();
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let mut c = Command::new(qemu_io);
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(file).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmds:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// qemu-img's stdout, or its error lines without the `qemu-img: ` prefix.
fn theirs(args: &[&str]) -> Result<String, String> {
    ensure_qemu();
    let out = Command::new(qemu_img()).arg("measure").args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().map(|l| l.strip_prefix("qemu-img: ").unwrap_or(l)).collect::<Vec<_>>().join("\n"))
    }
}

fn ours(args: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    qemu_runner::img::measure::output(&argv).map_err(|e| e.to_string())
}

fn same(args: &[&str]) {
    assert_eq!(ours(args), theirs(args), "measure {args:?}");
}

#[test]
fn sizes_alone_equal_qemu_img() {
    for opts in [
        "",
        "cluster_size=512",
        "cluster_size=4k,refcount_bits=1",
        "cluster_size=2M,refcount_bits=64",
        "extended_l2=on,cluster_size=128k",
        "preallocation=full",
        "preallocation=metadata,compat=0.10",
        "backing_file=x.qcow2",
        "lazy_refcounts=on,refcount_bits=8",
    ] {
        for size in ["0", "1000", "1G", "77777777", "3T"] {
            let mut args = vec!["-O", "qcow2", "--size", size];
            if !opts.is_empty() {
                args.extend(["-o", opts]);
            }
            same(&args);
            args.push("--output=json");
            same(&args);
        }
    }
    same(&["--size", "1000"]);
    same(&["--size", "1000", "-O", "raw", "--output=json"]);
}

#[test]
fn sources_equal_qemu_img() {
    let dir = scratch("img_measure");
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    // A sparse raw file with data in a few places, some not cluster-aligned.
    raw_disk(Path::new(&f("r.raw")), 50 << 20);
    qemu_io(Path::new(&f("r.raw")), "raw", &["write -P 1 0 4k", "write -P 1 7M 1M", "write -P 2 33333 10", "write -P 3 52428288 512"]);
    // qcow2 with data and zero clusters; a chain over it; a v2 image; one with bitmaps.
    run_qemu_img(&["create", "-q", "-f", "qcow2", &f("base.qcow2"), "64M"]);
    qemu_io(Path::new(&f("base.qcow2")), "qcow2", &["write -P 3 1M 2M", "write -P 4 10M 64k", "write -z 30M 1M"]);
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", &f("base.qcow2"), "-F", "qcow2", &f("top.qcow2")]);
    qemu_io(Path::new(&f("top.qcow2")), "qcow2", &["write -P 5 20M 100k", "write -z 1M 64k"]);
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4k", &f("v2.qcow2"), "10M"]);
    qemu_io(Path::new(&f("v2.qcow2")), "qcow2", &["write -P 6 5000 70000"]);
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=16k", &f("bm.qcow2"), "300M"]);
    qemu_io(Path::new(&f("bm.qcow2")), "qcow2", &["write -P 7 100M 1M"]);
    run_qemu_img(&["bitmap", "--add", &f("bm.qcow2"), "b0"]);
    run_qemu_img(&["bitmap", "--add", "-g", "512", &f("bm.qcow2"), "a-much-longer-bitmap-name"]);
    for file in ["r.raw", "base.qcow2", "top.qcow2", "v2.qcow2", "bm.qcow2"] {
        let file = f(file);
        for opts in ["", "cluster_size=512", "cluster_size=2M,refcount_bits=64", "extended_l2=on", "backing_file=x", "compat=0.10", "preallocation=falloc"] {
            let mut args = vec!["-O", "qcow2", &file];
            if !opts.is_empty() {
                args.extend(["-o", opts]);
            }
            same(&args);
            args.push("--output=json");
            same(&args);
        }
        same(&["-O", "raw", &file]);
        same(&["-f", "raw", "-O", "qcow2", &file]);
    }
}

#[test]
fn refusals_say_what_qemu_img_says() {
    let dir = scratch("img_measure_refusals");
    let file = dir.join("r.raw");
    raw_disk(&file, 1 << 20);
    let file = file.to_str().unwrap();
    for args in [
        &["-O", "qcow2"][..],
        &["-O", "qcow2", "--size", "1G", file],
        &["--size", "1G", "-O", "qcow2", "-o", "compat=0.10,refcount_bits=1"],
        &["--size", "1G", "-O", "qcow2", "-o", "foo=1"],
        &["--size", "1G", "-O", "raw", "-o", "cluster_size=4k"],
        &["--size", "1G", "-O", "qcow2", "-o", "cluster_size=3k"],
        &["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=3"],
        &["--size", "1G", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=4k"],
        &["--size", "1G", "-O", "nope"],
        &["--size", "1P", "-O", "qcow2", "-o", "cluster_size=512"],
    ] {
        let (a, b) = (ours(args), theirs(args));
        assert!(a.is_err() && b.is_err(), "measure {args:?}: ours {a:?}, qemu-img {b:?}");
        assert_eq!(a, b, "measure {args:?}");
    }
}

//! `qemu-runner img create -f qcow2` and the guest's `create` against `qemu-img create`: for a
//! matrix of cluster sizes, extended L2, lazy refcounts, refcount widths and backing files, our
//! image must pass `qemu-img check`, show the same `qemu-img info` (file names and sizes on disk
//! aside), compare equal to qemu-img's, take writes through `qemu-io` and stay clean. With
//! qemu-img 7.x the files must also be byte-identical (the layout is qemu-img's; later versions
//! may write a different feature-name table, so there only the oracles above are asserted).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::Path;

use serde_json::Value;
use strata_tests::{boot, drive, random_raw_disk, records, scratch, Machine};
use util::*;

/// `qemu-img info --output=json` without what legitimately differs between two files: their
/// names, their sizes on disk, and the protocol layer under the format (QEMU 8+ `children`).
fn info(file: &Path) -> Value {
    let mut v: Value = serde_json::from_str(&qimg(&["info", "--output=json", file.to_str().unwrap()])).unwrap();
    let obj = v.as_object_mut().unwrap();
    for key in ["filename", "actual-size", "children"] {
        obj.remove(key);
    }
    v
}

/// True if `qemu-img` is version 7 (whose output the byte-for-byte checks were taken from).
fn qemu_img_7() -> bool {
    qimg(&["--version"]).starts_with("qemu-img version 7.")
}

/// Checks `ours` against `theirs` with every oracle, then writes to ours through qemu-io.
fn check_pair(ours: &Path, theirs: &Path, what: &str) {
    let o = ours.to_str().unwrap();
    qimg(&["check", "-q", o]);
    assert_eq!(info(ours), info(theirs), "{what}: qemu-img info differs");
    qimg(&["compare", "-q", o, theirs.to_str().unwrap()]);
    if qemu_img_7() {
        let (a, b) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
        assert!(a == b, "{what}: not byte-identical to qemu-img's ({} vs {} bytes)", a.len(), b.len());
    }
    qio("qcow2", ours, &["write -P 0x5a 0 1M", "read -P 0x5a 0 1M"]);
    qimg(&["check", "-q", o]);
}

#[test]
fn matrix_against_qemu_img() {
    let dir = scratch("create-matrix");
    let base = dir.join("base.qcow2");
    create(&base, "", &(64 * MIB).to_string(), &[]);
    qio("qcow2", &base, &["write -P 0x11 0 2M", "write -P 0x22 60M 1M"]);
    let mut n = 0;
    for cs in ["512", "4k", "64k", "2M"] {
        let ext_l2 = if matches!(cs, "512" | "4k") { &["off"][..] } else { &["off", "on"][..] };
        for ext in ext_l2 {
            for rb in ["1", "16", "64"] {
                for backing in [false, true] {
                    n += 1;
                    let lazy = if n % 2 == 0 { "on" } else { "off" };
                    let opts = format!("cluster_size={cs},extended_l2={ext},lazy_refcounts={lazy},refcount_bits={rb}");
                    let (ours, theirs) = (dir.join(format!("ours{n}.qcow2")), dir.join(format!("theirs{n}.qcow2")));
                    let (o, t) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
                    // With a backing file, SIZE is left out every other time: the backing's is taken.
                    let size = if backing && n % 4 == 0 { None } else { Some(if backing { "100M" } else { "1G" }) };
                    let mut args = vec!["create", "-q", "-f", "qcow2", "-o", &opts];
                    if backing {
                        args.extend(["-b", "base.qcow2", "-F", "qcow2"]);
                    }
                    let (mut ours_args, mut theirs_args) = (args.clone(), args);
                    ours_args.push(o);
                    theirs_args.push(t);
                    if let Some(s) = size {
                        ours_args.push(s);
                        theirs_args.push(s);
                    }
                    assert_eq!(img(&ours_args), 0, "img {ours_args:?}");
                    qimg(&theirs_args);
                    check_pair(&ours, &theirs, &format!("{opts} backing={backing} size={size:?}"));
                }
            }
        }
    }
}

#[test]
fn large_and_edge_sizes() {
    let dir = scratch("create-sizes");
    // 512-byte clusters with 64-bit refcounts: qemu-img moves its refcount table mid-creation,
    // ours is sized up front; both must be clean and equal in content. Then sizes 0 and 1000.
    for (n, (opts, size)) in [("cluster_size=512,refcount_bits=64", "16G"), ("cluster_size=512", "1G"), ("", "0"), ("", "1000"), ("cluster_size=2M", "2T")]
        .into_iter()
        .enumerate()
    {
        let (ours, theirs) = (dir.join(format!("o{n}.qcow2")), dir.join(format!("t{n}.qcow2")));
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        let (mut a, mut b) = (args.clone(), args);
        a.extend([ours.to_str().unwrap(), size]);
        b.extend([theirs.to_str().unwrap(), size]);
        assert_eq!(img(&a), 0, "img {a:?}");
        qimg(&b);
        let o = ours.to_str().unwrap();
        qimg(&["check", "-q", o]);
        assert_eq!(info(&ours), info(&theirs), "{opts} {size}");
        qimg(&["compare", "-q", o, theirs.to_str().unwrap()]);
        if size != "0" {
            qio("qcow2", &ours, &["write -P 0x5a 0 512", "read -P 0x5a 0 512"]);
            qimg(&["check", "-q", o]);
        }
    }
}

#[test]
fn raw_and_backing_size() {
    let dir = scratch("create-raw");
    let raw = dir.join("a.raw");
    assert_eq!(img(&["create", "-q", "-f", "raw", raw.to_str().unwrap(), "3M"]), 0);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 3 * MIB);
    // A raw backing file: the new image takes its size.
    let top = dir.join("top.qcow2");
    assert_eq!(img(&["create", "-q", "-f", "qcow2", "-o", "backing_file=a.raw,backing_fmt=raw", top.to_str().unwrap()]), 0);
    let v = info(&top);
    assert_eq!(v["virtual-size"], 3 * MIB);
    assert_eq!(v["backing-filename"], "a.raw");
    assert_eq!(v["backing-filename-format"], "raw");
    qimg(&["check", "-q", top.to_str().unwrap()]);
    // Recreating over an existing image truncates it.
    assert_eq!(img(&["create", "-q", "-f", "qcow2", top.to_str().unwrap(), "1M"]), 0);
    assert_eq!(info(&top)["virtual-size"], MIB);
    assert!(info(&top).get("backing-filename").is_none());
}

#[test]
fn bad_options_are_usage_errors() {
    let dir = scratch("create-bad");
    let f = dir.join("x.qcow2");
    let x = f.to_str().unwrap();
    for args in [
        &["create", "-f", "qcow2", "-o", "cluster_size=1000", x, "1M"][..],
        &["create", "-f", "qcow2", "-o", "cluster_size=4M", x, "1M"],
        &["create", "-f", "qcow2", "-o", "cluster_size=4k,extended_l2=on", x, "1M"],
        &["create", "-f", "qcow2", "-o", "refcount_bits=3", x, "1M"],
        &["create", "-f", "qcow2", "-o", "refcount_bits=128", x, "1M"],
        &["create", "-f", "qcow2", "-o", "lazy_refcounts=maybe", x, "1M"],
        &["create", "-f", "qcow2", "-o", "foo=bar", x, "1M"],
        &["create", "-f", "qcow2", "-o", "cluster_size=512", x, "129G"],
        &["create", "-f", "qcow2", x],
        &["create", "-f", "qcow2", x, "1Q"],
        &["create", "-f", "qcow2", "-b", "base.qcow2", x, "1M"],
        &["create", "-f", "qcow2", "-F", "qcow2", x, "1M"],
        &["create", "-f", "vmdk", x, "1M"],
    ] {
        assert_eq!(img(args), 2, "img {args:?}");
        assert!(!f.exists(), "img {args:?} created the file");
    }
    // A missing backing file is a failure (exit 1), as in qemu-img.
    assert_eq!(img(&["create", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", x]), 1);
}

#[test]
fn guest_formats_a_blank_device() {
    let dir = scratch("create-guest");
    let base = dir.join("base.qcow2");
    create(&base, "", &(64 * MIB).to_string(), &[]);
    // A device full of stale bytes: they must not matter.
    let disk = dir.join("disk.img");
    random_raw_disk(&disk, 8 * MIB, 5);
    let r = boot(Machine::Microvm, vec![drive(&disk, "disk", false)], "create disk --size 1G --cluster-size 64k --extended-l2 --lazy-refcounts --backing base.qcow2 --backing-fmt qcow2");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let rec = records(&r, "create");
    assert_eq!(rec.len(), 1, "{}", r.console);
    assert_eq!(rec[0]["size"], 1u64 << 30);
    let d = disk.to_str().unwrap();
    qimg(&["check", "-q", "-f", "qcow2", d]);
    let v: Value = serde_json::from_str(&qimg(&["info", "--output=json", "-f", "qcow2", d])).unwrap();
    assert_eq!(v["virtual-size"], 1u64 << 30);
    assert_eq!(v["cluster-size"], 65536);
    assert_eq!(v["backing-filename"], "base.qcow2");
    assert_eq!(v["backing-filename-format"], "qcow2");
    assert_eq!(v["format-specific"]["data"]["extended-l2"], true);
    assert_eq!(v["format-specific"]["data"]["lazy-refcounts"], true);
    // Same content as qemu-img's; with qemu-img 7 the same bytes up to its file's end.
    let theirs = dir.join("theirs.qcow2");
    create(&theirs, "cluster_size=64k,extended_l2=on,lazy_refcounts=on", "1G", &["-b", "base.qcow2", "-F", "qcow2"]);
    qimg(&["compare", "-q", "-f", "qcow2", "-F", "qcow2", d, theirs.to_str().unwrap()]);
    if qemu_img_7() {
        let (a, b) = (std::fs::read(&disk).unwrap(), std::fs::read(&theirs).unwrap());
        assert!(a.get(..b.len()) == Some(&b[..]), "the guest's image differs from qemu-img's");
    }
    // A bad cluster size is the command line's fault.
    let blank = dir.join("blank.img");
    random_raw_disk(&blank, MIB, 6);
    let r = boot(Machine::Microvm, vec![drive(&blank, "b", false)], "create b --size 1G --cluster-size 1000");
    assert_eq!(r.kernel_code, Some(2), "{}\n{}", r.summary(), r.console);
    // An image that does not fit the device fails (the device does not grow).
    let r = boot(Machine::Microvm, vec![drive(&blank, "b", false)], "create b --size 64G --cluster-size 512");
    assert_eq!(r.kernel_code, Some(1), "{}\n{}", r.summary(), r.console);
}

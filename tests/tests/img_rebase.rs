//! `qemu-runner img rebase` against `qemu-img rebase` on copies of the same chains: the
//! header's backing file name and format (`-u`), growing names that move behind the
//! extensions, removal; then `qemu-img check` clean, `qemu-img info --backing-chain` equal,
//! `qemu-img compare` equal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use util::*;

/// A chain in `dir`: `base.qcow2` (data), `mid.qcow2` (over base), `other.qcow2` and
/// `other.raw` (candidates for a new backing file), each with some data.
fn chain(dir: &Path) {
    let p = |n: &str| dir.join(n);
    create(&p("base.qcow2"), "", "4M", &[]);
    qio("qcow2", &p("base.qcow2"), &["write -P 1 0 4M"]);
    create(&p("mid.qcow2"), "", "4M", &["-b", "base.qcow2", "-F", "qcow2"]);
    qio("qcow2", &p("mid.qcow2"), &["write -P 2 1M 1M"]);
    create(&p("other.qcow2"), "", "4M", &[]);
    qio("qcow2", &p("other.qcow2"), &["write -P 3 0 2M"]);
    qimg(&["create", "-q", "-f", "raw", p("other.raw").to_str().unwrap(), "4M"]);
}

/// Two copies of a top image over `mid.qcow2` with data of its own (`ours`, `theirs`).
fn tops(dir: &Path, name: &str, opts: &str) -> (PathBuf, PathBuf) {
    let (ours, theirs) = (dir.join(format!("{name}-ours.qcow2")), dir.join(format!("{name}-theirs.qcow2")));
    for t in [&ours, &theirs] {
        create(t, opts, "4M", &["-b", "mid.qcow2", "-F", "qcow2"]);
        qio("qcow2", t, &["write -P 9 64k 64k", "write -z 3M 64k"]);
    }
    (ours, theirs)
}

/// `qemu-img info --backing-chain --output=json` without the names of the files themselves.
fn chain_info(file: &Path) -> String {
    let out = qimg(&["info", "--backing-chain", "--output=json", "-U", file.to_str().unwrap()]);
    let ours_or_theirs = |l: &str| l.replace("-ours", "-X").replace("-theirs", "-X");
    out.lines().filter(|l| !l.contains("\"actual-size\"") && !l.contains("\"dirty-flag\"")).map(ours_or_theirs).collect::<Vec<_>>().join("\n")
}

/// Runs `img rebase ARGS ours` and `qemu-img rebase ARGS theirs`; both succeed or both fail.
fn both(args: &[&str], ours: &Path, theirs: &Path) -> i32 {
    let mut a: Vec<&str> = vec!["rebase"];
    a.extend_from_slice(args);
    let mut mine = a.clone();
    mine.push(ours.to_str().unwrap());
    let status = img(&mine);
    a.push(theirs.to_str().unwrap());
    let q = qimg_ok(&a);
    assert_eq!(status == 0, q, "img {mine:?} exit {status}, qemu-img succeeded: {q}");
    status
}

fn assert_same_result(ours: &Path, theirs: &Path) {
    for f in [ours, theirs] {
        assert!(qimg(&["check", f.to_str().unwrap()]).contains("No errors were found"), "{}", f.display());
    }
    assert_eq!(chain_info(ours), chain_info(theirs));
    qimg(&["compare", ours.to_str().unwrap(), theirs.to_str().unwrap()]);
}

#[test]
fn unsafe_rebase_rewrites_the_header_as_qemu_img() {
    let dir = scratch("img-rebase-unsafe");
    chain(&dir);
    for (name, opts) in [("v3", ""), ("v2", "compat=0.10"), ("small", "cluster_size=512"), ("ext", "extended_l2=on")] {
        let (ours, theirs) = tops(&dir, name, opts);
        // Another qcow2 backing file, a raw one, a name that grows past the old one, back.
        let long = format!("{}other.qcow2", "./".repeat(150));
        for args in [
            vec!["-u", "-b", "other.qcow2", "-F", "qcow2"],
            vec!["-u", "-b", "other.raw", "-F", "raw"],
            vec!["-u", "-b", long.as_str(), "-F", "qcow2"],
            vec!["-u", "-b", "base.qcow2", "-F", "qcow2"],
        ] {
            assert_eq!(both(&args, &ours, &theirs), 0, "{args:?}");
            assert_same_result(&ours, &theirs);
            assert_eq!(std::fs::read(&ours).unwrap()[..512], std::fs::read(&theirs).unwrap()[..512], "{name} {args:?}: header");
        }
        // Removing the backing file: -b "" and -u alone.
        assert_eq!(both(&["-u", "-b", ""], &ours, &theirs), 0);
        assert_same_result(&ours, &theirs);
        assert_eq!(both(&["-u", "-b", "mid.qcow2", "-F", "qcow2"], &ours, &theirs), 0);
        assert_eq!(both(&["-u"], &ours, &theirs), 0);
        assert_same_result(&ours, &theirs);
    }
}

#[test]
fn unsafe_rebase_refusals() {
    let dir = scratch("img-rebase-refusals");
    chain(&dir);
    let (ours, _) = tops(&dir, "r", "");
    let before = std::fs::read(&ours).unwrap();
    // A name above 1023 bytes; a raw image has no backing file to change.
    let huge = "n".repeat(1024);
    assert_ne!(img(&["rebase", "-u", "-b", &huge, "-F", "qcow2", ours.to_str().unwrap()]), 0);
    assert_ne!(img(&["rebase", "-u", "-b", "base.qcow2", "-F", "qcow2", "-f", "raw", dir.join("other.raw").to_str().unwrap()]), 0);
    assert!(std::fs::read(&ours).unwrap() == before, "a refused rebase changed the image");
}

/// Safe mode: the image takes what differs between the old chain and the new backing file (a
/// smaller qcow2 that shares part of the data, a raw file, none at all), so it reads the same
/// before and after; both tools' results compare equal, check clean and map alike.
#[test]
fn safe_rebase_keeps_what_the_image_reads() {
    let dir = scratch("img-rebase-safe");
    chain(&dir);
    // A smaller new backing file that agrees with the old chain in part.
    let small = dir.join("small.qcow2");
    create(&small, "", "3M", &[]);
    qio("qcow2", &small, &["write -P 1 0 512k", "write -P 7 600k 100k", "write -P 2 1M 256k"]);
    for (name, opts) in [("v3", ""), ("c4k", "cluster_size=4096"), ("ext", "extended_l2=on")] {
        for (i, args) in [vec!["-b", "small.qcow2", "-F", "qcow2"], vec!["-b", "other.raw", "-F", "raw"], vec!["-b", "other.qcow2", "-F", "qcow2"], vec!["-b", ""]].into_iter().enumerate() {
            let (ours, theirs) = tops(&dir, &format!("safe-{name}-{i}"), opts);
            let before = dir.join(format!("safe-{name}-{i}.before.raw"));
            qimg(&["convert", "-O", "raw", ours.to_str().unwrap(), before.to_str().unwrap()]);
            assert_eq!(both(&args, &ours, &theirs), 0, "{name} {args:?}");
            assert_same_result(&ours, &theirs);
            qimg(&["compare", "-F", "raw", ours.to_str().unwrap(), before.to_str().unwrap()]);
            assert_eq!(map_runs(&ours), map_runs(&theirs), "{name} {args:?}: map");
        }
    }
}

/// `qemu-img map --output=json` of `file` as (start, length, depth, present, zero, data) runs,
/// adjacent equal runs merged (host offsets dropped: the order clusters are allocated in is
/// the copy's).
fn map_runs(file: &Path) -> Vec<(u64, u64, u64, bool, bool, bool)> {
    let out = qimg(&["map", "--output=json", "-U", file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut runs: Vec<(u64, u64, u64, bool, bool, bool)> = Vec::new();
    for r in v.as_array().unwrap() {
        let run = (r["start"].as_u64().unwrap(), r["length"].as_u64().unwrap(), r["depth"].as_u64().unwrap(), r["present"].as_bool().unwrap(), r["zero"].as_bool().unwrap(), r["data"].as_bool().unwrap());
        match runs.last_mut() {
            Some(l) if (l.2, l.3, l.4, l.5) == (run.2, run.3, run.4, run.5) && l.0 + l.1 == run.0 => l.1 += run.1,
            _ => runs.push(run),
        }
    }
    runs
}

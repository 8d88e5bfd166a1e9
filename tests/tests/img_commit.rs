//! `qemu-runner img commit` against `qemu-img commit` on two copies of the same chain (same
//! names, two directories): afterwards every image of the chain is equal to its counterpart
//! (`qemu-img compare`), checks clean, `qemu-img info --backing-chain` agrees (sizes of files
//! aside) and `qemu-img map` agrees run by run (host offsets aside: the order clusters are
//! allocated in the base is the copy's, not defined).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use util::*;

/// A chain base <- mid <- top in `dir` with data, zeros and partial clusters in every layer;
/// `opts` for every image, `top_size` for the top (a larger top grows the base).
fn chain(dir: &Path, opts: &str, top_size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n);
    create(&p("base.qcow2"), opts, "4M", &[]);
    qio("qcow2", &p("base.qcow2"), &["write -P 1 0 4M"]);
    create(&p("mid.qcow2"), opts, "4M", &["-b", "base.qcow2", "-F", "qcow2"]);
    qio("qcow2", &p("mid.qcow2"), &["write -P 2 64k 64k", "write -z 256k 64k", "write -P 5 2M 512k"]);
    create(&p("top.qcow2"), opts, top_size, &["-b", "mid.qcow2", "-F", "qcow2"]);
    qio("qcow2", &p("top.qcow2"), &["write -P 3 128k 4k", "write -z 512k 128k", "write -P 4 900k 3k", "write -P 6 2100k 100k", "discard 1M 64k"]);
}

/// `qemu-img map --output=json` of `file` as (start, length, depth, present, zero, data) runs,
/// adjacent equal runs merged (host offsets dropped).
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

/// `qemu-img info --backing-chain --output=json` of `file`, without sizes of files (qemu-img
/// rebuilds an emptied top from scratch, so its file is shorter; Strata keeps its L2 tables)
/// and without the directory.
fn chain_info(file: &Path, dir: &Path) -> String {
    let out = qimg(&["info", "--backing-chain", "--output=json", "-U", file.to_str().unwrap()]);
    let mut v: serde_json::Value = serde_json::from_str(&out.replace(dir.to_str().unwrap(), "DIR")).unwrap();
    for layer in v.as_array_mut().unwrap() {
        let o = layer.as_object_mut().unwrap();
        for k in ["children", "actual-size", "dirty-flag"] {
            o.remove(k);
        }
    }
    v.to_string()
}

/// Runs `commit ARGS top.qcow2` by img in `ours` and by qemu-img in `theirs`, then compares
/// the chains.
fn commit_both(ours: &Path, theirs: &Path, args: &[&str]) {
    let top = |d: &Path| d.join("top.qcow2").to_str().unwrap().to_string();
    let mut a: Vec<String> = vec!["commit".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    let mut mine = a.clone();
    mine.push(top(ours));
    let mine: Vec<&str> = mine.iter().map(String::as_str).collect();
    assert_eq!(img(&mine), 0, "img {mine:?}");
    let mut q = a;
    q.push(top(theirs));
    let q: Vec<&str> = q.iter().map(String::as_str).collect();
    qimg(&q);
    for name in ["top.qcow2", "mid.qcow2", "base.qcow2"] {
        let (o, t) = (ours.join(name), theirs.join(name));
        assert!(qimg(&["check", o.to_str().unwrap()]).contains("No errors were found"), "{args:?}: {name}");
        qimg(&["compare", o.to_str().unwrap(), t.to_str().unwrap()]);
        assert_eq!(map_runs(&o), map_runs(&t), "{args:?}: map of {name}");
        assert_eq!(chain_info(&o, ours), chain_info(&t, theirs), "{args:?}: info of {name}");
    }
}

fn case(name: &str, opts: &str, top_size: &str, args: &[&str]) {
    let dir = scratch(&format!("img-commit-{name}"));
    let (ours, theirs): (PathBuf, PathBuf) = (dir.join("ours"), dir.join("theirs"));
    chain(&ours, opts, top_size);
    chain(&theirs, opts, top_size);
    commit_both(&ours, &theirs, args);
}

#[test]
fn commit_into_the_backing_file_empties_the_top() {
    case("default", "", "4M", &[]);
}

#[test]
fn commit_keeping_the_top() {
    case("drop", "", "4M", &["-d"]);
}

#[test]
fn commit_into_a_deeper_base() {
    case("base", "", "4M", &["-b", "base.qcow2"]);
}

#[test]
fn commit_small_clusters_and_extended_l2() {
    case("small", "cluster_size=4096", "4M", &[]);
    case("ext", "extended_l2=on", "4M", &["-p"]);
}

#[test]
fn commit_grows_a_smaller_base() {
    case("grow", "", "6M", &[]);
}

#[test]
fn commit_with_a_rate_limit() {
    case("rate", "", "4M", &["-r", "100M", "-q"]);
}

#[test]
fn commit_refusals() {
    let dir = scratch("img-commit-refusals");
    let lone = dir.join("lone.qcow2");
    create(&lone, "", "1M", &[]);
    assert_ne!(img(&["commit", lone.to_str().unwrap()]), 0, "no backing file");
    chain(&dir.join("c"), "", "4M");
    let top = dir.join("c/top.qcow2");
    assert_ne!(img(&["commit", "-b", "nowhere.qcow2", top.to_str().unwrap()]), 0, "a base not in the chain");
}

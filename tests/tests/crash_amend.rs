//! Crash consistency of `img amend`'s structural changes (issue 16): the refcount width
//! (16 to 64 bits, and 16 to 1 on an image whose counts fit), the downgrade to compat=0.10 (zero
//! clusters expanded, new clusters allocated over a backing file, the header rewritten) and the
//! upgrade with a width change, each run through the block layer on the image file opened raw
//! (as `img amend` does) with the leaf recorded (`crash_steps`). Every cut of the log replayed
//! onto a copy of the start must pass `qemu-img check` with at most leaks and show exactly the
//! start's contents, active and snapshot (an amend changes no guest data); the finished image
//! has the new width or version and checks clean.
//!
//! Prefix cuts are sampled evenly (at most [`PREFIX_CUTS`] of the log's seqs, the last
//! included), plus at most [`PLANNED_CUTS`] planned ones (`STRATA_CRASH_CUTS` lowers it) with
//! random subsets of the unflushed writes (`STRATA_CRASH_SEED`): each cut costs a check and
//! two 20 MiB conversions, and a test should stay near a minute.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_steps/mod.rs"]
mod steps;

use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::driver::qcow2::amend::refcount_width::{change_refcount_width, WidthChange};
use qemu_runner::img::block::driver::qcow2::amend::version;
use qemu_runner::img::block::graph::Role;
use steps::*;
use strata_tests::*;

/// Prefix cuts sampled per test.
const PREFIX_CUTS: usize = 40;
/// Planned cuts per test at most.
const PLANNED_CUTS: usize = 15;

/// What an amend does, through the block layer.
#[derive(Clone, Copy, Debug)]
enum Change {
    Width(u32),
    Downgrade,
    Upgrade,
}

/// Active contents and the snapshot's (if any), hashed.
fn state(image: &Path, snapshot: bool) -> Option<(String, Option<String>)> {
    let raw = image.with_extension("state.raw");
    let convert = |extra: &[&str]| -> Option<String> {
        let mut args = vec!["convert"];
        args.extend_from_slice(extra);
        args.extend(["-O", "raw", p(image), p(&raw)]);
        let ok = Command::new(qemu_img()).args(&args).output().ok()?.status.success();
        let h = ok.then(|| sha256sum(&raw));
        let _ = std::fs::remove_file(&raw);
        h
    };
    let snap = if snapshot { Some(convert(&["-l", "snapshot.name=s1"])?) } else { None };
    Some((convert(&[])?, snap))
}

/// The start: a 20 MiB qcow2 of `opts` (over a fully written backing file if `backed`) with
/// data, zero clusters (plain and preallocated), compressed clusters if `compressed`, and a
/// snapshot if `snapshot`.
fn start(name: &str, opts: &str, backed: bool, compressed: bool, snapshot: bool) -> (PathBuf, PathBuf) {
    ensure_qemu();
    let dir = scratch(&format!("crash-amend-{name}"));
    let base = dir.join("start.qcow2");
    let mut o = opts.to_string();
    if backed {
        let b = dir.join("backing.qcow2");
        run_qemu_img(&["create", "-q", "-f", "qcow2", p(&b), "20M"]);
        qemu_io(&b, "write -P 0x77 0 20M");
        o = format!("backing_file={},backing_fmt=qcow2{}{o}", p(&b), if o.is_empty() { "" } else { "," });
    }
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !o.is_empty() {
        args.extend(["-o", o.as_str()]);
    }
    args.extend([p(&base), "20M"]);
    run_qemu_img(&args);
    qemu_io(&base, "write -P 0x11 0 3M");
    qemu_io(&base, "write -z 4M 1M");
    if compressed {
        qemu_io(&base, "write -c -P 0x12 8M 128k");
    }
    if snapshot {
        run_qemu_img(&["snapshot", "-c", "s1", p(&base)]);
    }
    qemu_io(&base, "write -P 0x13 10M 64k");
    qemu_io(&base, "write -z 0 64k");
    qemu_io(&base, "write -z 12M 192k");
    (dir, base)
}

/// The `qemu-img info` fields an amend changes: compat and refcount bits.
fn info(f: &Path) -> (String, u64) {
    let out = Command::new(qemu_img()).args(["info", "-U", "--output=json", p(f)]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["format-specific"]["data"];
    (d["compat"].as_str().unwrap_or("").to_string(), d["refcount-bits"].as_u64().unwrap_or(0))
}

fn crash_amend(name: &str, opts: &str, backed: bool, compressed: bool, snapshot: bool, changes: &[Change], want: (&str, u64)) {
    let (dir, base) = start(name, opts, backed, compressed, snapshot);
    let before = state(&base, snapshot).unwrap();
    let (log, _spans, work) = record(&dir, &base, "driver=raw,file=work", |graph, root, seq| {
        let leaf = graph.node(root).unwrap().child(Role::File).unwrap();
        let io = graph.io();
        let mut mem = vec![0u8; 1 << 20];
        let mut spans = Vec::new();
        for change in changes {
            let first = seq();
            match *change {
                Change::Width(order) => assert_eq!(block_on(change_refcount_width(&io, leaf, order, &mut mem)).unwrap(), WidthChange::Changed),
                Change::Downgrade => block_on(version::downgrade(&io, leaf, &mut mem)).unwrap().unwrap(),
                Change::Upgrade => block_on(version::upgrade(&io, leaf, &mut mem)).unwrap(),
            }
            spans.push((first, seq()));
        }
        spans
    });
    assert_eq!(state(&work, snapshot).as_ref(), Some(&before), "{name}: the finished image");
    assert!(check_cut(&work, false).unwrap(), "{name}: the finished image checks clean");
    assert_eq!(info(&work), (want.0.to_string(), want.1), "{name}: compat and refcount bits");
    let judge = |_at, out: &Path| -> Result<(), String> {
        let got = state(out, snapshot);
        if got.as_ref() == Some(&before) {
            Ok(())
        } else {
            Err(format!("contents changed: {got:?}"))
        }
    };
    let r = run_cuts(&dir, &base, &log, false, PREFIX_CUTS, cuts_wanted().min(PLANNED_CUTS), &judge);
    eprintln!("crash amend {name}: {} records, {} cuts: {} clean, {} with leaks, {} failed", r.records, r.cuts, r.clean, r.leaky, r.failures.len());
    assert!(r.failures.is_empty(), "{} of {} cuts failed:\n{}", r.failures.len(), r.cuts, r.failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refcount_width_16_to_64() {
    crash_amend("w64", "", false, true, true, &[Change::Width(6)], ("1.1", 64));
}

#[test]
fn refcount_width_16_to_1() {
    crash_amend("w1", "cluster_size=4k", false, false, false, &[Change::Width(0)], ("1.1", 1));
}

#[test]
fn downgrade_over_a_backing_file() {
    crash_amend("v2", "", true, true, true, &[Change::Downgrade], ("0.10", 16));
}

#[test]
fn upgrade_then_width_8() {
    crash_amend("v3", "compat=0.10", false, true, true, &[Change::Upgrade, Change::Width(3)], ("1.1", 8));
}

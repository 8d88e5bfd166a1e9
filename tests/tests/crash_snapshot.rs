//! Crash consistency of internal snapshot create, apply and delete (issue 14), on the
//! operation crash scaffolding (`crash_steps`: `img::crashlog`, `img::replay`): a
//! sequence of guest writes (each flushed) and snapshot operations runs through Strata with the
//! image file's leaf recorded; the same sequence runs through qemu-img and qemu-io on a copy,
//! whose state after each step (active contents, and the name and contents of every snapshot)
//! is the oracle. Every cut of the log, replayed onto a copy of the start, must
//! - pass `qemu-img check` with at most leaks, except in the one window QEMU's own order has too
//!   (see below);
//! - show the state before or after the operation the cut falls in, and exactly the state after
//!   the last operation that completed before it (every operation ends flushed: nothing flushed
//!   is lost).
//!
//! The window: turning a cluster from owned (refcount 1, OFLAG_COPIED set) to shared, or back,
//! changes its refcount block and its L2 entry, two writes that cannot land together; QEMU
//! (whose cache writes refcounts before tables) and Strata both leave a cut between them with
//! an OFLAG_COPIED mismatch, which `qemu-img check -r all` repairs without touching data. Such
//! cuts are counted; they must hold nothing but OFLAG_COPIED errors, be clean after the repair,
//! and show a valid state (`crash_steps::check_cut_copied`).
//!
//! Every prefix cut runs (the log is short), plus `STRATA_CRASH_CUTS` (default 50) planned ones
//! with random subsets of the unflushed writes (`STRATA_CRASH_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_steps/mod.rs"]
mod steps;

use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::dev::record::Seq;
use qemu_runner::img::block::driver::qcow2::snapshots::{Lookup, NewSnapshot};
use steps::*;
use strata_tests::*;

/// The image's virtual size.
const SIZE: u64 = 8 << 20;

/// One step of the sequence.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A write of `len` bytes of pattern `pat` at `offset`, then a flush.
    Write {
        offset: u64,
        len: u64,
        pat: u8,
    },
    Create(&'static str),
    Apply(&'static str),
    Delete(&'static str),
}

const STEPS: &[Step] = &[
    Step::Write {
        offset: 0,
        len: 64 << 10,
        pat: 0xa1,
    },
    Step::Create("s1"),
    Step::Write {
        offset: 4096,
        len: 8192,
        pat: 0xa2,
    },
    Step::Write {
        offset: 1 << 20,
        len: 128 << 10,
        pat: 0xa3,
    },
    Step::Apply("base"),
    Step::Write {
        offset: 3 << 20,
        len: 4096,
        pat: 0xa4,
    },
    Step::Delete("s1"),
    Step::Create("s2"),
    Step::Delete("base"),
    Step::Write {
        offset: 0,
        len: 4096,
        pat: 0xa5,
    },
    Step::Apply("s2"),
];

/// Active contents and (name, contents) of every snapshot, hashed.
type State = (String, Vec<(String, String)>);

/// The state of `image` as qemu-img shows it; `None` if it cannot.
fn state(image: &Path) -> Option<State> {
    let raw = image.with_extension("state.raw");
    let convert = |extra: &[&str]| -> Option<String> {
        let mut args = vec!["convert"];
        args.extend_from_slice(extra);
        args.extend(["-O", "raw", p(image), p(&raw)]);
        let ok = Command::new(qemu_img())
            .args(&args)
            .output()
            .ok()?
            .status
            .success();
        let h = ok.then(|| sha256sum(&raw));
        let _ = std::fs::remove_file(&raw);
        h
    };
    let list = Command::new(qemu_img())
        .args(["snapshot", "-l", p(image)])
        .output()
        .ok()?;
    if !list.status.success() {
        return None;
    }
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    let mut snaps = Vec::new();
    for n in names {
        let opt = format!("snapshot.name={n}");
        snaps.push((n, convert(&["-l", &opt])?));
    }
    Some((convert(&[])?, snaps))
}

/// The start: a qcow2 of `opts` with data (some compressed) and a snapshot "base", by qemu-img.
fn start(name: &str, opts: &str) -> (PathBuf, PathBuf) {
    ensure_qemu();
    let dir = scratch(&format!("crash-snap-{name}"));
    let base = dir.join("base.qcow2");
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    let size = SIZE.to_string();
    args.extend([p(&base), size.as_str()]);
    run_qemu_img(&args);
    let io = |cmd: &str| qemu_io(&base, cmd);
    io("write -P 0x11 0 2M");
    io("write -c -P 0x12 4M 64k");
    io("write -P 0x13 6M 512k");
    run_qemu_img(&["snapshot", "-c", "base", p(&base)]);
    io("write -P 0x14 1M 64k");
    (dir, base)
}

/// The oracle: the steps by qemu-img and qemu-io on a copy, the state before and after each.
fn oracle(dir: &Path, base: &Path) -> Vec<State> {
    let o = dir.join("oracle.qcow2");
    std::fs::copy(base, &o).unwrap();
    let mut states = vec![state(&o).unwrap()];
    for step in STEPS {
        match *step {
            Step::Write { offset, len, pat } => {
                qemu_io(&o, &format!("write -P {pat} {offset} {len}"))
            }
            Step::Create(n) => run_qemu_img(&["snapshot", "-c", n, p(&o)]),
            Step::Apply(n) => run_qemu_img(&["snapshot", "-a", n, p(&o)]),
            Step::Delete(n) => run_qemu_img(&["snapshot", "-d", n, p(&o)]),
        }
        states.push(state(&o).unwrap());
    }
    states
}

/// Runs the steps through Strata on a copy with its leaf recorded; returns the log, each
/// step's (first, end) seq and the finished copy.
fn record_steps(dir: &Path, base: &Path) -> (PathBuf, Vec<(Seq, Seq)>, PathBuf) {
    record_backend_steps(dir, base, STEPS, |backend, graph, root, i, step| {
        let q = graph.state(root).unwrap().and_then(|s| s.qcow2()).unwrap();
        let io = graph.io();
        match *step {
            Step::Write { offset, len, pat } => write_flushed(backend, offset, len, pat),
            Step::Create(name) => {
                let new = NewSnapshot {
                    id: None,
                    name,
                    date_sec: 1_700_000_000 + i as u32,
                    date_nsec: 0,
                    vm_clock_nsec: 0,
                    icount: 0,
                };
                block_on(q.snapshot_create(&io, root, &new)).unwrap();
            }
            Step::Apply(name) => {
                block_on(q.snapshot_apply(&io, root, name)).unwrap();
            }
            Step::Delete(name) => {
                block_on(q.snapshot_delete(&io, root, name, Lookup::Name)).unwrap();
            }
        }
    })
}

fn crash_snapshots(name: &str, opts: &str) {
    let (dir, base) = start(name, opts);
    let states = oracle(&dir, &base);
    let (log, spans, work) = record_steps(&dir, &base);
    // The finished image is the oracle's last state.
    assert_eq!(state(&work), states.last().cloned(), "final state");
    let lazy = opts.contains("lazy_refcounts=on");
    let check = |out: &Path| check_cut_copied(out, lazy);
    let judge = |at, out: &Path| -> Result<(), String> {
        let (lo, hi) = allowed(&spans, at);
        let got = state(out);
        if (lo..=hi).any(|k| got.as_ref() == Some(&states[k])) {
            Ok(())
        } else {
            Err(format!(
                "state is neither after step {lo} nor {hi}: {got:?}"
            ))
        }
    };
    // Every prefix cut (the log is short: a few hundred records), and the planned ones.
    let r = run_cuts_with(&dir, &base, &log, usize::MAX, cuts_wanted(), &check, &judge);
    r.assert_passed(&format!("snapshots {name}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snapshot_operations_default_clusters() {
    crash_snapshots("default", "");
}

#[test]
fn snapshot_operations_small_clusters() {
    crash_snapshots("small", "cluster_size=4096");
}

#[test]
fn snapshot_operations_lazy_refcounts() {
    crash_snapshots("lazy", "lazy_refcounts=on,cluster_size=4096");
}

//! Crash consistency of `img resize --shrink` on qcow2 (issue 16), on the operation crash
//! scaffolding (`crash_steps`: `img::crashlog`, `img::replay`): flushed writes, a
//! shrink through `Backend::resize`, a flushed write after it, run through Strata with the image
//! file's leaf recorded; the same steps by qemu-io and qemu-img on a copy give the state after
//! each (virtual size, and the contents of the part that survives the shrink). Every cut of the
//! log, replayed onto a copy of the start, must
//! - pass `qemu-img check` with at most leaks (with lazy refcounts: after `check -r all`, what
//!   QEMU does when it opens a dirty image);
//! - show exactly the state after the last step that completed before it, and inside the
//!   shrink the state before or after it: nothing flushed before the shrink is lost from the
//!   part that survives it, and a cut inside the shrink shows the old or the new size. (Inside
//!   a guest write that is not flushed yet, any part of it may have landed: only the check
//!   holds there.)
//!
//! Every prefix cut runs, plus `STRATA_CRASH_CUTS` (default 50) planned ones with random subsets
//! of the unflushed writes (`STRATA_CRASH_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_steps/mod.rs"]
mod steps;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::dev::record::Seq;
use steps::*;
use strata_tests::*;

const MIB: u64 = 1024 * 1024;
/// The image's virtual size.
const SIZE: u64 = 8 * MIB;

/// The size the image shrinks to: inside a cluster and an L2 table's span.
const NEW_SIZE: u64 = 3 * MIB + 5 * 4096;

#[derive(Clone, Copy, Debug)]
enum Step {
    Write { offset: u64, len: u64, pat: u8 },
    Shrink,
}

const STEPS: &[Step] = &[
    Step::Write { offset: 2 * MIB, len: 2 * MIB, pat: 0xb1 },
    Step::Write { offset: 6 * MIB, len: MIB + 4096, pat: 0xb2 },
    Step::Shrink,
    Step::Write { offset: 64 << 10, len: 128 << 10, pat: 0xb3 },
];

/// Virtual size and a hash of the first [`NEW_SIZE`] bytes.
type State = (u64, String);

/// The state of `image` as qemu-img shows it; `None` if it cannot.
fn state(image: &Path) -> Option<State> {
    let raw = image.with_extension("state.raw");
    let ok = Command::new(qemu_img()).args(["convert", "-O", "raw", p(image), p(&raw)]).output().ok()?.status.success();
    if !ok {
        return None;
    }
    let size = std::fs::metadata(&raw).ok()?.len();
    let mut prefix = vec![0u8; NEW_SIZE as usize];
    std::fs::File::open(&raw).ok()?.read_exact(&mut prefix).ok()?;
    let _ = std::fs::remove_file(&raw);
    let cut = image.with_extension("prefix.raw");
    std::fs::write(&cut, &prefix).ok()?;
    let h = sha256sum(&cut);
    let _ = std::fs::remove_file(&cut);
    Some((size, h))
}

/// The start: a qcow2 of `opts` with data by qemu-io.
fn start(name: &str, opts: &str) -> (PathBuf, PathBuf) {
    ensure_qemu();
    let dir = scratch(&format!("crash-shrink-{name}"));
    let base = dir.join("base.qcow2");
    let size = SIZE.to_string();
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p(&base), &size]);
    qemu_io(&base, "write -P 0x11 0 1M");
    qemu_io(&base, "write -P 0x12 3M 2M");
    qemu_io(&base, "write -c -P 0x13 7M 64k");
    (dir, base)
}

/// The steps by qemu-io and qemu-img on a copy: the state before and after each.
fn oracle(dir: &Path, base: &Path) -> Vec<State> {
    let o = dir.join("oracle.qcow2");
    std::fs::copy(base, &o).unwrap();
    let mut states = vec![state(&o).unwrap()];
    for step in STEPS {
        match *step {
            Step::Write { offset, len, pat } => qemu_io(&o, &format!("write -P {pat} {offset} {len}")),
            Step::Shrink => run_qemu_img(&["resize", "-q", "--shrink", p(&o), &NEW_SIZE.to_string()]),
        }
        states.push(state(&o).unwrap());
    }
    states
}

/// The steps through Strata on a copy with its leaf recorded: the log, each step's (first,
/// end) seq, and the finished copy.
fn record_steps(dir: &Path, base: &Path) -> (PathBuf, Vec<(Seq, Seq)>, PathBuf) {
    record_backend_steps(dir, base, STEPS, |backend, _, _, _, step| match *step {
        Step::Write { offset, len, pat } => write_flushed(backend, offset, len, pat),
        Step::Shrink => block_on(backend.resize(NEW_SIZE)).unwrap(),
    })
}

fn crash_shrink(name: &str, opts: &str) {
    let (dir, base) = start(name, opts);
    let states = oracle(&dir, &base);
    let (log, spans, work) = record_steps(&dir, &base);
    assert_eq!(state(&work), states.last().cloned(), "final state");
    assert!(check_cut(&work, false).unwrap(), "the finished image checks clean");
    let judge = |at, out: &Path| -> Result<(), String> {
        let (lo, hi) = allowed(&spans, at);
        let got = state(out);
        // Inside a guest write that is not flushed yet any part of it may have landed: only
        // the check holds there. Inside the shrink, and between steps, the state is exact.
        let torn = lo != hi && matches!(STEPS[lo], Step::Write { .. });
        if torn || (lo..=hi).any(|k| got.as_ref() == Some(&states[k])) {
            Ok(())
        } else {
            Err(format!("state is neither after step {lo} nor {hi}: {got:?}"))
        }
    };
    // Every prefix cut (the log is short), and the planned ones.
    let r = run_cuts(&dir, &base, &log, opts.contains("lazy_refcounts=on"), usize::MAX, cuts_wanted(), &judge);
    r.assert_passed(&format!("shrink {name}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shrink_default_clusters() {
    crash_shrink("default", "cluster_size=65536");
}

#[test]
fn shrink_small_clusters_lazy_refcounts() {
    crash_shrink("lazy", "lazy_refcounts=on,cluster_size=4096");
}

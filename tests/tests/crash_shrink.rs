//! Crash consistency of `img resize --shrink` on qcow2 (issue 16), on the recording-leaf
//! machinery of `crash.rs` (`crash_util`, `img::crashlog`, `img::replay`): flushed writes, a
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

#[path = "crash_util/mod.rs"]
mod util;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::dev::file::{CacheMode, Engine, HostFile, HostFileOptions};
use qemu_runner::img::block::dev::record::{Recording, Seq};
use qemu_runner::img::block::dev::BlockDevice;
use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
use qemu_runner::img::block::{Backend, BackendOptions, Graph};
use qemu_runner::img::crashlog::{read_log, LogWriter, Record};
use qemu_runner::img::replay::{plan, replay, Cut};
use util::*;

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

fn p(f: &Path) -> &str {
    f.to_str().unwrap()
}

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

fn qemu_io(image: &Path, cmd: &str) {
    let out = Command::new(std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into())).args(["-f", "qcow2", "-c", cmd, p(image)]).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmd}");
}

/// The start: a qcow2 of `opts` with data by qemu-io.
fn start(name: &str, opts: &str) -> (PathBuf, PathBuf) {
    ensure_qemu();
    let dir = scratch(&format!("crash-shrink-{name}"));
    let base = dir.join("base.qcow2");
    let size = SIZE.to_string();
    qimg(&["create", "-q", "-f", "qcow2", "-o", opts, p(&base), &size]);
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
            Step::Shrink => qimg(&["resize", "-q", "--shrink", p(&o), &NEW_SIZE.to_string()]),
        }
        states.push(state(&o).unwrap());
    }
    states
}

/// The steps through Strata on a copy with its leaf recorded: the log and each step's
/// (first, end) seq.
fn record(dir: &Path, base: &Path) -> (PathBuf, Vec<(Seq, Seq)>) {
    let work = dir.join("work.qcow2");
    let log_path = dir.join("leaf.log");
    std::fs::copy(base, &work).unwrap();
    let opts = HostFileOptions { mode: CacheMode::Writeback, engine: Engine::Threads, direct_fallback: true, ..HostFileOptions::default() };
    let file = HostFile::open(&work, &opts).unwrap();
    let writer = LogWriter::create(&log_path).unwrap();
    let recording: Recording<'_> = Recording::new(&file, &writer);
    let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
    let inflaters = [Inflater::new()];
    let mut bounce = vec![0u8; 32 * 64 * 1024 + 4096];
    let mut spans = Vec::new();
    {
        let mut graph: Graph<'_, 64, 512> = Graph::new(&mut bounce, 64 * 1024);
        graph.set_metadata_cache(&slots);
        graph.set_decompressors(&inflaters);
        let mut resolve = |name: &str| -> Option<&dyn BlockDevice> { (name == "work").then_some(&recording as &dyn BlockDevice) };
        let root = block_on(graph.open("driver=qcow2,file=work", &mut resolve)).unwrap();
        let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
        for step in STEPS {
            let first = recording.seq();
            match *step {
                Step::Write { offset, len, pat } => {
                    block_on(backend.write(offset, &vec![pat; len as usize])).unwrap();
                    block_on(backend.flush()).unwrap();
                }
                Step::Shrink => block_on(backend.resize(NEW_SIZE)).unwrap(),
            }
            spans.push((first, recording.seq()));
        }
        block_on(backend.close()).unwrap();
    }
    writer.finish().unwrap();
    (log_path, spans)
}

/// `qemu-img check` of a cut: `Ok(true)` clean, `Ok(false)` leaks only.
fn check_cut(out: &Path, lazy: bool) -> Result<bool, String> {
    if lazy {
        let r = Command::new(qemu_img()).args(["check", "-q", "-r", "all", p(out)]).output().unwrap();
        if !r.status.success() {
            return Err(format!("qemu-img check -r all: {}", String::from_utf8_lossy(&r.stderr)));
        }
    }
    let c = Command::new(qemu_img()).args(["check", p(out)]).output().unwrap();
    match c.status.code() {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        code => Err(format!("qemu-img check exit {code:?}: {}{}", String::from_utf8_lossy(&c.stdout), String::from_utf8_lossy(&c.stderr))),
    }
}

/// The states a cut at `at` may show: before or after the step it falls in.
fn allowed(spans: &[(Seq, Seq)], at: Seq) -> (usize, usize) {
    for (i, &(first, end)) in spans.iter().enumerate() {
        if at <= first {
            return (i, i);
        }
        if at < end {
            return (i, i + 1);
        }
    }
    (spans.len(), spans.len())
}

fn crash_shrink(name: &str, opts: &str) {
    let (dir, base) = start(name, opts);
    let states = oracle(&dir, &base);
    let (log, spans) = record(&dir, &base);
    let work = dir.join("work.qcow2");
    assert_eq!(state(&work), states.last().cloned(), "final state");
    assert!(check_cut(&work, false).unwrap(), "the finished image checks clean");
    let records: Vec<Record> = read_log(&log).unwrap();
    let mut cuts = plan(&records, cuts_wanted(), seed());
    let last = records.iter().map(Record::seq).max().unwrap_or(0);
    cuts.extend((0..=last + 1).map(|at| Cut { at, drop: None }));
    let (mut clean, mut leaky, mut failures) = (0, 0, Vec::new());
    for (i, cut) in cuts.iter().enumerate() {
        let out = dir.join(format!("cut{i}.qcow2"));
        replay(&records, *cut, &base, &out).unwrap();
        let verdict = match check_cut(&out, opts.contains("lazy_refcounts=on")) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{cut:?}: {e}"));
                continue;
            }
        };
        let (lo, hi) = allowed(&spans, cut.at);
        let got = state(&out);
        // Inside a guest write that is not flushed yet any part of it may have landed: only
        // the check holds there. Inside the shrink, and between steps, the state is exact.
        let torn = lo != hi && matches!(STEPS[lo], Step::Write { .. });
        if !torn && !(lo..=hi).any(|k| got.as_ref() == Some(&states[k])) {
            failures.push(format!("{cut:?}: state is neither after step {lo} nor {hi}: {got:?}"));
            continue;
        }
        if verdict {
            clean += 1;
        } else {
            leaky += 1;
        }
        let _ = std::fs::remove_file(&out);
    }
    eprintln!("crash shrink {name}: {} records, {} cuts: {clean} clean, {leaky} with leaks, {} failed", records.len(), cuts.len(), failures.len());
    assert!(failures.is_empty(), "{} of {} cuts failed:\n{}", failures.len(), cuts.len(), failures.join("\n"));
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

//! Crash consistency of internal snapshot create, apply and delete (issue 14), on the
//! recording-leaf machinery of `crash.rs` (`crash_util`, `img::crashlog`, `img::replay`): a
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
//! and show a valid state.
//!
//! Every prefix cut runs (the log is short), plus `STRATA_CRASH_CUTS` (default 50) planned ones
//! with random subsets of the unflushed writes (`STRATA_CRASH_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::dev::file::{CacheMode, Engine, HostFile, HostFileOptions};
use qemu_runner::img::block::dev::record::{Recording, Seq};
use qemu_runner::img::block::dev::BlockDevice;
use qemu_runner::img::block::driver::qcow2::snapshots::{Lookup, NewSnapshot};
use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
use qemu_runner::img::block::{Backend, BackendOptions, Graph};
use qemu_runner::img::crashlog::{read_log, LogWriter, Record};
use qemu_runner::img::replay::{plan, replay, Cut};
use util::*;

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

fn p(f: &Path) -> &str {
    f.to_str().unwrap()
}

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
    qimg(&args);
    let io = |cmd: &str| {
        let out = Command::new(std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into()))
            .args(["-f", "qcow2", "-c", cmd, p(&base)])
            .output()
            .unwrap();
        assert!(out.status.success(), "qemu-io {cmd}");
    };
    io("write -P 0x11 0 2M");
    io("write -c -P 0x12 4M 64k");
    io("write -P 0x13 6M 512k");
    qimg(&["snapshot", "-c", "base", p(&base)]);
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
                let cmd = format!("write -P {pat} {offset} {len}");
                let out =
                    Command::new(std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into()))
                        .args(["-f", "qcow2", "-c", &cmd, p(&o)])
                        .output()
                        .unwrap();
                assert!(out.status.success());
            }
            Step::Create(n) => qimg(&["snapshot", "-c", n, p(&o)]),
            Step::Apply(n) => qimg(&["snapshot", "-a", n, p(&o)]),
            Step::Delete(n) => qimg(&["snapshot", "-d", n, p(&o)]),
        }
        states.push(state(&o).unwrap());
    }
    states
}

/// Runs the steps through Strata on a copy with its leaf recorded; returns the log and each
/// step's (first, end) seq.
fn record(dir: &Path, base: &Path) -> (PathBuf, Vec<(Seq, Seq)>) {
    let work = dir.join("work.qcow2");
    let log_path = dir.join("leaf.log");
    std::fs::copy(base, &work).unwrap();
    let opts = HostFileOptions {
        mode: CacheMode::Writeback,
        engine: Engine::Threads,
        direct_fallback: true,
        ..HostFileOptions::default()
    };
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
        let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
            (name == "work").then_some(&recording as &dyn BlockDevice)
        };
        let root = block_on(graph.open("driver=qcow2,file=work", &mut resolve)).unwrap();
        let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
        let q = graph.state(root).unwrap().and_then(|s| s.qcow2()).unwrap();
        let io = graph.io();
        for (i, step) in STEPS.iter().enumerate() {
            let first = recording.seq();
            match *step {
                Step::Write { offset, len, pat } => {
                    let buf = vec![pat; len as usize];
                    block_on(backend.write(offset, &buf)).unwrap();
                    block_on(backend.flush()).unwrap();
                }
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
            spans.push((first, recording.seq()));
        }
        block_on(backend.close()).unwrap();
    }
    writer.finish().unwrap();
    (log_path, spans)
}

/// What `qemu-img check` said about a cut.
enum Verdict {
    Clean,
    Leaks,
    /// Only OFLAG_COPIED mismatches (repaired, then clean).
    CopiedWindow,
}

fn check_cut(out: &Path, lazy: bool) -> Result<Verdict, String> {
    if lazy {
        // A dirty image's refcounts may lag: QEMU repairs it when it opens it.
        let r = Command::new(qemu_img())
            .args(["check", "-q", "-r", "all", p(out)])
            .output()
            .unwrap();
        if !r.status.success() {
            return Err(format!(
                "qemu-img check -r all: {}",
                String::from_utf8_lossy(&r.stderr)
            ));
        }
    }
    let c = Command::new(qemu_img())
        .args(["check", p(out)])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );
    match c.status.code() {
        Some(0) => Ok(Verdict::Clean),
        Some(3) => Ok(Verdict::Leaks),
        Some(2) => {
            let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("ERROR")).collect();
            if errors.is_empty() || errors.iter().any(|l| !l.contains("OFLAG_COPIED")) {
                return Err(format!("qemu-img check: {text}"));
            }
            let r = Command::new(qemu_img())
                .args(["check", "-r", "all", p(out)])
                .output()
                .unwrap();
            let again = Command::new(qemu_img())
                .args(["check", p(out)])
                .output()
                .unwrap();
            if !r.status.success() || again.status.code() != Some(0) {
                return Err(format!(
                    "not clean after check -r all: {}",
                    String::from_utf8_lossy(&again.stdout)
                ));
            }
            Ok(Verdict::CopiedWindow)
        }
        code => Err(format!("qemu-img check exit {code:?}: {text}")),
    }
}

/// The states a cut at `at` may show: before or after the step it falls in; after the last
/// step that ended before it.
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

fn crash_snapshots(name: &str, opts: &str) {
    let (dir, base) = start(name, opts);
    let states = oracle(&dir, &base);
    let (log, spans) = record(&dir, &base);
    // The finished image is the oracle's last state.
    assert_eq!(
        state(&dir.join("work.qcow2")),
        states.last().cloned(),
        "final state"
    );
    let records: Vec<Record> = read_log(&log).unwrap();
    let mut cuts = plan(&records, cuts_wanted(), seed());
    // And every prefix cut: the log is short (a few hundred records).
    let last = records.iter().map(Record::seq).max().unwrap_or(0);
    cuts.extend((0..=last + 1).map(|at| Cut { at, drop: None }));
    let (mut clean, mut leaky, mut window, mut failures) = (0, 0, 0, Vec::new());
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
        if !(lo..=hi).any(|k| got.as_ref() == Some(&states[k])) {
            failures.push(format!(
                "{cut:?}: state is neither after step {lo} nor {hi}: {got:?}"
            ));
            continue;
        }
        match verdict {
            Verdict::Clean => clean += 1,
            Verdict::Leaks => leaky += 1,
            Verdict::CopiedWindow => window += 1,
        }
        let _ = std::fs::remove_file(&out);
    }
    eprintln!(
        "crash snapshots {name}: {} records, {} cuts: {clean} clean, {leaky} with leaks, {window} in the OFLAG_COPIED window, {} failed",
        records.len(),
        cuts.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cuts failed:\n{}",
        failures.len(),
        cuts.len(),
        failures.join("\n")
    );
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

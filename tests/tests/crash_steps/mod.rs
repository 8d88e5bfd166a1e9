//! Scaffolding shared by the crash tests of whole operations (`crash_shrink.rs`,
//! `crash_snapshot.rs`, `crash_amend.rs`): a sequence of steps run through Strata on a copy of a starting image
//! with the image file's leaf wrapped in a [`Recording`] (each step's span of the log kept),
//! then every prefix cut of the log plus planned ones (random subsets of the unflushed writes)
//! replayed onto copies of the start, each judged by `qemu-img check` (leaks allowed) and a
//! caller's test of the state the cut shows (`crash_snapshot.rs` also takes cuts in the
//! OFLAG_COPIED window, [`check_cut_copied`]). [`chain`] does the same for a whole `img`
//! command over the files of a backing chain (`crash_commit.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // reason: test helpers

use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::dev::file::{CacheMode, Engine, HostFile, HostFileOptions};
use qemu_runner::img::block::dev::record::{Recording, Seq};
use qemu_runner::img::block::dev::BlockDevice;
use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
use qemu_runner::img::block::{Backend, BackendOptions, Graph, NodeId};
use qemu_runner::img::crashlog::{read_log, LogWriter, Record};
use qemu_runner::img::replay::{plan, replay, Cut};
use strata_tests::*;

pub mod chain;

/// The graph a recorded run opens its image in.
pub type StepGraph<'d> = Graph<'d, 64, 512>;

/// Cuts planned besides the prefix cuts: `STRATA_CRASH_CUTS`, default 50.
pub fn cuts_wanted() -> usize {
    std::env::var("STRATA_CRASH_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

/// `STRATA_CRASH_SEED`, default fixed.
pub fn seed() -> u64 {
    std::env::var("STRATA_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_c0de)
}

pub fn p(f: &Path) -> &str {
    f.to_str().unwrap()
}

/// Runs a future to completion on this thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    qemu_runner::img::image::block_on(f)
}

/// `qemu-io -f qcow2 -c CMD IMAGE`, which must succeed.
pub fn qemu_io(image: &Path, cmd: &str) {
    let out = Command::new(std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into())).args(["-f", "qcow2", "-c", cmd, p(image)]).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Copies `base` to `work.qcow2` beside it, opens `spec` (whose leaf is named `work`) over
/// the copy with its leaf recorded, and runs `steps` with the graph, the root and a reader of
/// the log's next seq; `steps` returns each step's (first, end) seq. Returns the log's path,
/// the spans and the work copy.
pub fn record<F>(dir: &Path, base: &Path, spec: &str, steps: F) -> (PathBuf, Vec<(Seq, Seq)>, PathBuf)
where
    F: FnOnce(&StepGraph<'_>, NodeId, &dyn Fn() -> Seq) -> Vec<(Seq, Seq)>,
{
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
    let spans;
    {
        let mut graph: StepGraph<'_> = Graph::new(&mut bounce, 64 * 1024);
        graph.set_metadata_cache(&slots);
        graph.set_decompressors(&inflaters);
        let mut resolve = |name: &str| -> Option<&dyn BlockDevice> { (name == "work").then_some(&recording as &dyn BlockDevice) };
        let root = block_on(graph.open(spec, &mut resolve)).unwrap();
        spans = steps(&graph, root, &|| recording.seq());
    }
    writer.finish().unwrap();
    (log_path, spans, work)
}

/// [`record`] of `steps` on a qcow2 image through a backend (closed cleanly at the end), each
/// done by `run(backend, graph, root, index, step)`. Returns the log's path, each step's span
/// and the work copy.
pub fn record_backend_steps<S>(dir: &Path, base: &Path, steps: &[S], run: impl Fn(&Backend<'_, '_>, &StepGraph<'_>, NodeId, usize, &S)) -> (PathBuf, Vec<(Seq, Seq)>, PathBuf) {
    record(dir, base, "driver=qcow2,file=work", |graph, root, seq| {
        let backend = Backend::new(graph, root, BackendOptions::default()).unwrap();
        let mut spans = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let first = seq();
            run(&backend, graph, root, i, step);
            spans.push((first, seq()));
        }
        block_on(backend.close()).unwrap();
        spans
    })
}

/// A guest write of `len` bytes of `pat` at `offset` through `backend`, then a flush.
pub fn write_flushed(backend: &Backend<'_, '_>, offset: u64, len: u64, pat: u8) {
    block_on(backend.write(offset, &vec![pat; len as usize])).unwrap();
    block_on(backend.flush()).unwrap();
}

/// `qemu-img check` of a cut: `Ok(true)` clean, `Ok(false)` leaks only. With `lazy`, repaired
/// first (`check -r all`, what QEMU does when it opens a dirty image).
pub fn check_cut(out: &Path, lazy: bool) -> Result<bool, String> {
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

/// What `qemu-img check` said about a cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Leaks,
    /// Only OFLAG_COPIED mismatches, and clean after `qemu-img check -r all`.
    CopiedWindow,
}

/// [`check_cut`] that also takes a cut in the OFLAG_COPIED window: turning a cluster from
/// owned (refcount 1, OFLAG_COPIED set) to shared or back changes its refcount block and its
/// L2 entry, two writes that cannot land together, and QEMU's order (refcounts before tables)
/// leaves a cut between them too. Such a cut must hold nothing but OFLAG_COPIED errors and be
/// clean after `qemu-img check -r all`, which repairs them without touching data.
pub fn check_cut_copied(out: &Path, lazy: bool) -> Result<Verdict, String> {
    if lazy {
        let r = Command::new(qemu_img()).args(["check", "-q", "-r", "all", p(out)]).output().unwrap();
        if !r.status.success() {
            return Err(format!("qemu-img check -r all: {}", String::from_utf8_lossy(&r.stderr)));
        }
    }
    let c = Command::new(qemu_img()).args(["check", p(out)]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&c.stdout), String::from_utf8_lossy(&c.stderr));
    match c.status.code() {
        Some(0) => Ok(Verdict::Clean),
        Some(3) => Ok(Verdict::Leaks),
        Some(2) => {
            let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("ERROR")).collect();
            if errors.is_empty() || errors.iter().any(|l| !l.contains("OFLAG_COPIED")) {
                return Err(format!("qemu-img check: {text}"));
            }
            let r = Command::new(qemu_img()).args(["check", "-r", "all", p(out)]).output().unwrap();
            let again = Command::new(qemu_img()).args(["check", p(out)]).output().unwrap();
            if !r.status.success() || again.status.code() != Some(0) {
                return Err(format!("not clean after check -r all: {}", String::from_utf8_lossy(&again.stdout)));
            }
            Ok(Verdict::CopiedWindow)
        }
        code => Err(format!("qemu-img check exit {code:?}: {text}")),
    }
}

/// The steps a cut at `at` may show the state after: `(i, i)` between steps (after step
/// `i - 1`), `(i, i + 1)` inside step `i`.
pub fn allowed(spans: &[(Seq, Seq)], at: Seq) -> (usize, usize) {
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

/// What the cuts showed.
#[derive(Debug, Default)]
pub struct Cuts {
    pub records: usize,
    pub cuts: usize,
    pub clean: usize,
    pub leaky: usize,
    /// Cuts in the OFLAG_COPIED window ([`check_cut_copied`]).
    pub copied_window: usize,
    /// Cuts that leaked, per file (chains only).
    pub leaks_by_file: Vec<(String, usize)>,
    pub failures: Vec<String>,
}

impl Cuts {
    /// Prints the table line for the note (`crash WHAT: records, cuts, clean, with leaks, ...`)
    /// and fails the test with every failed cut if there are any.
    pub fn assert_passed(&self, what: &str) {
        let mut line = format!("crash {what}: {} records, {} cuts: {} clean, {} with leaks", self.records, self.cuts, self.clean, self.leaky);
        if self.copied_window > 0 {
            line += &format!(", {} in the OFLAG_COPIED window", self.copied_window);
        }
        if !self.leaks_by_file.is_empty() {
            line += &format!(" (cuts leaking per file: {:?})", self.leaks_by_file);
        }
        eprintln!("{line}, {} failed", self.failures.len());
        assert!(self.failures.is_empty(), "{} of {} cuts failed:\n{}", self.failures.len(), self.cuts, self.failures.join("\n"));
    }
}

/// Replays every prefix cut of `log` (at most `prefix_limit` of them, evenly sampled, plus
/// the last; `usize::MAX` for all) and `planned` planned ones onto copies of `base` in `dir`;
/// each must pass [`check_cut`] and `judge(cut's seq, copy)`. Passing copies are removed.
pub fn run_cuts(dir: &Path, base: &Path, log: &Path, lazy: bool, prefix_limit: usize, planned: usize, judge: &dyn Fn(Seq, &Path) -> Result<(), String>) -> Cuts {
    let check = |out: &Path| check_cut(out, lazy).map(|clean| if clean { Verdict::Clean } else { Verdict::Leaks });
    run_cuts_with(dir, base, log, prefix_limit, planned, &check, judge)
}

/// [`run_cuts`] with the check of each cut's copy given.
pub fn run_cuts_with(dir: &Path, base: &Path, log: &Path, prefix_limit: usize, planned: usize, check: &dyn Fn(&Path) -> Result<Verdict, String>, judge: &dyn Fn(Seq, &Path) -> Result<(), String>) -> Cuts {
    let records: Vec<Record> = read_log(log).unwrap();
    let mut cuts = plan(&records, planned, seed());
    let last = records.iter().map(Record::seq).max().unwrap_or(0);
    let step = (last + 2).div_ceil(prefix_limit.max(1) as u64).max(1);
    cuts.extend((0..=last + 1).filter(|at| at % step == 0 || *at == last + 1).map(|at| Cut { at, drop: None }));
    let mut r = Cuts { records: records.len(), cuts: cuts.len(), ..Cuts::default() };
    for (i, cut) in cuts.iter().enumerate() {
        let out = dir.join(format!("cut{i}.qcow2"));
        replay(&records, *cut, base, &out).unwrap();
        let verdict = match check(&out).and_then(|v| judge(cut.at, &out).map(|()| v)) {
            Ok(v) => v,
            Err(e) => {
                r.failures.push(format!("{cut:?}: {e}"));
                continue;
            }
        };
        match verdict {
            Verdict::Clean => r.clean += 1,
            Verdict::Leaks => r.leaky += 1,
            Verdict::CopiedWindow => r.copied_window += 1,
        }
        let _ = std::fs::remove_file(&out);
    }
    r
}

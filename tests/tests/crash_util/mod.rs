//! The crash-consistency harness (`docs/ARCHITECTURE.md`, "Testing", crash row): run a seeded workload on an
//! image through the block layer with the image file's leaf wrapped in a
//! [`Recording`], log the leaf's write/flush stream, then replay it cut at many points onto
//! copies of the starting image and check each copy: `qemu-img check` reports no corruption
//! (leaks are counted, not failed) and every byte flushed before the cut is there.
//!
//! `STRATA_CRASH_CUTS` sets the cuts per image (default 50), `STRATA_CRASH_SEED` the workload
//! and cut seed. A failing cut leaves its files under `target/strata/tests/crash-*` and prints
//! the `qemu-runner img replay` command that rebuilds it.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // reason: test helpers

pub mod model;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::dev::file::{CacheMode, Engine, HostFile, HostFileOptions};
use qemu_runner::img::block::dev::record::Recording;
use qemu_runner::img::block::dev::BlockDevice;
use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
use qemu_runner::img::block::{Backend, BackendOptions, Graph};
use qemu_runner::img::crashlog::{read_log, LogWriter};
use qemu_runner::img::replay::{plan, replay, Cut};
pub use strata_tests::*;

pub const MIB: u64 = 1024 * 1024;

/// The virtual disk size of every crash image.
pub const SIZE: u64 = 8 * MIB;

/// Cuts per image: `STRATA_CRASH_CUTS`, default 50.
pub fn cuts_wanted() -> usize {
    std::env::var("STRATA_CRASH_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

/// `STRATA_CRASH_SEED`, default fixed.
pub fn seed() -> u64 {
    std::env::var("STRATA_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_c0de)
}

/// A starting image: `base` in `dir` (with its backing file, if any, beside it), its format,
/// and the virtual disk's contents.
pub struct Start {
    pub dir: PathBuf,
    pub base: PathBuf,
    pub format: &'static str,
    pub contents: Vec<u8>,
    /// Backing file name as the image records it, if any.
    pub backing: Option<String>,
    /// The image uses lazy refcounts: a cut copy is dirty and its refcounts may lag, so it is
    /// repaired (`qemu-img check -r all`, what QEMU does when it opens it) before it is checked.
    pub lazy: bool,
}

/// Runs `qemu-img ARGS`; panics with its output on failure.
pub fn qimg(args: &[&str]) {
    run_qemu_img(args);
}

/// The virtual contents of `image` through `qemu-img convert -O raw`.
pub fn contents(image: &Path, format: &str, raw: &Path) -> Vec<u8> {
    if format == "raw" {
        return std::fs::read(image).unwrap();
    }
    run_qemu_img(&["convert", "-f", format, "-O", "raw", image.to_str().unwrap(), raw.to_str().unwrap()]);
    let bytes = std::fs::read(raw).unwrap();
    let _ = std::fs::remove_file(raw);
    bytes
}

/// What `qemu-img check` said.
#[derive(Debug)]
pub enum Check {
    Clean,
    Leaks(u64),
    /// Not supported by the format (raw).
    Unsupported,
    Failed(String),
}

/// `qemu-img check --output=json`: exit 0 clean, 3 leaks only, 2 corruption, 1 not checked.
pub fn check(image: &Path, format: &str) -> Check {
    let out = Command::new(qemu_img()).args(["check", "--output=json", "-f", format, image.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    match out.status.code() {
        Some(0) => Check::Clean,
        Some(3) => Check::Leaks(json["leaks"].as_u64().unwrap_or(0)),
        _ if stderr.contains("does not support checks") => Check::Unsupported,
        code => Check::Failed(format!("exit {code:?}: {stdout}{stderr}")),
    }
}

/// The workload's leaf log, its guest operations and the final image.
pub struct Run {
    pub log: PathBuf,
    pub ops: Vec<workload::Op>,
    pub records: u64,
}

/// Copies the start to `work`, opens it read-write with its leaf recorded into `log`, and runs
/// the workload. The leaf runs requests on a thread pool, so they complete out of order; `direct`
/// opens it with O_DIRECT, otherwise through the page cache.
pub fn record(start: &Start, params: workload::Params, direct: bool) -> Run {
    let work = start.dir.join(format!("work.{}", start.format));
    let log_path = start.dir.join("leaf.log");
    std::fs::copy(&start.base, &work).unwrap();
    let opts = HostFileOptions {
        mode: if direct { CacheMode::None } else { CacheMode::Writeback },
        engine: Engine::Threads,
        direct_fallback: true,
        ..HostFileOptions::default()
    };
    // Everything that holds the image open lives in this scope: its locks go with it.
    let (ops, records) = {
        let file = HostFile::open(&work, &opts).unwrap();
        let backing = start
            .backing
            .as_ref()
            .map(|name| HostFile::open(&start.dir.join(name), &HostFileOptions { read_only: true, ..HostFileOptions::default() }).unwrap());
        let writer = LogWriter::create(&log_path).unwrap();
        let recording: Recording<'_> = Recording::new(&file, &writer);
        let slots: Vec<CacheSlot> = (0..256).map(|_| CacheSlot::new()).collect();
        let inflaters = [Inflater::new()];
        let mut bounce = vec![0u8; 32 * 64 * 1024 + 4096];
        let ops = {
            let mut graph: Graph<'_, 64, 512> = Graph::new(&mut bounce, 64 * 1024);
            graph.set_metadata_cache(&slots);
            graph.set_decompressors(&inflaters);
            let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
                if name == "work" {
                    Some(&recording)
                } else if Some(name) == start.backing.as_deref() {
                    backing.as_ref().map(|b| b as &dyn BlockDevice)
                } else {
                    None
                }
            };
            let text = format!("driver={},file=work", start.format);
            let root = block_on(graph.open(&text, &mut resolve)).unwrap();
            let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
            let seq = || recording.seq();
            workload::run(&backend, &seq, params).unwrap()
        };
        writer.finish().unwrap();
        (ops, writer.records())
    };
    let run = Run { log: log_path, ops, records };
    // The finished image must hold everything (a check of the workload and the model).
    let exp = model::expected(&start.contents, &run.ops, u64::MAX);
    let got = contents(&work, start.format, &start.dir.join("work.flat"));
    if let Some(diff) = model::compare(&exp, &got) {
        panic!("the image after the workload differs from the model: {diff}");
    }
    run
}

/// Runs a future on this thread (devices are polled; a no-op waker does).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    qemu_runner::img::image::block_on(f)
}

/// Totals over the cuts of one image.
#[derive(Debug, Default)]
pub struct Report {
    pub cuts: usize,
    pub clean: usize,
    pub leaky: usize,
    pub leaked_clusters: u64,
    pub failures: Vec<String>,
}

/// Replays `cuts_wanted()` cuts of `run` onto copies of `start` and checks each.
pub fn check_cuts(start: &Start, run: &Run) -> Report {
    let records = read_log(&run.log).unwrap();
    let cuts = plan(&records, cuts_wanted(), seed());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let results: Vec<(Cut, Result<Check, String>)> = std::thread::scope(|s| {
        let chunks: Vec<Vec<(usize, Cut)>> = (0..threads).map(|t| cuts.iter().copied().enumerate().skip(t).step_by(threads).collect()).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let records = &records;
                s.spawn(move || chunk.into_iter().map(|(i, cut)| (cut, one_cut(start, run, records, i, cut))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut report = Report { cuts: results.len(), ..Report::default() };
    for (cut, result) in results {
        match result {
            Ok(Check::Leaks(n)) => {
                report.leaky += 1;
                report.leaked_clusters += n;
            }
            Ok(_) => report.clean += 1,
            Err(e) => report.failures.push(format!(
                "{cut}: {e}\n  rebuild: cargo run -p qemu-runner -- img replay {} {} OUT {cut}",
                run.log.display(),
                start.base.display()
            )),
        }
    }
    report
}

fn one_cut(start: &Start, run: &Run, records: &[qemu_runner::img::crashlog::Record], i: usize, cut: Cut) -> Result<Check, String> {
    let out = start.dir.join(format!("cut{i}.{}", start.format));
    let raw = start.dir.join(format!("cut{i}.flat"));
    replay(records, cut, &start.base, &out)?;
    if start.lazy {
        let out_s = out.to_str().unwrap();
        let repaired = Command::new(qemu_img()).args(["check", "-q", "-r", "all", "-f", start.format, out_s]).output().unwrap();
        if !repaired.status.success() {
            return Err(format!("qemu-img check -r all {}: {}", out.display(), String::from_utf8_lossy(&repaired.stderr)));
        }
    }
    let checked = check(&out, start.format);
    if let Check::Failed(text) = &checked {
        return Err(format!("qemu-img check {}: {text}", out.display()));
    }
    let exp = model::expected(&start.contents, &run.ops, cut.at);
    let got = contents(&out, start.format, &raw);
    if let Some(diff) = model::compare(&exp, &got) {
        return Err(format!("{} ({} covered ops): {diff}", out.display(), exp.covered));
    }
    let _ = std::fs::remove_file(&out);
    Ok(checked)
}

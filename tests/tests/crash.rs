//! Crash consistency (`docs/ARCHITECTURE.md`, "Testing"): a seeded workload's leaf write/flush stream is
//! recorded and replayed cut after every flush and inside flush epochs (unflushed writes dropped
//! or reordered) onto copies of the starting image; every copy must pass `qemu-img check`
//! (leaks allowed and counted) and hold every byte flushed before the cut.
//!
//! `STRATA_CRASH_CUTS=N` runs N cuts per image instead of 50; `STRATA_CRASH_SEED=S` changes the
//! workload and the cuts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_util/mod.rs"]
mod util;

use util::workload::Params;
use util::*;

fn params(ops: usize) -> Params {
    Params { seed: seed(), ops, workers: 8, flush_percent: 5, size: SIZE }
}

/// A raw or qcow2 start in a fresh directory; `backing` gives qcow2 a raw backing file of
/// pseudo-random bytes.
fn start(name: &str, format: &'static str, create_opts: &[&str], backing: bool) -> Start {
    ensure_qemu();
    let dir = scratch(&format!("crash-{name}"));
    let base = dir.join(format!("base.{format}"));
    let mut contents = vec![0u8; SIZE as usize];
    let mut args = vec!["create", "-q", "-f", format];
    args.extend_from_slice(create_opts);
    let backing_name = backing.then(|| "backing.raw".to_string());
    if let Some(b) = &backing_name {
        random_raw_disk(&dir.join(b), SIZE, seed());
        contents = std::fs::read(dir.join(b)).unwrap();
        args.extend_from_slice(&["-b", b, "-F", "raw"]);
    }
    let base_s = base.to_str().unwrap().to_string();
    let size = SIZE.to_string();
    args.push(&base_s);
    args.push(&size);
    qimg(&args);
    let lazy = create_opts.iter().any(|o| o.contains("lazy_refcounts=on"));
    Start { dir, base, format, contents, backing: backing_name, lazy }
}

fn crash_test(start: &Start, direct: bool) {
    let t = std::time::Instant::now();
    let run = record(start, params(600), direct);
    let flushes = run.ops.iter().filter(|o| o.kind == util::workload::Kind::Flush).count();
    eprintln!("recorded in {:.1}s", t.elapsed().as_secs_f64());
    let report = check_cuts(start, &run);
    eprintln!(
        "crash {}: {} guest ops ({flushes} flushes), {} leaf records; {} cuts: {} clean, {} with leaks ({} leaked clusters), {} failed; {:.1}s",
        start.base.display(),
        run.ops.len(),
        run.records,
        report.cuts,
        report.clean,
        report.leaky,
        report.leaked_clusters,
        report.failures.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(report.cuts >= cuts_wanted().min(1), "no cuts ran");
    assert!(report.failures.is_empty(), "{} of {} cuts failed:\n{}", report.failures.len(), report.cuts, report.failures.join("\n"));
    let _ = std::fs::remove_dir_all(&start.dir);
}

#[test]
fn raw_control_queued() {
    crash_test(&start("raw-q", "raw", &[], false), true);
}

#[test]
fn raw_control_writeback() {
    crash_test(&start("raw-wb", "raw", &[], false), false);
}

#[test]
fn qcow2_preallocated_metadata() {
    crash_test(&start("q-prealloc", "qcow2", &["-o", "preallocation=metadata"], false), true);
}

// The allocating cases open the leaf through the page cache: a fresh qcow2 file is not a whole
// number of 4 KiB blocks (196616 bytes), and an O_DIRECT leaf rounds its capacity down, which
// the qcow2 open refuses ("L1 table reaches past the end of the file"). The replay does not
// depend on the leaf's cache mode. Requests still run on the thread pool and complete out of
// order (until the pool engine applied to page-cache files too, they ran inside submit, which
// hid a write-back that wrote a table changed during its own flush).

#[test]
fn qcow2_allocating() {
    crash_test(&start("q-alloc", "qcow2", &[], false), false);
}

#[test]
fn qcow2_allocating_over_backing() {
    crash_test(&start("q-backing", "qcow2", &[], true), false);
}

#[test]
fn qcow2_small_clusters() {
    crash_test(&start("q-small", "qcow2", &["-o", "cluster_size=4096"], false), false);
}

/// Lazy refcounts relax the refcount order, not the data order: an L2 entry still reaches the
/// disk only after the data (and copy-on-write) it points at is stable.
#[test]
fn qcow2_lazy_refcounts_over_backing() {
    crash_test(&start("q-lazy", "qcow2", &["-o", "lazy_refcounts=on,cluster_size=4096"], true), false);
}

/// The oracle is not vacuous: dropping a write that a completed flush covered is caught.
#[test]
fn harness_catches_a_lost_flushed_write() {
    use qemu_runner::img::crashlog::{read_log, Change, Record};
    use qemu_runner::img::replay::{replay, select, Cut};
    let start = start("selftest", "raw", &[], false);
    let run = record(&start, params(200), true);
    let records = read_log(&run.log).unwrap();
    let last_flush = records.iter().filter_map(|r| if let Record::Flushed { seq, ok: true, .. } = r { Some(*seq) } else { None }).max().unwrap();
    let cut = Cut { at: last_flush + 1, drop: None };
    let exp = util::model::expected(&start.contents, &run.ops, cut.at);
    let out = start.dir.join("sabotaged.raw");
    replay(&records, cut, &start.base, &out).unwrap();
    assert_eq!(util::model::compare(&exp, &std::fs::read(&out).unwrap()), None, "the honest replay must pass");
    let (ops, applied) = select(&records, cut);
    let victims: Vec<Record> = ops[..applied.guaranteed]
        .iter()
        .filter(|r| matches!(r, Record::Mutation { change: Change::Data(_), .. }))
        .rev()
        .take(8)
        .map(|r| (*r).clone())
        .collect();
    let caught = victims.iter().any(|victim| {
        let without: Vec<Record> = records.iter().filter(|r| *r != victim).cloned().collect();
        replay(&without, cut, &start.base, &out).unwrap();
        util::model::compare(&exp, &std::fs::read(&out).unwrap()).is_some()
    });
    assert!(caught, "dropping any of the last {} flushed writes went unnoticed", victims.len());
    let _ = std::fs::remove_dir_all(&start.dir);
}

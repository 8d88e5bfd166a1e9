//! Crash consistency under the real guest (`docs/ARCHITECTURE.md`, "Testing", crash row): the kernel's
//! `stress` runs on an image behind QEMU's `blklogwrites` (`--drive ...,log=`); the log is cut
//! after flushes and inside flush epochs (unflushed writes dropped, reordered and torn) onto
//! copies of the starting image, and every copy must pass `qemu-img check` (leaks allowed and
//! counted) and hold every write a completed stress flush covered.
//!
//! `STRATA_GUEST_CRASH_CUTS=N` runs N cuts per image (default: a CI-short count);
//! `STRATA_GUEST_CRASH_SEED=S` changes the workload and the cuts. `scripts/guest-crash.sh` runs
//! thousands over several seeds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_util/mod.rs"]
mod util;

#[path = "guest_crash_util/mod.rs"]
mod guest;

use strata_tests::*;

/// The virtual disk size of every image.
const SIZE: u64 = 8 << 20;

/// A fresh `format` image in a new directory, logged through a guest `stress` of `ops` ops.
fn start(name: &str, format: &'static str, create_opts: &[&str], ops: u32) -> guest::Run {
    ensure_qemu();
    let dir = scratch(&format!("guest-crash-{name}"));
    let base = dir.join(format!("base.{format}"));
    let mut args = vec!["create", "-q", "-f", format];
    args.extend_from_slice(create_opts);
    let (base_s, size) = (base.to_str().unwrap().to_string(), SIZE.to_string());
    args.extend_from_slice(&[&base_s, &size]);
    run_qemu_img(&args);
    guest::record(&dir, &base, format, guest::seed(), ops, 8)
}

fn crash_test(name: &str, format: &'static str, create_opts: &[&str], ops: u32, default_cuts: usize) {
    let t = std::time::Instant::now();
    let run = start(name, format, create_opts, ops);
    let booted = t.elapsed().as_secs_f64();
    let flushes = run.log.entries.iter().filter(|e| e.is_flush()).count();
    let (report, sectors) = guest::check_cuts(&run, guest::cuts_wanted(default_cuts));
    eprintln!(
        "guest crash {name}: seed {} {ops} ops ({} stress flushes), {} log entries ({flushes} flushes); {} cuts: {} clean, {} with leaks ({} leaked clusters), {} failed; {sectors} flushed sectors checked; boot {booted:.1}s, total {:.1}s",
        run.cfg.seed,
        run.markers.len(),
        run.log.entries.len(),
        report.cuts,
        report.clean,
        report.leaky,
        report.leaked_clusters,
        report.failures.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(report.cuts > 0, "no cuts ran");
    assert!(report.failures.is_empty(), "{} of {} cuts failed:\n{}", report.failures.len(), report.cuts, report.failures.join("\n"));
    let _ = std::fs::remove_dir_all(&run.dir);
}

// Three images, 300 cuts each by default (about 10 s each on two cores under TCG).

#[test]
fn raw_control() {
    crash_test("raw", "raw", &[], 1500, 300);
}

#[test]
fn qcow2_allocating() {
    crash_test("q-alloc", "qcow2", &[], 1500, 300);
}

#[test]
fn qcow2_small_clusters() {
    crash_test("q-small", "qcow2", &["-o", "cluster_size=4096"], 1500, 300);
}

/// The oracle is not vacuous: at the last flush boundary, dropping one of the stable writes
/// of covered ops is caught.
#[test]
fn harness_catches_a_lost_flushed_write() {
    use qemu_runner::img::logcut::Cut;
    use qemu_runner::img::logwrites::Log;
    let run = start("selftest", "raw", &[], 400);
    let covered = guest::covered_by_cut(&run);
    let last_flush = run.log.entries.iter().rposition(|e| e.is_flush()).unwrap();
    let cut = Cut { at: last_flush + 1, drop: None };
    assert!(covered[cut.at] > 0, "the last flush covers some ops");
    guest::one_cut_of(&run, &run.log, 0, cut, covered[cut.at]).unwrap();
    // The last stable writes of covered ops (one of them may have been overwritten since).
    let ops = guest::ops_in_entries(&run);
    let victims: Vec<usize> = (0..last_flush).rev().filter(|&i| ops[i].is_some_and(|op| op < covered[cut.at])).take(8).collect();
    assert!(!victims.is_empty());
    let caught = victims.iter().any(|&v| {
        let entries = run.log.entries.iter().enumerate().filter(|(i, _)| *i != v).map(|(_, e)| e.clone()).collect();
        let doctored = Log { bytes: run.log.bytes.clone(), sector_size: run.log.sector_size, super_entries: 0, entries };
        guest::one_cut_of(&run, &doctored, 1, Cut { at: cut.at - 1, drop: None }, covered[cut.at]).is_err()
    });
    assert!(caught, "dropping any of the last {} flushed writes went unnoticed", victims.len());
    let _ = std::fs::remove_dir_all(&run.dir);
}

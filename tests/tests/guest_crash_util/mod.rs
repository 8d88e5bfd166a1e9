//! The guest crash harness: boot the kernel's `stress` on an image with QEMU's `blklogwrites`
//! under the drive (`--drive ...,log=`), then rebuild crash states from the log
//! (`qemu_runner::img::logcut`) on copies of the starting image and check each: `qemu-img
//! check` reports no corruption (leaks are counted, not failed) and the disk passes the stress
//! model's crash check (`qemu_runner::img::stress_check`) for the ops a completed flush covered.
//!
//! # Which ops a cut covers
//!
//! The guest prints `flush K covers ops 0..N` when stress flush K completes, but the log does not
//! say which of its FLUSH entries that was (a guest flush may be several device flushes, or none
//! when nothing was written since the last). The log's data does: every sector a stress write
//! puts on the disk starts with `data_word(seed, op, offset)`, in a qcow2 image too (clusters
//! hold guest data as is), so a logged sector names its op. If op `W`'s data is in the log
//! before the cut, every stress flush with `N < W` completed before op `W` was issued (the
//! engine issues nothing while a flush runs), so that flush's device flushes, and the writes of
//! ops `0..N` before them, are in the log before `W`'s write: stable at the cut. The cut is
//! checked with the largest such `N` (a lower bound of what the guest had flushed; data copied
//! by qcow2 names an older op, which only lowers it).

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // reason: test helpers

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qemu_runner::drives::Format;
use qemu_runner::img::block::cmd::stress::{data_word, op_at, Config, Mix, OpKind};
use qemu_runner::img::logcut::{plan, replay, Cut};
use qemu_runner::img::logwrites::{self, Log};
use qemu_runner::img::stress_check;

use super::util::{check, contents, Check, Report};
use strata_tests::*;

/// Cuts per image: `STRATA_GUEST_CRASH_CUTS`, default `default`.
pub fn cuts_wanted(default: usize) -> usize {
    std::env::var("STRATA_GUEST_CRASH_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `STRATA_GUEST_CRASH_SEED`, default fixed: the stress seed and the cut seed.
pub fn seed() -> u64 {
    std::env::var("STRATA_GUEST_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x6c_6f67)
}

/// A logged guest run: the starting image, the log, the stress configuration and its flush
/// markers (`ops` of each, in order).
pub struct Run {
    pub dir: PathBuf,
    pub base: PathBuf,
    pub format: &'static str,
    pub log: Log,
    pub cfg: Config,
    pub markers: Vec<u32>,
}

/// Boots `stress` on a copy of `base` with a write log; checks the final image against all ops.
pub fn record(dir: &Path, base: &Path, format: &'static str, seed: u64, ops: u32, qd: u32) -> Run {
    let work = dir.join(format!("work.{format}"));
    std::fs::copy(base, &work).unwrap();
    let log_path = dir.join("writes.log");
    let named = if format == "raw" { Format::Raw } else { Format::Qcow2 };
    let drive = Drive { log: Some(log_path.clone()), format: Some(named), ..drive(&work, "top", false) };
    let r = boot(Machine::Microvm, vec![drive], &format!("stress top --seed {seed} --ops {ops} --qd {qd} --max-len 64k"));
    assert_eq!(r.exit_code, 0, "stress failed: {}\n{}", r.summary(), r.console);
    let markers: Vec<u32> = records(&r, "stress_flush").iter().map(|m| m["ops"].as_u64().unwrap() as u32).collect();
    let size = std::fs::metadata(base).map(|_| virtual_size(base, format)).unwrap();
    let cfg = Config { seed, ops, qd, max_len: 64 << 10, block: 4096, start: 0, len: size / 4096 * 4096, mix: Mix::default() };
    let log = logwrites::read(&log_path).unwrap();
    let last = contents(&work, format, &dir.join("work.flat"));
    stress_check::check(&cfg, ops, &last, 512).unwrap_or_else(|e| panic!("the image after the run fails the model: {e}"));
    Run { dir: dir.to_path_buf(), base: base.to_path_buf(), format, log, cfg, markers }
}

/// `qemu-img info`'s virtual size.
pub fn virtual_size(image: &Path, format: &str) -> u64 {
    let out = std::process::Command::new(qemu_img()).args(["info", "--output=json", "-f", format, image.to_str().unwrap()]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["virtual-size"].as_u64().unwrap()
}

/// For every log entry, the highest stress op whose data it carries.
pub fn ops_in_entries(run: &Run) -> Vec<Option<u32>> {
    let mut first_words: HashMap<u64, u32> = HashMap::new();
    for i in 0..run.cfg.ops {
        let op = op_at(&run.cfg, i);
        if op.kind == OpKind::Write {
            for at in (op.offset..op.end()).step_by(512) {
                first_words.insert(data_word(run.cfg.seed, i, at), i);
            }
        }
    }
    run.log
        .entries
        .iter()
        .map(|e| {
            let data = run.log.data(e);
            data.chunks(512).filter_map(|s| first_words.get(&u64::from_le_bytes(s[..8].try_into().unwrap())).copied()).max()
        })
        .collect()
}

/// Ops covered at each cut point `at` (index = `at`): the largest marker below the highest op
/// seen in entries `0..at` (see the module docs).
pub fn covered_by_cut(run: &Run) -> Vec<u32> {
    let per_entry = ops_in_entries(run);
    let mut out = vec![0];
    let mut highest: Option<u32> = None;
    for op in per_entry {
        highest = highest.max(op);
        let covered = highest.map_or(0, |w| run.markers.iter().copied().filter(|&n| n < w).max().unwrap_or(0));
        out.push(covered);
    }
    out
}

/// One cut's `qemu-img check` verdict and the sectors the model checked, or why it failed.
pub type CutResult = Result<(Check, u64), String>;

/// Replays `cuts` cuts of `run` and checks each; also returns the sectors the model checked.
pub fn check_cuts(run: &Run, cuts: usize) -> (Report, u64) {
    let plan = plan(&run.log, cuts, seed());
    let covered = covered_by_cut(run);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let results: Vec<(Cut, CutResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (plan, covered) = (&plan, &covered);
                s.spawn(move || plan.iter().enumerate().skip(t).step_by(threads).map(|(i, &cut)| (cut, one_cut(run, i, cut, covered[cut.at]))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut report = Report { cuts: results.len(), ..Report::default() };
    let mut sectors = 0;
    for (cut, result) in results {
        sectors += result.as_ref().map_or(0, |r| r.1);
        match result {
            Ok((Check::Leaks(n), _)) => {
                report.leaky += 1;
                report.leaked_clusters += n;
            }
            Ok(_) => report.clean += 1,
            Err(e) => report.failures.push(format!("seed {} {cut} (ops 0..{} covered): {e}", run.cfg.seed, covered[cut.at])),
        }
    }
    (report, sectors)
}

/// Replays `cut` of `run` (with `log`, which may be a doctored copy of `run.log`) and checks
/// it with `covered` ops stable; returns `qemu-img check`'s verdict and the sectors checked.
pub fn one_cut_of(run: &Run, log: &Log, i: usize, cut: Cut, covered: u32) -> CutResult {
    let out = run.dir.join(format!("cut{i}.{}", run.format));
    replay(log, cut, &run.base, &out)?;
    let checked = check(&out, run.format);
    if let Check::Failed(text) = &checked {
        return Err(format!("qemu-img check {}: {text}", out.display()));
    }
    let disk = contents(&out, run.format, &run.dir.join(format!("cut{i}.flat")));
    let done = stress_check::check(&run.cfg, covered, &disk, 512).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    Ok((checked, done.sectors))
}

fn one_cut(run: &Run, i: usize, cut: Cut, covered: u32) -> CutResult {
    one_cut_of(run, &run.log, i, cut, covered)
}

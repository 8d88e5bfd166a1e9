//! Crash cuts of a whole `img` command over the files of a backing chain (`crash_commit.rs`):
//! the command runs in this process with every file it opens recorded (`img::leaf_logs`: one
//! log per file, one seq counter for all of them), then each cut rebuilds every file of the
//! chain at the same instant into a directory of its own (the chain's relative backing names
//! resolve there), where each qcow2 file must pass `qemu-img check` (leaks allowed, counted per
//! file) and the caller's judge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qemu_runner::img::block::dev::record::Seq;
use qemu_runner::img::crashlog::{read_log, Record};
use qemu_runner::img::leaf_logs::record_leaves;
use qemu_runner::img::replay::{plan, replay, Cut};

use super::{check_cut, seed, Cuts};

/// The chain's files in `from`, `names`, copied into `to` (created).
pub fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for n in names {
        std::fs::copy(from.join(n), to.join(n)).unwrap();
    }
}

/// Runs `qemu-runner img ARGS` in this process with the files of every image it opens
/// recorded, logs in `logs`; the command must succeed. Returns each file's name and log.
pub fn record_command(logs: &Path, args: &[String]) -> Vec<(String, PathBuf)> {
    std::fs::create_dir_all(logs).unwrap();
    let recording = record_leaves(logs);
    let status = qemu_runner::img::main(args);
    let files = recording.finish().unwrap();
    assert_eq!(status, 0, "img {args:?}");
    files
        .into_iter()
        .map(|(file, log)| {
            (
                file.file_name().unwrap().to_string_lossy().into_owned(),
                log,
            )
        })
        .collect()
}

/// Replays every prefix cut of the merged logs (at most `prefix_limit` of them, evenly
/// sampled, plus the last) and `planned` planned ones: each rebuilds the files `names` of
/// `start` (those with a log at the cut, the others as they were) into `dir/cutN/`; each file
/// of `checked` must pass [`check_cut`] and the cut `judge(cut's seq, cut directory)`. The
/// directories of passing cuts are removed.
#[allow(clippy::too_many_arguments)] // reason: test helper, one call per case
pub fn run_chain_cuts(
    dir: &Path,
    start: &Path,
    names: &[&str],
    checked: &[&str],
    logs: &[(String, PathBuf)],
    prefix_limit: usize,
    planned: usize,
    judge: &dyn Fn(Seq, &Path) -> Result<(), String>,
) -> Cuts {
    let logs: Vec<(String, Vec<Record>)> = logs
        .iter()
        .map(|(n, l)| (n.clone(), read_log(l).unwrap()))
        .collect();
    let mut merged: Vec<Record> = logs.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
    merged.sort_by_key(Record::seq);
    let mut cuts = plan(&merged, planned, seed());
    let last = merged.last().map_or(0, Record::seq);
    let step = (last + 2).div_ceil(prefix_limit.max(1) as u64).max(1);
    cuts.extend(
        (0..=last + 1)
            .filter(|at| at % step == 0 || *at == last + 1)
            .map(|at| Cut { at, drop: None }),
    );
    let mut r = Cuts {
        records: merged.len(),
        cuts: cuts.len(),
        ..Cuts::default()
    };
    let mut leaks: BTreeMap<String, usize> = BTreeMap::new();
    for (i, cut) in cuts.iter().enumerate() {
        let out = dir.join(format!("cut{i}"));
        std::fs::create_dir_all(&out).unwrap();
        for n in names {
            match logs.iter().find(|(l, _)| l == n) {
                Some((_, records)) => {
                    replay(records, *cut, &start.join(n), &out.join(n)).unwrap();
                }
                None => {
                    std::fs::copy(start.join(n), out.join(n)).unwrap();
                }
            }
        }
        let mut leaky = Vec::new();
        let mut failed = None;
        for n in checked {
            match check_cut(&out.join(n), false) {
                Ok(true) => {}
                Ok(false) => leaky.push(*n),
                Err(e) => {
                    failed = Some(format!("{n}: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = failed.or_else(|| judge(cut.at, &out).err()) {
            r.failures.push(format!("{cut:?} ({}): {e}", out.display()));
            continue;
        }
        if leaky.is_empty() {
            r.clean += 1;
        } else {
            r.leaky += 1;
        }
        for n in leaky {
            *leaks.entry(n.to_string()).or_default() += 1;
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    r.leaks_by_file = leaks.into_iter().collect();
    r
}

//! Crash consistency of `img commit` (issue 16): the command runs in this process on a copy of a
//! chain made by qemu-img and qemu-io (data, partial clusters, zero clusters, discards in every
//! layer above the base) with every file it opens recorded (`crash_steps::chain`, one seq
//! counter over all of them). Every cut, replayed onto copies of the whole chain at one instant,
//! must
//! - pass `qemu-img check` on every qcow2 file, with at most leaks (counted per file);
//! - read through the top exactly what the top read before the commit (`qemu-img compare`
//!   against a raw copy made first): a commit never changes what the top reads, whether the
//!   cut falls in the copy into the base, between it and the emptying, or in the emptying;
//! - read through the layer committed into, byte by byte, what it read before or what it
//!   reads after the commit: nothing else ever lands there.
//!
//! Where the leaks are, and why QEMU's commit has them too: in the layer committed into, a
//! new cluster's refcount is stable before the L2 entry that uses it, and a cluster an L2
//! entry lets go (zeros committed over data) is freed only after that entry is stable, the
//! order of QEMU's qcow2 (its cache makes tables depend on refcounts when allocating, and
//! frees after the table write), so a cut between the two leaks in both. In the emptied top,
//! the L2 tables are cleared and flushed before the freed clusters' refcounts drop: leaks
//! until then. QEMU's `bdrv_make_empty` there either discards cluster by cluster in the same
//! order (images with snapshots, bitmaps or compat=0.10: the same leaks) or rebuilds the
//! whole image under the dirty flag (`make_completely_empty`), where a cut needs `check -r
//! all` to be usable at all, worse than leaks.
//!
//! The finished chain is compared with `qemu-img commit` of the same arguments on another copy:
//! every file checks clean, reads the same as its counterpart (`qemu-img compare`) and has the
//! same allocation (`qemu-img map` runs, host offsets aside): the committed layer emptied
//! unless `-d` (or `-b`, which implies it).
//!
//! Prefix cuts are sampled evenly (at most [`PREFIX_CUTS`], the last included), plus at most
//! [`PLANNED_CUTS`] planned ones (`STRATA_CRASH_CUTS` lowers it) with random subsets of the
//! unflushed writes of every file (`STRATA_CRASH_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "crash_steps/mod.rs"]
mod steps;

use std::path::Path;
use std::process::Command;

use steps::chain::{copy_files, record_command, run_chain_cuts};
use steps::*;
use strata_tests::*;

/// Prefix cuts sampled per case (the logs are short: every seq, so far).
const PREFIX_CUTS: usize = 200;
/// Planned cuts per case at most.
const PLANNED_CUTS: usize = 20;

/// One layer of a chain ([`layer`]): file name, format, virtual size, and the qemu-io commands that fill it.
struct Layer {
    name: &'static str,
    format: &'static str,
    size: &'static str,
    io: &'static [&'static str],
}

/// A [`Layer`].
fn layer(
    name: &'static str,
    format: &'static str,
    size: &'static str,
    io: &'static [&'static str],
) -> Layer {
    Layer {
        name,
        format,
        size,
        io,
    }
}

/// `qemu-io -f FMT -c CMD... FILE`, which must succeed.
fn io(format: &str, file: &Path, cmds: &[&str]) {
    if cmds.is_empty() {
        return;
    }
    let mut args = vec!["-f", format];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(p(file));
    let out = Command::new(std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into()))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-io {cmds:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes the chain `layers` (base first) in `dir`, each over the one before by its relative
/// name, qcow2 layers with `opts`.
fn make_chain(dir: &Path, layers: &[Layer], opts: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut below: Option<&Layer> = None;
    for l in layers {
        let f = dir.join(l.name);
        let mut args = vec!["create", "-q", "-f", l.format];
        if l.format == "qcow2" && !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        if let Some(b) = below {
            args.extend(["-b", b.name, "-F", b.format]);
        }
        args.extend([p(&f), l.size]);
        run_qemu_img(&args);
        io(l.format, &f, l.io);
        below = Some(l);
    }
}

/// `qemu-img map --output=json` of `file` as (start, length, depth, present, zero, data) runs,
/// adjacent equal runs merged, host offsets dropped.
fn map_runs(file: &Path) -> Vec<(u64, u64, u64, bool, bool, bool)> {
    let out = Command::new(qemu_img())
        .args(["map", "--output=json", "-U", p(file)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img map {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut runs: Vec<(u64, u64, u64, bool, bool, bool)> = Vec::new();
    for r in v.as_array().unwrap() {
        let run = (
            r["start"].as_u64().unwrap(),
            r["length"].as_u64().unwrap(),
            r["depth"].as_u64().unwrap(),
            r["present"].as_bool().unwrap_or(true),
            r["zero"].as_bool().unwrap(),
            r["data"].as_bool().unwrap(),
        );
        match runs.last_mut() {
            Some(l)
                if (l.2, l.3, l.4, l.5) == (run.2, run.3, run.4, run.5) && l.0 + l.1 == run.0 =>
            {
                l.1 += run.1
            }
            _ => runs.push(run),
        }
    }
    runs
}

/// `qemu-img compare` of two images (through their chains): `Ok` if they read the same.
fn same(a: &Path, b: &Path, fb: &str) -> Result<(), String> {
    let out = Command::new(qemu_img())
        .args(["compare", "-U", "-F", fb, p(a), p(b)])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        code => Err(format!(
            "qemu-img compare {} {} exit {code:?}: {}{}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// What `file` (of format `format`) reads, through its chain.
fn read_all(file: &Path, format: &str) -> Vec<u8> {
    let raw = file.with_extension("read.raw");
    run_qemu_img(&["convert", "-U", "-f", format, "-O", "raw", p(file), p(&raw)]);
    let bytes = std::fs::read(&raw).unwrap();
    let _ = std::fs::remove_file(&raw);
    bytes
}

/// `Ok` if `got` has the old size or the new and every byte of it is the byte `before` or
/// `after` holds there (zeros past the end of either): what a layer being written reads at a
/// cut, its old data or its new (a base that grows does so before anything is copied).
fn old_or_new(got: &[u8], before: &[u8], after: &[u8]) -> Result<(), String> {
    if got.len() != before.len() && got.len() != after.len() {
        return Err(format!(
            "{} bytes, neither the old {} nor the new {}",
            got.len(),
            before.len(),
            after.len()
        ));
    }
    let at = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(0);
    match (0..got.len()).find(|&i| got[i] != at(before, i) && got[i] != at(after, i)) {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte {i:#x} reads {:#04x}, neither the old {:#04x} nor the new {:#04x}",
            got[i],
            at(before, i),
            at(after, i)
        )),
    }
}

/// Commits `top` of the chain `layers` with `args` through Strata, recorded, and through
/// qemu-img on a copy; compares the finished chains and judges every cut. `target` is the
/// layer the commit writes into.
fn crash_commit(name: &str, layers: &[Layer], opts: &str, args: &[&str], target: &str) {
    ensure_qemu();
    let dir = scratch(&format!("crash-commit-{name}"));
    let names: Vec<&str> = layers.iter().map(|l| l.name).collect();
    let qcow2: Vec<&str> = layers
        .iter()
        .filter(|l| l.format == "qcow2")
        .map(|l| l.name)
        .collect();
    let top = names.last().copied().unwrap();
    let start = dir.join("start");
    make_chain(&start, layers, opts);
    // What the top reads before the commit.
    let before = dir.join("before.raw");
    run_qemu_img(&["convert", "-O", "raw", p(&start.join(top)), p(&before)]);
    // Theirs: qemu-img commit on a copy.
    let theirs = dir.join("theirs");
    copy_files(&start, &theirs, &names);
    let mut q: Vec<&str> = vec!["commit", "-q"];
    q.extend_from_slice(args);
    let theirs_top = theirs.join(top);
    q.push(p(&theirs_top));
    run_qemu_img(&q);
    // Ours, recorded.
    let work = dir.join("work");
    copy_files(&start, &work, &names);
    let mut a: Vec<String> = ["commit", "-q"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    a.push(p(&work.join(top)).to_string());
    let logs = record_command(&dir.join("logs"), &a);
    let written: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
    // The finished chain is qemu-img's.
    for l in layers {
        let (o, t) = (work.join(l.name), theirs.join(l.name));
        if l.format == "qcow2" {
            assert!(
                check_cut(&o, false).unwrap(),
                "{name}: {} checks clean",
                l.name
            );
            assert_eq!(
                map_runs(&o),
                map_runs(&t),
                "{name}: allocation of {}",
                l.name
            );
        }
        same(&o, &t, l.format).unwrap_or_else(|e| panic!("{name}: {}: {e}", l.name));
    }
    same(&work.join(top), &before, "raw")
        .unwrap_or_else(|e| panic!("{name}: the top after the commit: {e}"));
    // The layer committed into reads its old data or its new, byte by byte, at every cut.
    let target_format = layers.iter().find(|l| l.name == target).unwrap().format;
    let (target_before, target_after) = (
        read_all(&start.join(target), target_format),
        read_all(&work.join(target), target_format),
    );
    assert_ne!(
        target_before, target_after,
        "{name}: the commit changes {target}"
    );
    let judge = |_at, out: &Path| {
        same(&out.join(top), &before, "raw")?;
        old_or_new(
            &read_all(&out.join(target), target_format),
            &target_before,
            &target_after,
        )
        .map_err(|e| format!("{target}: {e}"))
    };
    let r = run_chain_cuts(
        &dir,
        &start,
        &names,
        &qcow2,
        &logs,
        PREFIX_CUTS,
        cuts_wanted().min(PLANNED_CUTS),
        &judge,
    );
    r.assert_passed(&format!("commit {name} {args:?}, files opened {written:?}"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The layers above a base: data, partial clusters, zero clusters (whole and partial) and a
/// discard.
const TOP_IO: &[&str] = &[
    "write -P 3 128k 4k",
    "write -z 512k 128k",
    "write -P 4 900k 3k",
    "write -P 6 2100k 100k",
    "discard 1M 64k",
    "write -P 7 3M 512k",
    "write -z 3600k 4k",
];

#[test]
fn commit_into_a_qcow2_base() {
    let layers = [
        layer(
            "base.qcow2",
            "qcow2",
            "4M",
            &["write -P 1 0 3M", "write -z 3M 64k"],
        ),
        layer("top.qcow2", "qcow2", "4M", TOP_IO),
    ];
    crash_commit("qcow2", &layers, "", &[], "base.qcow2");
}

#[test]
fn commit_into_a_raw_base() {
    let layers = [
        layer("base.raw", "raw", "4M", &["write -P 1 0 3M"]),
        layer("top.qcow2", "qcow2", "4M", TOP_IO),
    ];
    crash_commit("raw", &layers, "", &[], "base.raw");
}

#[test]
fn commit_to_a_middle_layer_with_b() {
    let layers = [
        layer("base.qcow2", "qcow2", "4M", &["write -P 1 0 4M"]),
        layer(
            "mid.qcow2",
            "qcow2",
            "4M",
            &[
                "write -P 2 64k 64k",
                "write -z 256k 64k",
                "write -P 5 2M 512k",
            ],
        ),
        layer(
            "upper.qcow2",
            "qcow2",
            "4M",
            &["write -P 8 1500k 70k", "write -z 2200k 8k"],
        ),
        layer("top.qcow2", "qcow2", "4M", TOP_IO),
    ];
    crash_commit("b", &layers, "", &["-b", "mid.qcow2"], "mid.qcow2");
}

#[test]
fn commit_keeping_the_top_with_d() {
    let layers = [
        layer("base.qcow2", "qcow2", "4M", &["write -P 1 0 4M"]),
        layer(
            "mid.qcow2",
            "qcow2",
            "4M",
            &["write -P 2 64k 64k", "write -z 256k 64k"],
        ),
        layer("top.qcow2", "qcow2", "4M", TOP_IO),
    ];
    crash_commit("d", &layers, "cluster_size=4096", &["-d"], "mid.qcow2");
}

#[test]
fn commit_grows_a_small_cluster_base() {
    // 4 KiB clusters: the copy allocates L2 tables and a second refcount block in the base,
    // which first grows from 4 MiB to 20 MiB (a longer L1 table).
    let top: &[&str] = &[
        "write -P 3 128k 4k",
        "write -z 512k 128k",
        "write -P 4 900k 3k",
        "write -P 9 5M 1M",
        "write -P 10 8M 3M",
        "write -z 12M 1M",
        "write -P 11 19M 1M",
        "discard 8M 64k",
    ];
    let layers = [
        layer("base.qcow2", "qcow2", "4M", &["write -P 1 0 2M"]),
        layer("top.qcow2", "qcow2", "20M", top),
    ];
    crash_commit("grow", &layers, "cluster_size=4096", &[], "base.qcow2");
}

#[test]
fn commit_with_extended_l2() {
    let layers = [
        layer(
            "base.qcow2",
            "qcow2",
            "4M",
            &["write -P 1 0 1M", "write -P 2 1100k 8k", "write -z 2M 4k"],
        ),
        layer("top.qcow2", "qcow2", "4M", TOP_IO),
    ];
    crash_commit("ext", &layers, "extended_l2=on", &[], "base.qcow2");
}

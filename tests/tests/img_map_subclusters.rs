//! `qemu-runner img map` against the live `qemu-img map` where a layer keeps host clusters for
//! extents it does not read from: the unallocated and zero subclusters of allocated extended-L2
//! clusters (QEMU's `UNALLOCATED_ALLOC` and `ZERO_ALLOC`), preallocated zero clusters of standard
//! images, such clusters in an overlay above a backing file (and past the end of a shorter one),
//! metadata-preallocated images, and compressed clusters beside partly written ones. qemu-img
//! prints a host offset for all of them and merges neighbours only where the host ranges are
//! contiguous; the JSON and the human text (with its file names and its refusal of compressed
//! clusters) are compared byte for byte, and the exit status too.
//!
//! The live tool decides what is expected, so the tests pass with qemu-img 10.x and 7.2 alike
//! (7.2 prints no `compressed` key: ours is dropped where the live tool has none).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use strata_tests::*;

/// One test at a time: the human-output test changes the working directory of the process.
static SERIAL: Mutex<()> = Mutex::new(());

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `qemu-io -f FMT -c CMD... FILE` in `dir`; it must succeed.
fn qemu_io(dir: &Path, file: &str, fmt: &str, cmds: &[&str]) {
    ensure_qemu();
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let mut c = Command::new(qemu_io);
    c.current_dir(dir).args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(file).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmds:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `qemu-img ARGS` in `dir`; it must succeed.
fn qemu_img_in(dir: &Path, args: &[&str]) {
    ensure_qemu();
    let out = Command::new(qemu_img()).current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// What a map command gave: standard output, the error message (without the program's
/// prefix), and whether it succeeded.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    stdout: String,
    error: Option<String>,
}

/// `qemu-img map ARGS` run in `dir`.
fn theirs(dir: &Path, args: &[&str]) -> Outcome {
    ensure_qemu();
    let out = Command::new(qemu_img()).current_dir(dir).arg("map").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let error = (!out.status.success()).then(|| stderr.trim_end().trim_start_matches("qemu-img: ").to_string());
    assert!(out.status.success() || out.status.code() == Some(1), "qemu-img map {args:?}: {stderr}");
    Outcome { stdout: String::from_utf8(out.stdout).unwrap(), error }
}

/// `qemu-runner img map ARGS`, in this process (run in `dir`: the working directory is changed
/// for the call, under [`SERIAL`]).
fn ours(dir: &Path, args: &[&str]) -> Outcome {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir).unwrap();
    let mut out = Vec::new();
    let result = qemu_runner::img::map::run_to(&argv, &mut out);
    std::env::set_current_dir(cwd).unwrap();
    Outcome { stdout: String::from_utf8(out).unwrap(), error: result.err().map(|e| e.to_string()) }
}

/// Asserts that both tools map `file` (a name relative to `dir`) alike, as JSON and as text.
fn same_map(dir: &Path, file: &str) {
    let theirs_json = theirs(dir, &["--output=json", file]);
    let mut ours_json = ours(dir, &["--output=json", file]);
    if !theirs_json.stdout.contains("\"compressed\"") {
        // qemu-img before 8.x: no compressed key.
        ours_json.stdout = ours_json.stdout.replace(", \"compressed\": false", "").replace(", \"compressed\": true", "");
    }
    assert_eq!(ours_json, theirs_json, "map --output=json of {file} in {}", dir.display());
    assert_eq!(ours(dir, &[file]), theirs(dir, &[file]), "map of {file} in {}", dir.display());
}

/// A qcow2 image `name` in `dir` of `size`, made by qemu-img with `-o opts`.
fn qcow2(dir: &Path, name: &str, opts: &str, size: &str) -> PathBuf {
    qemu_img_in(dir, &["create", "-q", "-f", "qcow2", "-o", opts, name, size]);
    dir.join(name)
}

#[test]
fn extended_l2_subclusters_of_allocated_clusters_have_host_offsets() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-map-sub-ext");
    qcow2(&dir, "ext.qcow2", "extended_l2=on,cluster_size=64k", "4M");
    qemu_io(
        &dir,
        "ext.qcow2",
        "qcow2",
        &[
            // 4k writes into clusters 0, 2 and 1 (hosted in that order: not contiguous).
            "write -P 1 4k 4k",
            "write -P 2 132k 4k",
            "write -P 3 68k 4k",
            // Zero subclusters inside allocated clusters, with and without unmapping.
            "write -z 8k 4k",
            "write -z 140k 8k",
            "write -z -u 16k 4k",
            // Zero subclusters of an unallocated cluster: no host offset.
            "write -z 1M 8k",
            // Clusters 32 and 33 hosted one after the other: the unallocated end of one and
            // start of the next are one extent.
            "write -P 4 2M 4k",
            "write -P 5 2160k 4k",
            // A whole allocated cluster zeroed (kept), another unmapped.
            "write -P 6 3M 128k",
            "write -z 3M 64k",
            "write -z -u 3136k 64k",
        ],
    );
    same_map(&dir, "ext.qcow2");
    // 16 KiB clusters (the smallest extended L2 allows: 512-byte subclusters).
    qcow2(&dir, "small.qcow2", "extended_l2=on,cluster_size=16k", "1M");
    qemu_io(&dir, "small.qcow2", "qcow2", &["write -P 1 512 512", "write -z 1536 1k", "write -P 2 16k 4k", "write -P 3 40k 512"]);
    same_map(&dir, "small.qcow2");
    // Metadata preallocation: every cluster allocated, every subcluster unallocated.
    qcow2(&dir, "prealloc.qcow2", "extended_l2=on,preallocation=metadata", "1M");
    qemu_io(&dir, "prealloc.qcow2", "qcow2", &["write -P 1 8k 4k", "write -z 64k 4k"]);
    same_map(&dir, "prealloc.qcow2");
}

#[test]
fn preallocated_zero_clusters_have_host_offsets() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-map-sub-zero");
    qcow2(&dir, "std.qcow2", "cluster_size=64k", "2M");
    qemu_io(
        &dir,
        "std.qcow2",
        "qcow2",
        &[
            "write -P 1 0 256k",
            // Kept (ZERO_ALLOC), then unmapped (ZERO_PLAIN).
            "write -z 64k 64k",
            "write -z -u 128k 64k",
            // Three contiguous kept zero clusters: one extent.
            "write -P 2 1M 192k",
            "write -z 1M 192k",
        ],
    );
    same_map(&dir, "std.qcow2");
    // Metadata preallocation of a standard image: data that reads as zeros (not listed by the
    // human map).
    qcow2(&dir, "meta.qcow2", "preallocation=metadata", "1M");
    qemu_io(&dir, "meta.qcow2", "qcow2", &["write -P 1 64k 4k"]);
    same_map(&dir, "meta.qcow2");
}

#[test]
fn overlay_subclusters_over_a_shorter_backing_file() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-map-sub-chain");
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    qcow2(&sub, "base.qcow2", "cluster_size=64k", "256k");
    qemu_io(&sub, "base.qcow2", "qcow2", &["write -P 9 0 128k"]);
    qemu_img_in(&sub, &["create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "1M"]);
    qemu_io(
        &sub,
        "top.qcow2",
        "qcow2",
        &[
            // Over the base's data, over its unallocated end, past its end.
            "write -P 1 4k 4k",
            "write -P 2 132k 4k",
            "write -P 3 260k 4k",
            "write -z 8k 4k",
            "write -z 136k 4k",
            "write -z 264k 4k",
        ],
    );
    // File names as qemu-img spells them: as given, and the backing file's joined to the
    // directory of the name that names it.
    same_map(&sub, "top.qcow2");
    same_map(&dir, "sub/top.qcow2");
    same_map(&dir, "./sub/../sub/top.qcow2");
    same_map(&dir, s(&sub.join("top.qcow2")));
}

#[test]
fn compressed_clusters_beside_partly_written_ones() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-map-sub-comp");
    raw_disk(&dir.join("src.raw"), 1 << 20);
    qemu_io(&dir, "src.raw", "raw", &["write -P 7 128k 384k"]);
    qemu_img_in(&dir, &["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "extended_l2=on", "src.raw", "comp.qcow2"]);
    // A partly written cluster before the compressed ones (the human map lists it, then
    // refuses), one after them, and one compressed cluster rewritten in part (all of it
    // allocated then).
    qemu_io(&dir, "comp.qcow2", "qcow2", &["write -P 1 4k 4k", "write -P 2 600k 4k", "write -P 3 196k 4k"]);
    same_map(&dir, "comp.qcow2");
    let human = theirs(&dir, &["comp.qcow2"]);
    assert!(human.error.is_some() && human.stdout.lines().count() == 2, "{human:?}");
}

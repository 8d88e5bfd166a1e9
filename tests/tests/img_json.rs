//! `qemu-runner img info`/`map --output=json` against the live `qemu-img` on images it made
//! (raw, qcow2, a backing chain, persistent bitmaps, internal snapshots, zstd, extended L2, an
//! external data file), and `img convert -O raw` driven by block status: zero, unallocated and
//! backing-shadowing zero extents left as holes, output equal to qemu-img's, `-p` drawn as
//! qemu-img draws it.
//!
//! Values are compared parsed. Where the live qemu-img prints fields an older one did not (the
//! `children` of info since 8.0, map's `compressed`), ours are dropped if the live tool has
//! none, so the tests pass with 7.2 and 10.x alike; where it prints the node graph the way
//! Strata does (10.x here), the text is compared byte for byte too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use strata_tests::*;

const MIB: u64 = 1024 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img ARGS`' standard output (which must succeed).
fn qemu_img_out(args: &[&str]) -> Vec<u8> {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn qemu_io(file: &Path, fmt: &str, cmds: &[&str]) {
    ensure_qemu();
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let mut c = Command::new(qemu_io);
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(file).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmds:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `qemu-runner img info ARGS`' output, run in this process.
fn our_info(args: &[&str]) -> Vec<u8> {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut out = Vec::new();
    qemu_runner::img::info::run_to(&argv, &mut out).unwrap_or_else(|e| panic!("img info {args:?}: {e}"));
    out
}

/// Drops from `ours` every `children` key the live tool's `theirs` lacks (qemu-img before 8.0
/// prints no node graph), at every level.
fn align_children(ours: &mut Value, theirs: &Value) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            if !t.contains_key("children") {
                o.remove("children");
            }
            for (k, v) in o.iter_mut() {
                if let Some(tv) = t.get(k) {
                    align_children(v, tv);
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            for (a, b) in o.iter_mut().zip(t) {
                align_children(a, b);
            }
        }
        _ => {}
    }
}

/// Checks `img info --output=json ARGS` against `qemu-img info --output=json ARGS`. No other
/// process writes these images, so even `actual-size` must be equal.
fn check_info(dir: &Path, args: &[&str]) {
    let mut argv = vec!["info", "--output=json"];
    argv.extend_from_slice(args);
    // Relative names, as a user in the images' directory would give them (filenames and
    // full-backing-filename are spelled from them).
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir).unwrap();
    let theirs_text = qemu_img_out(&argv);
    let ours_text = our_info(&argv[1..]);
    std::env::set_current_dir(cwd).unwrap();
    let theirs: Value = serde_json::from_slice(&theirs_text).unwrap();
    let mut ours: Value = serde_json::from_slice(&ours_text).unwrap();
    let has_graph = theirs.to_string().contains("\"children\"");
    align_children(&mut ours, &theirs);
    assert_eq!(ours, theirs, "img info {args:?}");
    if has_graph {
        assert_eq!(String::from_utf8_lossy(&ours_text), String::from_utf8_lossy(&theirs_text), "text of img info {args:?}");
    }
}

/// A qcow2 made by `qemu-img create` with `opts`, run in `dir` (qemu-img creates a relative
/// `data_file=` relative to its working directory, and opens it relative to the image).
fn qcow2(dir: &Path, name: &str, opts: &str) -> std::path::PathBuf {
    ensure_qemu();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([name, "64M"]);
    let out = Command::new(qemu_img()).args(&args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    dir.join(name)
}

// The cwd is changed by check_info: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn info_json_equals_qemu_img_on_every_kind_of_image() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-json-info");
    raw_disk(&dir.join("r.raw"), 64 * MIB);
    qemu_io(&dir.join("r.raw"), "raw", &["write -P 1 1M 1M"]);
    let plain = qcow2(&dir, "plain.qcow2", "");
    qemu_io(&plain, "qcow2", &["write -P 2 0 3M"]);
    qcow2(&dir, "base.qcow2", "");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&dir.join("top.qcow2"))]);
    let bm = qcow2(&dir, "bm.qcow2", "");
    run_qemu_img(&["bitmap", "--add", s(&bm), "b0"]);
    run_qemu_img(&["bitmap", "--add", "-g", "128k", "--disable", s(&bm), "second-bitmap"]);
    let snap = qcow2(&dir, "snap.qcow2", "");
    qemu_io(&snap, "qcow2", &["write -P 3 0 1M"]);
    run_qemu_img(&["snapshot", "-c", "one", s(&snap)]);
    run_qemu_img(&["snapshot", "-c", "two", s(&snap)]);
    qcow2(&dir, "zstd.qcow2", "compression_type=zstd");
    qcow2(&dir, "ext.qcow2", "extended_l2=on,cluster_size=128k");
    qcow2(&dir, "df.qcow2", "data_file=df.raw");
    qcow2(&dir, "dfraw.qcow2", "data_file=dfr.raw,data_file_raw=on");
    qcow2(&dir, "v2.qcow2", "compat=0.10");
    for f in [
        "r.raw", "plain.qcow2", "top.qcow2", "base.qcow2", "bm.qcow2", "snap.qcow2", "zstd.qcow2", "ext.qcow2", "df.qcow2",
        "dfraw.qcow2", "v2.qcow2",
    ] {
        check_info(&dir, &[f]);
    }
    // A sub-directory name: filename and full-backing-filename keep the user's spelling.
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", s(&dir.join("sub/t.qcow2"))]);
    check_info(&dir, &["sub/t.qcow2"]);
    check_info(&dir, &["-f", "qcow2", "bm.qcow2"]);
    check_info(&dir, &["-U", "snap.qcow2"]);
}

#[test]
fn info_backing_chain_lists_every_layer() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-json-chain");
    raw_disk(&dir.join("base.raw"), 64 * MIB);
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", s(&dir.join("mid.qcow2"))]);
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", s(&dir.join("top.qcow2"))]);
    let bm = dir.join("top.qcow2");
    run_qemu_img(&["bitmap", "--add", s(&bm), "b"]);
    check_info(&dir, &["--backing-chain", "top.qcow2"]);
    check_info(&dir, &["--backing-chain", "base.raw"]);
    // The human form: qemu-img prints each layer in turn; compared where qemu-img prints the
    // file child as Strata does (8.0 and later).
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let theirs = String::from_utf8(qemu_img_out(&["info", "--backing-chain", "top.qcow2"])).unwrap();
    let ours = String::from_utf8(our_info(&["--backing-chain", "top.qcow2"])).unwrap();
    std::env::set_current_dir(cwd).unwrap();
    if theirs.contains("Child node") {
        assert_eq!(ours, theirs);
    } else {
        assert_eq!(ours.matches("image: ").count(), 3, "{ours}");
    }
}

#[test]
fn map_json_equals_qemu_img() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-json-map");
    let base = qcow2(&dir, "base.qcow2", "");
    qemu_io(&base, "qcow2", &["write -P 1 0 4M", "write -P 2 10M 1M"]);
    let top = dir.join("top.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&top)]);
    qemu_io(&top, "qcow2", &["write -z 1M 1M", "write -P 3 3M 2M", "write -z -u 10M 64k"]);
    let comp = qcow2(&dir, "comp.qcow2", "");
    let src = dir.join("src.raw");
    raw_disk(&src, 8 * MIB);
    qemu_io(&src, "raw", &["write -P 7 0 2M", "write -P 0 2M 1M", "write -P 9 5M 64k"]);
    run_qemu_img(&["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", s(&src), s(&comp)]);
    // Extended L2: whole clusters and zero subclusters of unallocated clusters (partly
    // allocated clusters, whose other subclusters have host offsets: img_map_subclusters.rs).
    let ext = qcow2(&dir, "ext.qcow2", "extended_l2=on");
    qemu_io(&ext, "qcow2", &["write -P 4 0 128k", "write -z 200k 4k", "write -z 256k 64k"]);
    // Sparse layers of 4 KiB clusters (an L1 entry covers 2 MiB): runs of empty L1 entries
    // answered in one lookup, in both layers of a chain.
    let sbase = dir.join("sbase.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", s(&sbase), "64G"]);
    qemu_io(&sbase, "qcow2", &["write -P 1 1G 8k", "write -P 2 33G 1M", "write -P 3 63G 4k"]);
    let stop = dir.join("stop.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "sbase.qcow2", "-F", "qcow2", s(&stop)]);
    qemu_io(&stop, "qcow2", &["write -P 4 2G 4k", "write -z 33G 512k", "write -P 5 40G 2M"]);
    for f in [&top, &base, &comp, &ext, &src, &sbase, &stop] {
        let theirs: Value = serde_json::from_slice(&qemu_img_out(&["map", "--output=json", s(f)])).unwrap();
        let entries = qemu_runner::img::image::with_image(
            s(f),
            &qemu_runner::img::image::OpenOptions { read_only: true, ..Default::default() },
            qemu_runner::img::map::map,
        )
        .unwrap();
        let mut ours: Value = serde_json::from_str(&qemu_runner::img::map::json(&entries)).unwrap();
        let old = theirs.as_array().unwrap().iter().all(|e| e.get("compressed").is_none());
        if old {
            for e in ours.as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("compressed");
            }
        }
        assert_eq!(ours, theirs, "map of {}", f.display());
    }
    check_convert(&dir, &stop, "sparse-chain");
}

/// `qemu-runner img convert ARGS`, in this process; its progress output.
fn our_convert(args: &[&str]) -> Vec<u8> {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut out = Vec::new();
    qemu_runner::img::convert::run_to(&argv, &mut out).unwrap_or_else(|e| panic!("img convert {args:?}: {e}"));
    out
}

/// Converts `src` to raw with both tools; asserts equal bytes and about equal disk use.
fn check_convert(dir: &Path, src: &Path, name: &str) {
    let (ours, theirs) = (dir.join(format!("{name}.ours.raw")), dir.join(format!("{name}.theirs.raw")));
    our_convert(&["-O", "raw", s(src), s(&ours)]);
    qemu_img_out(&["convert", "-O", "raw", s(src), s(&theirs)]);
    assert_eq!(qemu_img_out(&["compare", "-q", "-f", "raw", "-F", "raw", s(&ours), s(&theirs)]), b"");
    assert!(
        Command::new(qemu_img()).args(["compare", "-q", s(src), s(&ours)]).status().unwrap().success(),
        "{name}: the output differs from the source"
    );
    let (a, b) = (std::fs::metadata(&ours).unwrap().blocks(), std::fs::metadata(&theirs).unwrap().blocks());
    // 512-byte blocks; a little slack for the file system's own allocation choices.
    assert!(a <= b + 64, "{name}: ours uses {a} blocks, qemu-img's {b}");
}

#[test]
fn convert_skips_zero_and_unallocated_extents_and_stays_sparse() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-json-convert");
    // Unallocated, zero clusters (write -z, with and without unmapping) and data.
    let mixed = qcow2(&dir, "mixed.qcow2", "");
    qemu_io(&mixed, "qcow2", &["write -P 0x11 0 1M", "write -z 2M 2M", "write -P 0x22 5M 64k", "write -z -u 6M 1M", "write -P 0 8M 1M", "write -P 0x33 63M 1M"]);
    check_convert(&dir, &mixed, "mixed");
    // A chain whose top has zero clusters over the backing file's data: they read as zeros.
    let base = qcow2(&dir, "base.qcow2", "");
    qemu_io(&base, "qcow2", &["write -P 0x44 0 16M", "write -P 0x55 40M 8M"]);
    let top = dir.join("top.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&top)]);
    qemu_io(&top, "qcow2", &["write -z 1M 4M", "write -z 40M 2M", "write -P 0x66 10M 1M", "discard 44M 1M"]);
    check_convert(&dir, &top, "chain");
    // The zero clusters read as zeros and are holes in the output.
    let out = dir.join("chain.ours.raw");
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes[(MIB as usize)..(5 * MIB as usize)].iter().all(|b| *b == 0));
    assert!(bytes[..(MIB as usize)].iter().all(|b| *b == 0x44));
    // A raw source with holes, and a huge sparse qcow2 (block status per L1 entry).
    let raw = dir.join("sparse.raw");
    raw_disk(&raw, 256 * MIB);
    qemu_io(&raw, "raw", &["write -P 0x77 100M 64k"]);
    check_convert(&dir, &raw, "raw");
    let big = dir.join("big.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", s(&big), "1T"]);
    qemu_io(&big, "qcow2", &["write -P 0x88 0 64k", "write -P 0x99 512G 1M", "write -z 700G 1M", "write -P 0xaa 1048575M 1M"]);
    check_convert(&dir, &big, "big");
}

#[test]
fn convert_progress_is_drawn_as_qemu_img_draws_it() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-json-progress");
    let src = qcow2(&dir, "p.qcow2", "");
    qemu_io(&src, "qcow2", &["write -P 1 0 20M", "write -z 30M 10M", "write -P 2 50M 3M"]);
    let ours = our_convert(&["-p", "-O", "raw", s(&src), s(&dir.join("a.raw"))]);
    let theirs = qemu_img_out(&["convert", "-p", "-O", "raw", s(&src), s(&dir.join("b.raw"))]);
    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    assert!(our_convert(&["-p", "-q", "-O", "raw", s(&src), s(&dir.join("a.raw"))]).is_empty(), "-q draws nothing");
    assert!(our_convert(&["-O", "raw", s(&src), s(&dir.join("a.raw"))]).is_empty(), "no -p, no progress");
}

#[test]
fn convert_progress_is_not_drawn_into_a_pipe() {
    use std::io::Read;
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("img-json-progress-pipe");
    let src = qcow2(&dir, "p.qcow2", "");
    qemu_io(&src, "qcow2", &["write -P 1 0 20M"]);
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut writer = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
    let argv: Vec<String> = ["-p", "-O", "raw", s(&src), s(&dir.join("a.raw"))].iter().map(|a| a.to_string()).collect();
    qemu_runner::img::convert::run_on(&argv, &mut writer).unwrap();
    drop(writer);
    let mut drawn = Vec::new();
    reader.read_to_end(&mut drawn).unwrap();
    assert!(drawn.is_empty(), "a pipe got {:?}", String::from_utf8_lossy(&drawn));
    // The copy was made all the same.
    let same = Command::new(qemu_img()).args(["compare", "-q", "-f", "qcow2", "-F", "raw", s(&src), s(&dir.join("a.raw"))]).status().unwrap();
    assert!(same.success(), "contents");
}

//! `qemu-runner img` on host files, with QEMU's own tools as the oracle: what `img` opens has
//! the size and format `qemu-img info` reports, `convert -O raw` output equals `qemu-img convert`
//! output, `compare` gives qemu-img's statuses, raw windows (`--image-opts`) read what QEMU's
//! raw driver reads, and `bench` runs with qemu-img bench's flags.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::Path;
use std::process::Command;

use qemu_runner::img::image::{self, OpenOptions};
use strata_tests::*;

const MIB: u64 = 1024 * 1024;

/// Runs `qemu-runner img ARGS` (the CLI's entry point, in this process) and returns its status.
fn img(args: &[&str]) -> i32 {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    qemu_runner::img::main(&args)
}

fn qemu_io(file: &Path, cmds: &[&str]) {
    ensure_qemu();
    let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let mut c = Command::new(qemu_io);
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(file).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmds:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn qemu_img_status(args: &[&str]) -> i32 {
    ensure_qemu();
    Command::new(qemu_img()).args(args).status().unwrap().code().unwrap_or(-1)
}

fn qemu_img_json(args: &[&str]) -> serde_json::Value {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A raw image with data in a few places, written by qemu-io.
fn patterned(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let f = dir.join(name);
    raw_disk(&f, size);
    let cmds = [
        "write -P 0x5a 1M 3M".to_string(),
        format!("write -P 0x07 {} 512", size / 8 * 5),
        "write -P 0xff 123457 1000".to_string(),
        format!("write -P 0x33 {} 4096", size - 4096),
    ];
    qemu_io(&f, &cmds.iter().map(String::as_str).collect::<Vec<_>>());
    f
}

#[test]
fn opened_images_match_qemu_img_info() {
    let dir = scratch("img-info");
    for size in [MIB, 64 * MIB + 512, 3 * 4096 + 7] {
        let f = dir.join(format!("{size}.img"));
        raw_disk(&f, size);
        let info = qemu_img_json(&["info", "--output=json", f.to_str().unwrap()]);
        let opts = OpenOptions { read_only: true, ..OpenOptions::default() };
        let (size, format) = image::with_image(f.to_str().unwrap(), &opts, |i| Ok((i.backend.size(), i.format()))).unwrap();
        assert_eq!(size, info["virtual-size"].as_u64().unwrap());
        assert_eq!(format, info["format"].as_str().unwrap());
        assert_eq!(img(&["info", f.to_str().unwrap()]), 0);
        assert_eq!(img(&["info", "--output=json", f.to_str().unwrap()]), 0);
    }
    assert_eq!(img(&["info", dir.join("missing.img").to_str().unwrap()]), 1);
    assert_eq!(img(&["info"]), 2);
    assert_eq!(img(&["frobnicate"]), 2);
}

#[test]
fn convert_equals_qemu_img_convert() {
    let dir = scratch("img-convert");
    let src = patterned(&dir, "src.img", 32 * MIB);
    let (ours, theirs) = (dir.join("ours.raw"), dir.join("theirs.raw"));
    for cache in ["writeback", "none"] {
        assert_eq!(img(&["convert", "-T", cache, "-t", cache, "-O", "raw", src.to_str().unwrap(), ours.to_str().unwrap()]), 0);
        run_qemu_img(&["convert", "-f", "raw", "-O", "raw", src.to_str().unwrap(), theirs.to_str().unwrap()]);
        assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap(), "cache={cache}");
        assert_eq!(qemu_img_status(&["compare", "-q", "-f", "raw", "-F", "raw", src.to_str().unwrap(), ours.to_str().unwrap()]), 0);
    }
    // Sparse output: the zero areas are holes, like qemu-img's.
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(&ours).unwrap().blocks(), std::fs::metadata(&theirs).unwrap().blocks());
    assert!(a <= b + 16, "ours uses {a} blocks, qemu-img's {b}");
}

#[test]
fn raw_windows_read_what_qemu_reads() {
    let dir = scratch("img-window");
    let src = patterned(&dir, "src.img", 16 * MIB);
    let (ours, theirs) = (dir.join("ours.raw"), dir.join("theirs.raw"));
    let s = src.to_str().unwrap();
    for (offset, size) in [(0u64, 16 * MIB), (MIB, 4 * MIB), (123_457, 65_536 + 512), (10 * MIB - 512, 1024)] {
        let ours_opts = format!("driver=raw,offset={offset},size={size},file={s}");
        assert_eq!(img(&["convert", "--image-opts", "-O", "raw", &ours_opts, ours.to_str().unwrap()]), 0);
        let theirs_opts = format!("driver=raw,offset={offset},size={size},file.driver=file,file.filename={s}");
        run_qemu_img(&["convert", "--image-opts", &theirs_opts, "-O", "raw", theirs.to_str().unwrap()]);
        assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap(), "window {offset}+{size}");
    }
    // A window past the end is refused, as by QEMU.
    let bad = format!("driver=raw,offset={},size=1M,file={s}", 16 * MIB);
    assert_eq!(img(&["info", "--image-opts", &bad]), 1);
}

#[test]
fn compare_statuses_match_qemu_img() {
    let dir = scratch("img-compare");
    let a = patterned(&dir, "a.img", 8 * MIB);
    let b = dir.join("b.img");
    std::fs::copy(&a, &b).unwrap();
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let both = |extra: &[&str]| {
        let mut args = vec!["compare", "-q"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[sa, sb]);
        let mut qargs = vec!["compare", "-q", "-f", "raw", "-F", "raw"];
        qargs.extend_from_slice(extra);
        qargs.extend_from_slice(&[sa, sb]);
        (img(&args), qemu_img_status(&qargs))
    };
    assert_eq!(both(&[]), (0, 0));
    qemu_io(&b, &["write -P 0x01 5M 1"]);
    assert_eq!(both(&[]), (1, 1));
    // Different sizes: equal if the extra part is zeros, unless strict.
    std::fs::copy(&a, &b).unwrap();
    std::fs::OpenOptions::new().write(true).open(&b).unwrap().set_len(9 * MIB).unwrap();
    assert_eq!(both(&[]), (0, 0));
    assert_eq!(both(&["-s"]), (1, 1));
    qemu_io(&b, &["write -P 0x01 8704k 1"]);
    assert_eq!(both(&[]), (1, 1));
    assert_eq!(img(&["compare", sa, dir.join("nope.img").to_str().unwrap()]), 2);
}

#[test]
fn bench_runs_with_qemu_img_flags() {
    let dir = scratch("img-bench");
    let f = dir.join("bench.img");
    random_raw_disk(&f, 16 * MIB, 9);
    let before = std::fs::read(&f).unwrap();
    let s = f.to_str().unwrap();
    for flags in [&["-c", "2000", "-d", "1"][..], &["-c", "4000", "-d", "32", "-s", "512", "-S", "8192"], &["-t", "none", "-c", "500", "-d", "8"], &["-c", "100", "-d", "4", "-o", "1M", "-s", "64k"]] {
        let mut args = vec!["bench", "-q", "-f", "raw"];
        args.extend_from_slice(flags);
        args.push(s);
        assert_eq!(img(&args), 0, "{flags:?}");
    }
    assert_eq!(std::fs::read(&f).unwrap(), before, "a read benchmark changed the image");
    assert_eq!(img(&["bench", "-q", "-w", "-c", "1000", "-d", "16", "--pattern", "171", "--flush-interval", "100", "-f", "raw", s]), 0);
    let after = std::fs::read(&f).unwrap();
    assert!(after[..1000 * 4096].iter().all(|&b| b == 171), "writes landed with the pattern");
    assert_eq!(after[1000 * 4096..], before[1000 * 4096..]);
    assert_eq!(img(&["bench", "-s", "1G", s]), 2);
    // qemu-img's default pattern is 0: both tools write the same image.
    assert_eq!(img(&["bench", "-q", "-w", "-c", "8", "-d", "1", "-f", "raw", s]), 0);
    assert!(std::fs::read(&f).unwrap()[..8 * 4096].iter().all(|&b| b == 0), "writes carry pattern 0 by default");
    // Linux AIO is not Strata's: -i native and -n are refused, not run on another engine.
    assert_eq!(img(&["bench", "-q", "-i", "native", "-c", "8", "-f", "raw", s]), 2);
    assert_eq!(img(&["bench", "-q", "-n", "-c", "8", "-f", "raw", s]), 2);
}

/// `--cache-size` and `--allow-backing-anywhere` work with every command that opens an image,
/// before or after the command's name.
#[test]
fn image_wide_options_work_with_every_command_in_either_place() {
    let dir = scratch("img-common-options");
    let template = dir.join("template.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", template.to_str().unwrap(), "1M"]);
    let out = dir.join("out.raw");
    // IMG stands for a fresh copy of the template per run: the same file reopened at once could
    // still carry the lock of its last open while another test's thread spawns a process (a
    // child holds every open file description, close-on-exec ones included, until its exec).
    let commands: Vec<Vec<&str>> = vec![
        vec!["info", "IMG"],
        vec!["map", "IMG"],
        vec!["compare", "IMG", "IMG"],
        vec!["resize", "IMG", "2M"],
        vec!["io", "-c", "flush", "IMG"],
        vec!["bench", "-c", "1", "IMG"],
        vec!["stress", "--seed", "1", "--ops", "4", "--qd", "1", "IMG"],
        vec!["convert", "-O", "raw", "IMG", out.to_str().unwrap()],
    ];
    let mut runs = 0;
    let mut run = |words: Vec<&str>| {
        runs += 1;
        let copy = dir.join(format!("a{runs}.qcow2"));
        std::fs::copy(&template, &copy).unwrap();
        let args: Vec<&str> = words.iter().map(|w| if *w == "IMG" { copy.to_str().unwrap() } else { w }).collect();
        assert_eq!(img(&args), 0, "{args:?}");
    };
    for cmd in &commands {
        let (name, rest) = cmd.split_first().unwrap();
        run([*name, "--cache-size", "1M", "--allow-backing-anywhere"].into_iter().chain(rest.iter().copied()).collect());
        run(["--cache-size=1M", "--allow-backing-anywhere", *name].into_iter().chain(rest.iter().copied()).collect());
    }
    assert_eq!(img(&["--cache-size", "1M"]), 2, "a command is needed");
}

/// `img create -b` refuses a backing file outside the new image's directory tree (every later
/// open would refuse the image) unless `--allow-backing-anywhere`, as opens do.
#[test]
fn create_refuses_a_backing_file_outside_the_tree() {
    let dir = scratch("img-create-tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    run_qemu_img(&["create", "-q", "-f", "qcow2", dir.join("o.qcow2").to_str().unwrap(), "1M"]);
    let t = dir.join("sub/t.qcow2");
    let t = t.to_str().unwrap();
    assert_eq!(img(&["create", "-q", "-f", "qcow2", "-b", "../o.qcow2", "-F", "qcow2", t]), 1);
    assert!(!Path::new(t).exists(), "nothing created");
    assert_eq!(img(&["create", "-q", "-f", "qcow2", "-b", "../o.qcow2", "-F", "qcow2", "--allow-backing-anywhere", t]), 0);
    run_qemu_img(&["check", "-q", t]);
}
